"""PostgreSQL: a cluster of the project's own (initdb, pg_ctl), its roles and their passwords."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .runner import (
    LOOPBACK,
    STOP_TIMEOUT_S,
    Config,
    StackError,
    _write_private,
    apt_install,
    ensure_port_free,
    port_open,
    process_alive,
    read_pid,
    remove,
    run,
    say,
    stop_pid,
    wait_until,
)


def pg_version_of(bindir: Path) -> tuple[int, ...]:
    match = re.search(r"/postgresql/(\d+(?:\.\d+)?)/bin", str(bindir))
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


# Every login role of the stack's cluster: the owner (superuser, runs migrations), one role per
# case store (rights granted by consumers/migrations), and the registry's (owns its database).
PG_OWNER = "hubstream"
# hub_web is the hub web application's: NOINHERIT (consumers/migrations/004), so it holds nothing
# until it takes the role of the person signed in.
PG_STORE_ROLES = ("hub_store", "health_store", "hub_web")
PG_REGISTRY_ROLE = "registry"
PG_ROLES = (PG_OWNER, *PG_STORE_ROLES, PG_REGISTRY_ROLE)
PG_SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations, PG 16+; fixed before)


def pg_scram_verifier(password: str, salt: bytes | None = None, iterations: int = PG_SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for password (RFC 5802/7677, as in pg_authid).

    Made here so ALTER ROLE carries the verifier, never the password: nothing the server could
    log, and nothing on the wire. Passwords are ASCII (token_urlsafe), so SASLprep is the identity.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    stored_key = hashlib.sha256(client_key).digest()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def pg_verifier_matches(verifier: str, password: str) -> bool:
    """True if the stored verifier was made from password (whatever its salt and iterations)."""
    b64 = "[A-Za-z0-9+/=]+"
    match = re.fullmatch(rf"SCRAM-SHA-256\$(\d+):({b64})\$({b64}):({b64})", verifier)
    if match is None:
        return False
    expected = pg_scram_verifier(password, base64.b64decode(match.group(2)), int(match.group(1)))
    return hmac.compare_digest(expected, verifier)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PgSecrets:
    """The PostgreSQL roles' passwords, made once, and the libpq password file made from them.

    pg-passwords.json ({"roles": {role: password}}) is the source; pgpass (libpq's format, read
    by clients through PGPASSFILE) is rewritten from it on every `up`. Both 0600 in the secrets
    directory (0700). A role's password is never changed once made.
    """

    part = "postgres"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.passwords_file = directory / "pg-passwords.json"
        self.pgpass = directory / "pgpass"

    def passwords(self) -> dict[str, str]:
        try:
            roles = json.loads(self.passwords_file.read_text())["roles"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StackError(self.part, f"cannot read passwords from {self.passwords_file}: {exc}") from None
        return {str(k): str(v) for k, v in roles.items()}

    def ensure(self, port: int) -> dict[str, str]:
        """Make any missing role password, then (re)write pgpass; return every role's password."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        previous = os.umask(0o077)
        try:
            roles = self.passwords() if self.passwords_file.exists() else {}
            missing = [role for role in PG_ROLES if role not in roles]
            if missing:
                roles.update({role: secrets.token_urlsafe(32) for role in missing})
                doc = {
                    "about": "Passwords of the local PostgreSQL roles (SCRAM-SHA-256 on the server); made "
                    "once by deploy/local/stack.py. OFFICIAL-SENSITIVE: never copy out of this directory.",
                    "roles": roles,
                }
                _write_private(self.passwords_file, json.dumps(doc, indent=2) + "\n")
                say(self.part, f"passwords made for roles {', '.join(missing)} in {self.passwords_file}")
            lines = [
                f"{host}:{port}:*:{_pgpass_escape(role)}:{_pgpass_escape(roles[role])}\n"
                for role in PG_ROLES
                for host in (LOOPBACK, "localhost")
            ]
            text = "# libpq password file (PGPASSFILE), rewritten by deploy/local/stack.py on every up.\n"
            text += "".join(lines)
            if not self.pgpass.exists() or self.pgpass.read_text() != text:
                _write_private(self.pgpass, text)
        finally:
            os.umask(previous)
        for path in (self.passwords_file, self.pgpass):
            path.chmod(0o600)  # libpq ignores a password file that group or others may read
        return roles


