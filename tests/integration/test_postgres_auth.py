"""PostgreSQL asks every TCP client for a password (SCRAM-SHA-256), and each role has its own.

Uses the real server of the local stack and only the default database, so it needs neither
Kafka nor a test namespace. Passwords come from the libpq password file the stack writes
(PGPASSFILE, else the stack's secrets directory), as every client's do.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg2
import pytest

from hubstream.secrets import secrets_dir
from hubstream.settings import Settings

STORE_ROLES = ("hub_store", "health_store")
ROLES = ("hubstream", *STORE_ROLES, "registry")


@pytest.fixture(scope="module")
def settings() -> Settings:
    settings = Settings()
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex(("127.0.0.1", settings.pg_port)) != 0:
            pytest.fail(f"PostgreSQL not answering on 127.0.0.1:{settings.pg_port}: `make up`", pytrace=False)
    return settings


@pytest.fixture(scope="module")
def pgpass(settings: Settings) -> Path:
    path = Path(os.environ.get("PGPASSFILE") or secrets_dir(settings) / "pgpass")
    if not path.is_file():
        pytest.fail(f"no libpq password file at {path}: `stack.py up postgres` writes it", pytrace=False)
    return path


@pytest.fixture(autouse=True)
def no_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test names its password source itself; PGPASSWORD would silently override them.
    monkeypatch.delenv("PGPASSWORD", raising=False)


def password_of(pgpass: Path, port: int, role: str) -> str:
    for line in pgpass.read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 5 and fields[0] == "127.0.0.1" and fields[1] == str(port) and fields[3] == role:
            return fields[4]
    raise AssertionError(f"{pgpass} has no line for 127.0.0.1:{port} role {role}")


def tcp_dsn(settings: Settings, role: str) -> str:
    return f"host=127.0.0.1 port={settings.pg_port} dbname=hubstream user={role} connect_timeout=5"


@pytest.mark.parametrize("role", STORE_ROLES)
def test_a_wrong_password_is_refused(settings: Settings, pgpass: Path, role: str) -> None:
    wrong = password_of(pgpass, settings.pg_port, role) + "x"
    with pytest.raises(psycopg2.OperationalError, match=f'password authentication failed for user "{role}"'):
        psycopg2.connect(tcp_dsn(settings, role), password=wrong, passfile=os.devnull)


@pytest.mark.parametrize("role", ROLES)
def test_no_password_and_no_password_file_is_refused(settings: Settings, role: str) -> None:
    # The owner too: loopback TCP no longer trusts anyone.
    with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
        psycopg2.connect(tcp_dsn(settings, role), passfile=os.devnull)


@pytest.mark.parametrize("role", STORE_ROLES)
def test_the_password_from_the_password_file_logs_in_over_tcp(
    settings: Settings, pgpass: Path, role: str
) -> None:
    conn = psycopg2.connect(tcp_dsn(settings, role), passfile=str(pgpass))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_user, host(inet_server_addr()), current_setting('password_encryption')"
            )
            assert cur.fetchone() == (role, "127.0.0.1", "scram-sha-256")
    finally:
        conn.close()


def test_store_roles_hold_no_role_level_rights(settings: Settings, pgpass: Path) -> None:
    conn = psycopg2.connect(tcp_dsn(settings, "hubstream"), passfile=str(pgpass))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT rolname, rolcanlogin, rolsuper OR rolcreatedb OR rolcreaterole"
                " OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
                (list(STORE_ROLES),),
            )
            assert cur.fetchall() == [("health_store", True, False), ("hub_store", True, False)]
    finally:
        conn.close()


def test_server_stores_scram_verifiers_and_requires_scram_on_tcp(settings: Settings, pgpass: Path) -> None:
    conn = psycopg2.connect(tcp_dsn(settings, "hubstream"), passfile=str(pgpass))
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW password_encryption")
            assert cur.fetchone() == ("scram-sha-256",)
            cur.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", (list(ROLES),))
            stored = dict(cur.fetchall())
            assert sorted(stored) == sorted(ROLES)
            for role, verifier in stored.items():
                assert verifier is not None and verifier.startswith("SCRAM-SHA-256$"), role
            cur.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type LIKE 'host%%'")
            assert cur.fetchall() == [("scram-sha-256",)]
            cur.execute("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()
