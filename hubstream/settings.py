"""Every setting hubstream reads, in one place.

Each setting comes from an environment variable (``HUBSTREAM_*``) with a default that
works for the local stack the project starts itself. Nothing here connects to anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# How the workers of one consumer group share partitions (`hubstream worker --assignor`, librdkafka's
# partition.assignment.strategy); the first is the default.
ASSIGNORS = ("cooperative-sticky", "range")
DEFAULT_ASSIGNOR = ASSIGNORS[0]


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(_env("HUBSTREAM_HOME", str(PROJECT_ROOT / ".local"))))
    kafka_port: int = field(default_factory=lambda: _env_int("HUBSTREAM_KAFKA_PORT", 19092))
    kafka_controller_port: int = field(
        default_factory=lambda: _env_int("HUBSTREAM_KAFKA_CONTROLLER_PORT", 19093)
    )
    pg_port: int = field(default_factory=lambda: _env_int("HUBSTREAM_PG_PORT", 15432))
    registry_port: int = field(default_factory=lambda: _env_int("HUBSTREAM_REGISTRY_PORT", 18081))
    area: str = field(default_factory=lambda: _env("HUBSTREAM_AREA", "E10000018"))
    authority_name: str = field(
        default_factory=lambda: _env("HUBSTREAM_AUTHORITY_NAME", "Leicestershire County Council")
    )
    authority_phone: str = field(default_factory=lambda: _env("HUBSTREAM_AUTHORITY_PHONE", "0116 496 0000"))

    def __post_init__(self) -> None:
        use_local_pgpass(self)

    @property
    def kafka_security(self) -> str:
        """sasl_ssl (default: SCRAM-SHA-512 over TLS, each process as its own principal) or
        plaintext (development only, and only while the stack runs with HUBSTREAM_KAFKA_PLAINTEXT=1)."""
        value = _env("HUBSTREAM_KAFKA_SECURITY", "sasl_ssl")
        if value not in ("sasl_ssl", "plaintext"):
            raise ValueError(f"setting HUBSTREAM_KAFKA_SECURITY must be sasl_ssl or plaintext, got {value!r}")
        return value

    @property
    def bootstrap_servers(self) -> str:
        """The plaintext listener's address (development); secure clients use kafka_security's."""
        return _env("HUBSTREAM_BOOTSTRAP_SERVERS", f"127.0.0.1:{self.kafka_port}")

    @property
    def pg_dsn(self) -> str:
        return _env(
            "HUBSTREAM_PG_DSN",
            f"host=127.0.0.1 port={self.pg_port} dbname=hubstream user=hubstream",
        )

    @property
    def hub_store_dsn(self) -> str:
        """The hub consumer and hub CLI connect as the hub_store role (hub and audit tables only)."""
        return _env(
            "HUBSTREAM_HUB_STORE_DSN", f"host=127.0.0.1 port={self.pg_port} dbname=hubstream user=hub_store"
        )

    @property
    def health_store_dsn(self) -> str:
        """The health consumer and flag readers connect as health_store (health tables only)."""
        return _env(
            "HUBSTREAM_HEALTH_STORE_DSN",
            f"host=127.0.0.1 port={self.pg_port} dbname=hubstream user=health_store",
        )

    @property
    def registry_url(self) -> str:
        return _env("HUBSTREAM_REGISTRY_URL", f"http://127.0.0.1:{self.registry_port}/apis/ccompat/v7")


def use_local_pgpass(settings: Settings) -> None:
    """Point libpq at the local stack's password file, unless PGPASSFILE already names one.

    The DSNs carry no passwords; libpq reads them from PGPASSFILE. The local stack writes
    that file to the secrets directory (HUBSTREAM_SECRETS_DIR, else HUBSTREAM_HOME/secrets).
    A real deployment sets PGPASSFILE itself, or puts the password in the DSN.
    """
    if os.environ.get("PGPASSFILE"):
        return
    folder = Path(os.environ.get("HUBSTREAM_SECRETS_DIR") or settings.home / "secrets")
    pgpass = folder / "pgpass"
    if pgpass.is_file():
        os.environ["PGPASSFILE"] = str(pgpass)


def load() -> Settings:
    settings = Settings()
    use_local_pgpass(settings)
    return settings
