"""Pseudonymised keys and narrative encryption, with the deployment keys from the environment."""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hubstream import protect
from hubstream.secrets import SecretError, key

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


@pytest.fixture(autouse=True)
def deployment_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_PSEUDONYM_KEY", KEY_A)
    monkeypatch.setenv("HUBSTREAM_NARRATIVE_KEY", KEY_A)
    key.cache_clear()


def test_pseudonym_is_stable_and_hides_the_value() -> None:
    first = protect.pseudonym("9434765919")
    assert first == protect.pseudonym("9434765919")
    assert "9434765919" not in first and len(first) == 32
    assert protect.pseudonym("9434765920") != first


def test_pseudonym_depends_on_the_deployment_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = protect.pseudonym("pk_123")
    monkeypatch.setenv("HUBSTREAM_PSEUDONYM_KEY", KEY_B)
    key.cache_clear()
    assert protect.pseudonym("pk_123") != before


@given(st.text())
def test_narrative_round_trips_and_never_shows_plaintext(text: str) -> None:
    assume(not text.startswith(protect.ENCRYPTED_PREFIX))  # already protected: left alone (below)
    sealed = protect.encrypt_narrative(text)
    assert sealed.startswith(protect.ENCRYPTED_PREFIX)
    if len(text) >= 4:
        assert text not in sealed.removeprefix(protect.ENCRYPTED_PREFIX)  # "enc:" is in the prefix
    assert protect.decrypt_narrative(sealed) == text


def test_encrypting_an_encrypted_narrative_leaves_it_alone() -> None:
    sealed = protect.encrypt_narrative("seen with an older male at the Station Hotel")
    assert protect.encrypt_narrative(sealed) == sealed


def test_tampered_ciphertext_is_refused() -> None:
    sealed = protect.encrypt_narrative("seen at the bus station")
    raw = bytearray(base64.b64decode(sealed[len(protect.ENCRYPTED_PREFIX):]))
    raw[-1] ^= 1
    with pytest.raises(protect.ProtectionError, match="altered or made with another key"):
        protect.decrypt_narrative(protect.ENCRYPTED_PREFIX + base64.b64encode(bytes(raw)).decode())


def test_another_key_cannot_read_the_narrative(monkeypatch: pytest.MonkeyPatch) -> None:
    sealed = protect.encrypt_narrative("seen at the bus station")
    monkeypatch.setenv("HUBSTREAM_NARRATIVE_KEY", KEY_B)
    key.cache_clear()
    with pytest.raises(protect.ProtectionError):
        protect.decrypt_narrative(sealed)


def test_a_malformed_key_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_PSEUDONYM_KEY", base64.b64encode(b"short").decode())
    key.cache_clear()
    with pytest.raises(SecretError, match="HUBSTREAM_PSEUDONYM_KEY must decode to 32 bytes, got 5"):
        protect.pseudonym("x")


@pytest.mark.parametrize("sealed", ["enc:v1:", "enc:v1:AAAA", "enc:v1:" + "A" * 36])
def test_ciphertext_too_short_to_hold_a_nonce_and_tag_is_refused_as_such(sealed: str) -> None:
    with pytest.raises(protect.ProtectionError, match="too short"):
        protect.decrypt_narrative(sealed)
