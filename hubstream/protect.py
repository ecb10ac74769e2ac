"""Protection of identity on the wire.

* Pseudonymised keys: a record key that identifies a child, an adult, a vehicle or a phone is a
  keyed hash (HMAC-SHA256 with a deployment secret), so partitioning, changelogs and broker logs
  never show an identifier, yet the same subject always lands on the same partition.
* Field-level encryption of free-text narratives: AES-256-GCM with a deployment key, so the text
  is unreadable on broker disks and to any consumer without the key. The ciphertext is text
  (`enc:v1:<base64 nonce+ciphertext>`), so it travels in the schema's string field unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from functools import cache, lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hubstream.secrets import key
from hubstream.settings import PROJECT_ROOT, Settings

ENCRYPTED_PREFIX = "enc:v1:"
NONCE_BYTES = 12


class ProtectionError(ValueError):
    """Ciphertext that is malformed or was not made with this key."""


_DEFAULT_HOME = str(PROJECT_ROOT / ".local")


def _home(settings: Settings | None) -> str:
    return str(settings.home) if settings is not None else _default_home()


# On the per-message path: building Settings reads every variable, and even reading the one
# costs more than the HMAC's cache lookup, so it is read once (a process keeps its home).
@cache
def _default_home() -> str:
    return os.environ.get("HUBSTREAM_HOME") or _DEFAULT_HOME


def pseudonym(value: str, settings: Settings | None = None) -> str:
    """The keyed hash that stands for ``value`` in record keys (32 hex characters)."""
    return _pseudonym(value, key("pseudonym", _home(settings)))


# A child's or a cell's key is asked for on each of its events: recent ones are kept (a few MiB).
@lru_cache(maxsize=32_768)
def _pseudonym(value: str, secret: bytes) -> str:
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]


@cache
def _aead(secret: bytes) -> AESGCM:
    return AESGCM(secret)


class _Nonces:
    """Random 96-bit nonces, drawn from the OS a few thousand at a time: one system call per
    message is a large share of publishing a report. A forked child starts with none, so two
    processes never hand out the same bytes, and a lock keeps two threads from doing so."""

    BATCH = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at, self._lock = b"", 0, threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            at = self._at
            if at >= len(self._pool):
                self._pool, at = os.urandom(NONCE_BYTES * self.BATCH), 0
            self._at = at + NONCE_BYTES
            return self._pool[at : at + NONCE_BYTES]


_nonces = _Nonces()
_AAD = ENCRYPTED_PREFIX.encode()


def encrypt_narrative(plaintext: str, settings: Settings | None = None) -> str:
    if plaintext.startswith(ENCRYPTED_PREFIX):
        return plaintext  # already protected (a re-publish): never encrypt twice
    aead = _aead(key("narrative", _home(settings)))
    nonce = _nonces.take()
    sealed = aead.encrypt(nonce, plaintext.encode(), _AAD)
    return ENCRYPTED_PREFIX + base64.b64encode(nonce + sealed).decode()


def decrypt_narrative(text: str, settings: Settings | None = None) -> str:
    if not text.startswith(ENCRYPTED_PREFIX):
        raise ProtectionError(f"narrative is not encrypted (does not start with {ENCRYPTED_PREFIX!r})")
    try:
        raw = base64.b64decode(text[len(ENCRYPTED_PREFIX):], validate=True)
    except ValueError:
        raise ProtectionError("narrative ciphertext is not base64") from None
    if len(raw) < NONCE_BYTES + 16:  # a nonce and GCM's tag at the least
        raise ProtectionError(f"narrative ciphertext is too short ({len(raw)} bytes)")
    aead = AESGCM(key("narrative", _home(settings)))
    try:
        return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], ENCRYPTED_PREFIX.encode()).decode()
    except InvalidTag:
        raise ProtectionError("narrative ciphertext was altered or made with another key") from None
