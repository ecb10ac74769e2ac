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

# What a deployment is (HUBSTREAM_DEPLOYMENT), and the replication factor and min.insync.replicas
# of every topic hubstream creates there unless HUBSTREAM_REPLICATION_FACTOR and
# HUBSTREAM_MIN_INSYNC_REPLICAS say otherwise. A cluster (the default) keeps three copies and
# takes a write once two hold it, so one broker can be lost without losing a write or stopping
# them; the local stack (the Makefile and the tests set HUBSTREAM_DEPLOYMENT=local) is one broker.
DEPLOYMENTS = ("cluster", "local")
REPLICATION_DEFAULTS: dict[str, tuple[int, int]] = {"cluster": (3, 2), "local": (1, 1)}


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


def _env_at_least_one(name: str, default: int) -> int:
    value = _env_int(name, default)
    if value < 1:
        raise ValueError(f"setting {name} must be at least 1, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(_env("HUBSTREAM_HOME", str(PROJECT_ROOT / ".local"))))
    kafka_port: int = field(default_factory=lambda: _env_int("HUBSTREAM_KAFKA_PORT", 19092))
    kafka_controller_port: int = field(
        default_factory=lambda: _env_int("HUBSTREAM_KAFKA_CONTROLLER_PORT", 19093)
    )
    pg_port: int = field(default_factory=lambda: _env_int("HUBSTREAM_PG_PORT", 15432))
    registry_port: int = field(default_factory=lambda: _env_int("HUBSTREAM_REGISTRY_PORT", 18081))
    keycloak_port: int = field(default_factory=lambda: _env_int("HUBSTREAM_KEYCLOAK_PORT", 18080))
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
    def deployment(self) -> str:
        """cluster (default) or local: the local stack's single broker, said explicitly
        (HUBSTREAM_DEPLOYMENT=local), never guessed from the bootstrap address."""
        value = _env("HUBSTREAM_DEPLOYMENT", "cluster") or "cluster"
        if value not in DEPLOYMENTS:
            choices = " or ".join(DEPLOYMENTS)
            raise ValueError(f"setting HUBSTREAM_DEPLOYMENT must be {choices}, got {value!r}")
        return value

    @property
    def replication_factor(self) -> int:
        """Replicas of every topic hubstream creates: 3 on a cluster, 1 on the local stack."""
        return _env_at_least_one("HUBSTREAM_REPLICATION_FACTOR", REPLICATION_DEFAULTS[self.deployment][0])

    @property
    def min_insync_replicas(self) -> int:
        """Each topic's min.insync.replicas: how many replicas must hold a write (producers send
        with acks=all) before it is acknowledged. 2 on a cluster, 1 on the local stack; at most
        the replication factor."""
        default = REPLICATION_DEFAULTS[self.deployment][1]
        value = _env_at_least_one("HUBSTREAM_MIN_INSYNC_REPLICAS", default)
        factor = self.replication_factor
        if value > factor:
            where = "on" if self.deployment == "local" else "outside"
            given = (
                f"({value})" if os.environ.get("HUBSTREAM_MIN_INSYNC_REPLICAS")
                else f"({value}, the default {where} the local stack)"
            )
            raise ValueError(
                f"setting HUBSTREAM_MIN_INSYNC_REPLICAS {given} must be at most "
                f"HUBSTREAM_REPLICATION_FACTOR ({factor}): no write could ever be acknowledged"
            )
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

    @property
    def keycloak_url(self) -> str:
        """Keycloak's base URL; the hub's realm (OIDC issuer) is `<keycloak_url>/realms/hubstream`."""
        return _env("HUBSTREAM_KEYCLOAK_URL", f"http://127.0.0.1:{self.keycloak_port}")


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
