"""Deployment secrets: the key for pseudonymised record keys and the key for narratives.

A real deployment supplies each secret through the environment (`HUBSTREAM_PSEUDONYM_KEY`,
`HUBSTREAM_NARRATIVE_KEY`, base64 of 32 random bytes) or as files in `HUBSTREAM_SECRETS_DIR`
(`pseudonym.key`, `narrative.key`), kept outside the repository. The local stack makes its own
once, under `$HUBSTREAM_HOME/secrets`, readable by its owner only.
"""

from __future__ import annotations

import base64
import os
import secrets
from functools import cache
from pathlib import Path

from hubstream.settings import Settings

KEY_BYTES = 32


class SecretError(ValueError):
    """A secret that is missing or malformed; the message names the setting."""


def secrets_dir(settings: Settings) -> Path:
    return Path(os.environ.get("HUBSTREAM_SECRETS_DIR", str(settings.home / "secrets")))


def _decode(name: str, text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise SecretError(f"{name} must be base64, got {len(text)} characters that are not") from None
    if len(key) != KEY_BYTES:
        raise SecretError(f"{name} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


@cache
def key(name: str, home: str) -> bytes:
    """The secret ``name`` (pseudonym or narrative): environment, else file, else made once locally."""
    variable = f"HUBSTREAM_{name.upper()}_KEY"
    if os.environ.get(variable):
        return _decode(variable, os.environ[variable])
    folder = Path(os.environ.get("HUBSTREAM_SECRETS_DIR", str(Path(home) / "secrets")))
    path = folder / f"{name}.key"
    if not path.exists():
        if os.environ.get("HUBSTREAM_SECRETS_DIR"):
            raise SecretError(f"{variable} is not set and {path} does not exist")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode())
    return _decode(str(path), path.read_text())