class Postgres:
    name = "postgres"
    service_user = "hubstream"
    role = PG_OWNER
    database = "hubstream"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.home / "pg"
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_file = self.root / "postgres.log"
        self.include_file = self.data / "hubstream.conf"
        self.hba_file = self.data / "pg_hba.conf"
        self.ident_file = self.data / "pg_ident.conf"
        self.secrets = PgSecrets(config.secrets_dir)
        self.secured = False  # roles, passwords and pg_hba.conf done in this run

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.config.pg_port}"

    def bindir(self, install: bool = False) -> Path:
        """The PostgreSQL server binaries; the cluster's own major version if it exists."""
        candidates = [Path(p).parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
        pg_config = shutil.which("pg_config")
        if pg_config:
            done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
            if done.returncode == 0 and (Path(done.stdout.strip()) / "initdb").exists():
                candidates.append(Path(done.stdout.strip()))
        initdb = shutil.which("initdb")
        if initdb:
            candidates.append(Path(initdb).resolve().parent)
        version_file = self.data / "PG_VERSION"
        if version_file.exists():
            wanted = version_file.read_text().strip()
            matching = [c for c in candidates if (c / "postgres").exists() and f"/{wanted}/" in f"{c}/"]
            if matching:
                return matching[0]
        usable = sorted({c for c in candidates if (c / "postgres").exists()}, key=pg_version_of)
        if usable:
            return usable[-1]
        if not install:
            raise StackError(
                self.name, "PostgreSQL server binaries (initdb) not found; run `stack.py install`"
            )
        # The Debian package would also create and start a system-wide "main" cluster on 5432
        # that this project never uses; postgresql-common reads this drop-in and skips it.
        drop_in = Path("/etc/postgresql-common/createcluster.d/hubstream.conf")
        if os.geteuid() == 0 and not Path("/etc/postgresql-common/createcluster.conf").exists():
            drop_in.parent.mkdir(parents=True, exist_ok=True)
            drop_in.write_text(
                "# hubstream runs its own cluster (deploy/local/stack.py)\ncreate_main_cluster = false\n"
            )
        apt_install(self.name, ["postgresql"])
        return self.bindir(install=False)

    def install(self) -> None:
        bindir = self.bindir(install=True)
        say(self.name, f"server binaries in {bindir}")

    def run_user(self) -> pwd.struct_passwd:
        """Who runs the server: ourselves, or when we are root an unprivileged system user."""
        if os.geteuid() != 0:
            return pwd.getpwuid(os.geteuid())
        for candidate in ("postgres", self.service_user):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(candidate)
        say(self.name, f"creating system user {self.service_user} to run the server")
        run(
            self.name,
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                self.service_user,
            ],
        )
        return pwd.getpwnam(self.service_user)

    def _prepare_dirs(self, user: pwd.struct_passwd) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            return
        # The server user must be able to walk down to its directory: add only the search bit
        # on directories that lack it (the state dir may sit under root-owned folders).
        for parent in reversed(self.root.parents):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                say(self.name, f"adding o+x to {parent} so {user.pw_name} can reach {self.root}")
                parent.chmod(mode | 0o001)
        for path in [self.root, self.socket_dir, *self.root.rglob("*")]:
            if path.lstat().st_uid != user.pw_uid:
                os.lchown(path, user.pw_uid, user.pw_gid)

    def _psql(
        self, sql: str, database: str = "postgres", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Administer as the owner over the Unix socket, run as the server's OS user.

        pg_hba.conf lets exactly that OS user in by peer authentication (mapped to the owner in
        pg_ident.conf), so the stack needs no password of its own, also before any role has
        one. The SQL goes on stdin: statements may carry password verifiers.
        """
        return run(
            self.name,
            [
                self.bindir() / "psql", "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-tA",
                "-h", self._socket_dir(), "-p", str(self.config.pg_port), "-U", self.role, "-d", database,
            ],
            as_user=self.run_user(),
            cwd=self.root,
            env=self._libpq_env(),
            log_file=self.log_file,
            check=check,
            stdin_text=sql,
        )  # fmt: skip

    def _libpq_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return dict(env, PGCONNECT_TIMEOUT="3", **extra)

    def _tcp_login(self, role: str, passfile: Path) -> subprocess.CompletedProcess[str]:
        """Log in as role over TCP the way clients do (password from passfile); never prompts."""
        return run(
            self.name,
            [
                self.bindir() / "psql", "-X", "-q", "-w", "-tA", "-h", LOOPBACK,
                "-p", str(self.config.pg_port), "-U", role, "-d", self.database, "-c", "select current_user",
            ],
            env=self._libpq_env(PGPASSFILE=str(passfile)),
            check=False,
        )  # fmt: skip

    def answers(self) -> bool:
        if not port_open(self.config.pg_port):
            return False
        return self._psql("select 1", self.database, check=False).stdout.strip() == "1"

    def pid(self) -> int | None:
        pid = read_pid(self.data / "postmaster.pid")
        return pid if pid is not None and process_alive(pid, "postgres") else None

    def _socket_dir(self) -> Path:
        # A Unix socket path is limited to 107 bytes; a deep checkout would overflow it.
        socket_path = self.socket_dir / f".s.PGSQL.{self.config.pg_port}"
        if len(str(socket_path)) < 100:
            return self.socket_dir
        return Path("/tmp")

    def _initdb(self, user: pwd.struct_passwd) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        say(self.name, f"initdb {self.data} (as {user.pw_name})")
        remove(self.data)
        run(
            self.name,
            [
                self.bindir() / "initdb",
                "-D",
                self.data,
                "-U",
                self.role,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            as_user=user,
            cwd=self.root,
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# hubstream: ports and sockets for the local stack, rewritten on every up\n"
                "include_if_exists = 'hubstream.conf'\n"
            )

    def _write_server_file(self, path: Path, text: str, user: pwd.struct_passwd) -> bool:
        """Write a file of the cluster's (owned by the server user, 0600); True if it changed."""
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                return False
        _write_private(path, text)
        if os.geteuid() == 0:
            os.chown(path, user.pw_uid, user.pw_gid)
        return True

    def _write_include(self, user: pwd.struct_passwd) -> bool:
        return self._write_server_file(
            self.include_file,
            "# Written by deploy/local/stack.py on every `up`.\n"
            f"listen_addresses = '{LOOPBACK}'\n"
            f"port = {self.config.pg_port}\n"
            f"unix_socket_directories = '{self._socket_dir()}'\n"
            # Explicit although it is 15's default: an md5 verifier must never be stored again.
            "password_encryption = 'scram-sha-256'\n",
            user,
        )

    def _auth_texts(self, user: pwd.struct_passwd) -> tuple[str, str]:
        """pg_hba.conf and pg_ident.conf: peer for the server's OS user on the socket, else SCRAM."""
        hba = (
            "# Written by deploy/local/stack.py on every `up`; edits here are overwritten.\n"
            "# Only the OS user running the server may log in without a password: on the Unix\n"
            "# socket, by peer, and only as the owner (it can read the data directory anyway).\n"
            "# Everything else, every TCP connection above all, proves a password by SCRAM-SHA-256.\n"
            "# No replication entries: nothing replicates from this cluster.\n"
            "# TYPE  DATABASE  USER       ADDRESS        METHOD\n"
            f"local   all       {self.role:<10} {'':<14} peer map=stack\n"
            f"local   all       all        {'':<14} scram-sha-256\n"
            "host    all       all        127.0.0.1/32   scram-sha-256\n"
            "host    all       all        ::1/128        scram-sha-256\n"
        )
        ident = (
            "# Written by deploy/local/stack.py on every `up`; edits here are overwritten.\n"
            "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n"
            f"stack     {user.pw_name:<16} {self.role}\n"
        )
        return hba, ident

    def _reload(self) -> None:
        self._psql("select pg_reload_conf()")

    def _switch_authentication(self, user: pwd.struct_passwd) -> None:
        """Install pg_hba.conf/pg_ident.conf on the running server, checked before the reload."""
        hba, ident = self._auth_texts(user)
        old = {path: path.read_text() for path in (self.hba_file, self.ident_file) if path.exists()}
        changed = [
            self._write_server_file(self.hba_file, hba, user),
            self._write_server_file(self.ident_file, ident, user),
        ]
        if not any(changed):
            return
        # pg_hba_file_rules parses the file on disk, so a mistake is found before it is loaded.
        errors = self._psql(
            "select line_number || ': ' || error from pg_hba_file_rules where error is not null"
        ).stdout.strip()
        if errors:
            for path, text in old.items():
                self._write_server_file(path, text, user)
            raise StackError(self.name, f"new {self.hba_file} rejected, old one kept: {errors}")
        self._reload()
        say(self.name, "pg_hba.conf installed and reloaded: TCP logins now need a password (scram-sha-256)")

    def _ensure_roles(self, passwords: dict[str, str]) -> None:
        """Create missing login roles with no rights, and give every role its password's verifier."""
        limited = " ".join(
            f"""DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} LOGIN; END IF; END $$;
            ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;"""
            for role in (*PG_STORE_ROLES, PG_REGISTRY_ROLE)
        )  # names are the stack's own constants, never input
        self._psql(limited)
        stored = dict(
            line.split("|", 1)
            for line in self._psql(
                "select rolname, coalesce(rolpassword, '') from pg_authid where rolname in ("
                + ", ".join(f"'{role}'" for role in PG_ROLES)
                + ")"
            ).stdout.splitlines()
            if "|" in line
        )
        stale = [role for role in PG_ROLES if not pg_verifier_matches(stored.get(role, ""), passwords[role])]
        if stale:
            self._psql(
                "".join(f"ALTER ROLE {r} PASSWORD '{pg_scram_verifier(passwords[r])}';\n" for r in stale)
            )
            say(self.name, f"SCRAM-SHA-256 password set for roles {', '.join(stale)}")

    def _secure(self, user: pwd.struct_passwd) -> None:
        """Passwords, roles, pgpass and pg_hba.conf, in the order that keeps the stack in charge.

        Idempotent and run by every `up`, so one `up` also converts a running cluster that
        still trusts loopback: roles get their passwords first, then the TCP rules change.
        """
        if self.secured:
            return
        passwords = self.secrets.ensure(self.config.pg_port)
        if self._write_include(user):
            self._reload()
        self._ensure_roles(passwords)
        self._switch_authentication(user)
        # The reload is asynchronous: wait until a TCP login without a password is refused, then
        # check that every role logs in with the password from pgpass, as clients will.
        deadline = time.monotonic() + 10
        while self._tcp_login(self.role, Path(os.devnull)).returncode == 0:
            if time.monotonic() > deadline:
                raise StackError(
                    self.name, "TCP logins still need no password after the reload", self.log_file
                )
            time.sleep(0.2)
        for role in PG_ROLES:
            done = self._tcp_login(role, self.secrets.pgpass)
            if done.returncode != 0 or done.stdout.strip() != role:
                raise StackError(
                    self.name,
                    f"role {role} cannot log in over TCP with its password from {self.secrets.pgpass}: "
                    f"{(done.stdout + done.stderr).strip()}",
                    self.log_file,
                )
        self.secured = True

    def up(self) -> None:
        bindir = self.bindir(install=True)
        started = time.monotonic()
        pid = self.pid()
        if pid is not None:
            if self.answers():
                say(self.name, f"already running on {self.address} (pid {pid})")
            else:
                say(self.name, f"pid {pid} is running but not answering yet; waiting ...", end=" ")
                wait_until(self.name, self.answers, started, self.config.timeout_s, self.log_file)
            self._secure(self.run_user())
            return
        ensure_port_free(self.name, self.config.pg_port, "PostgreSQL")
        user = self.run_user()
        self._prepare_dirs(user)
        self._initdb(user)
        self._write_include(user)
        # Written before the start, so even a brand-new cluster never trusts TCP: the stack
        # itself gets in by peer on the socket, and sets the passwords through it (_secure).
        hba, ident = self._auth_texts(user)
        self._write_server_file(self.hba_file, hba, user)
        self._write_server_file(self.ident_file, ident, user)
        say(self.name, f"starting on {self.address} (cluster {self.data}) ...", end=" ")
        try:
            self._pg_ctl(
                user, bindir, "start", "-w", "-t", str(int(self.config.timeout_s)), "-l", self.log_file
            )
        except StackError:
            print("failed", flush=True)
            raise
        wait_until(
            self.name, lambda: port_open(self.config.pg_port), started, self.config.timeout_s, self.log_file
        )
        self.ensure_database(self.database, self.role)
        if not self.answers():
            raise StackError(self.name, f"`psql -d {self.database} -c 'select 1'` failed", self.log_file)
        self._secure(user)

    def cluster_exists(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def password(self, role: str) -> str:
        return self.secrets.passwords()[role]

    def ensure_database(self, database: str, owner: str, private: bool = False) -> None:
        """Create the login role and the database it owns, unless they exist (server up).

        The role's password comes from _secure (every `up`). private: only the owner (and
        superusers) may connect, not PUBLIC.
        """
        # Names are the stack's own constants, never user input, so plain interpolation is safe.
        if self._psql(f"select 1 from pg_roles where rolname = '{owner}'").stdout.strip() != "1":
            say(self.name, f"creating role {owner}")
            self._psql(f"create role {owner} login")
        if self._psql(f"select 1 from pg_database where datname = '{database}'").stdout.strip() != "1":
            say(self.name, f"creating database {database} owned by role {owner}")
            self._psql(f"create database {database} owner {owner}")
        if private:
            self._psql(f"revoke connect, temporary on database {database} from public")

    def drop_database(self, database: str) -> None:
        """Drop a database if it exists, closing any session still connected (server up)."""
        if self._psql(f"select 1 from pg_database where datname = '{database}'").stdout.strip() == "1":
            say(self.name, f"dropping database {database}")
            self._psql(f"drop database {database} with (force)")

    def _pg_ctl(self, user: pwd.struct_passwd, bindir: Path, *args: str | Path) -> None:
        # pg_ctl forks the server and returns; a new session keeps it out of our process group.
        run(
            self.name,
            [bindir / "pg_ctl", "-D", self.data, *args],
            as_user=user,
            cwd=self.root,
            log_file=self.log_file,
            new_session=True,
        )

    def down(self) -> None:
        pid = self.pid()
        if pid is None:
            say(self.name, "not running")
            return
        started = time.monotonic()
        say(self.name, f"stopping pid {pid} (pg_ctl stop -m fast) ...", end=" ")
        try:
            self._pg_ctl(
                self.run_user(), self.bindir(), "stop", "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT_S))
            )
            print(f"stopped in {time.monotonic() - started:.1f}s", flush=True)
        except StackError as exc:
            print("pg_ctl failed", flush=True)
            print(exc.render(), file=sys.stderr)
            stop_pid(self.name, pid, "postgres")

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return "down" + (" (port taken by another process)" if port_open(self.config.pg_port) else "")
        return ("up" if self.answers() else "running, NOT answering") + f" (pid {pid})"

    def clean(self, everything: bool) -> None:
        remove(self.root)

    def logs(self) -> list[Path]:
        return [self.log_file]
