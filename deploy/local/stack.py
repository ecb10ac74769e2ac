#!/usr/bin/env python3
"""Install, start, stop and inspect hubstream's local stack.

The parts are the real servers, started from the project's own files:

* kafka     Apache Kafka 4 in KRaft mode (one JVM is broker and controller), jars from Maven
            Central through deploy/local/kafka/pom.xml.
* postgres  a PostgreSQL cluster of the project's own, made with initdb and run with pg_ctl
            (as an unprivileged user when run as root).
* registry  Apicurio Registry (Confluent-compatible API under /apis/ccompat/v7), from Maven
            Central through deploy/local/registry/pom.xml, storing schemas in the `registry`
            database of the PostgreSQL part (so ids survive a restart).

Standard library only: it runs with the system python3 before any virtualenv exists.
Ports and the state directory come from hubstream/settings.py (HUBSTREAM_* variables);
everything this script writes lives under HUBSTREAM_HOME, never in the source tree.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import hmac
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import string
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

DEPLOY_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = DEPLOY_DIR.parent.parent
LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PART_NAMES = ("kafka", "postgres", "registry")


class StackError(Exception):
    """A part failed; the message names the part and, where there is one, the log to read."""

    def __init__(self, part: str, message: str, log_file: Path | None = None) -> None:
        self.part = part
        self.log_file = log_file
        super().__init__(message)

    def render(self) -> str:
        lines = [f"{self.part}: ERROR: {self}"]
        if self.log_file is not None:
            lines.append(f"{self.part}: read {self.log_file}; its last lines:")
            lines.extend(f"    {line}" for line in tail(self.log_file, 25))
        return "\n".join(lines)


def say(part: str, message: str, end: str = "\n") -> None:
    print(f"{part}: {message}", end=end, flush=True)


def tail(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return [f"(cannot read {path}: {exc.strerror})"]
    return text.splitlines()[-count:] or ["(empty)"]


# --------------------------------------------------------------------------------------------
# Settings: read from hubstream/settings.py by file path, so the package's own imports
# (click, kafka-python, ...) are not needed before the virtualenv exists.


def load_settings() -> ModuleType:
    path = PROJECT_ROOT / "hubstream" / "settings.py"
    spec = importlib.util.spec_from_file_location("_hubstream_settings", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"stack: cannot load settings from {path}")
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolves annotations through sys.modules, so register before executing.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"setting {name} must be a whole number, got {raw!r}") from None


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"setting {name} must be 1 or 0, got {raw!r}")


@dataclass(frozen=True)
class Config:
    home: Path
    kafka_port: int
    controller_port: int
    secure_port: int
    plaintext: bool
    secrets_dir: Path
    pg_port: int
    registry_port: int
    timeout_s: float

    @classmethod
    def from_settings(cls, timeout_s: float) -> Config:
        settings = load_settings().load()
        home = Path(settings.home).resolve()
        # Read through settings when it declares them, else straight from the environment, so
        # the stack works whichever of the two is updated first.
        secure_port = getattr(settings, "kafka_secure_port", None) or _env_port(
            "HUBSTREAM_KAFKA_SECURE_PORT", 19094
        )
        secrets_dir = (
            getattr(settings, "secrets_dir", None)
            or os.environ.get("HUBSTREAM_SECRETS_DIR")
            or (home / "secrets")
        )
        return cls(
            home=home,
            kafka_port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            secure_port=int(secure_port),
            # Transition default: the PLAINTEXT listener stays until every client uses the secure one.
            plaintext=_env_flag("HUBSTREAM_KAFKA_PLAINTEXT", False),
            secrets_dir=Path(secrets_dir).resolve(),
            pg_port=settings.pg_port,
            registry_port=settings.registry_port,
            timeout_s=timeout_s,
        )


# --------------------------------------------------------------------------------------------
# Processes


def run(
    part: str,
    cmd: Sequence[str | Path],
    *,
    as_user: pwd.struct_passwd | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log_file: Path | None = None,
    check: bool = True,
    new_session: bool = False,
    stdin_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure raise with its output in the message.

    stdin_text is fed to the command's standard input: the way to pass anything secret, which
    must never appear on a command line that every user can list.
    """
    argv = [str(c) for c in cmd]
    # Root hands commands to the unprivileged user with none of root's supplementary groups.
    drop = as_user is not None and os.geteuid() == 0 and as_user.pw_uid != 0
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            input=stdin_text if stdin_text is not None else "",
            capture_output=True,
            text=True,
            check=False,
            start_new_session=new_session,
            user=as_user.pw_uid if drop and as_user else None,
            group=as_user.pw_gid if drop and as_user else None,
            extra_groups=[] if drop else None,
        )
    except FileNotFoundError:
        raise StackError(part, f"command not found: {argv[0]}") from None
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-30:]
        detail = "\n    ".join(output) if output else "(no output)"
        raise StackError(part, f"`{' '.join(argv)}` exited with {done.returncode}:\n    {detail}", log_file)
    return done


def spawn(
    cmd: Sequence[str | Path], log_file: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server detached from this terminal and process group, output to log_file.

    Secrets go in env: a process's environment is readable only by its own user, its command
    line by everyone.
    """
    if log_file.exists():
        log_file.replace(log_file.with_name(log_file.name + ".1"))
    with log_file.open("wb") as out:
        return subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def process_alive(pid: int, marker: str) -> bool:
    """True if pid runs and its command line contains marker (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def stop_pid(part: str, pid: int, marker: str) -> None:
    """TERM the process (and its session's group), then KILL after STOP_TIMEOUT_S."""
    started = time.monotonic()
    say(part, f"stopping pid {pid} ...", end=" ")
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not process_alive(pid, marker):
                print(f"stopped in {time.monotonic() - started:.1f}s", flush=True)
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            print(f"still running after {wait_s:.0f}s, sending KILL ...", end=" ", flush=True)
    raise StackError(part, f"pid {pid} did not stop even after KILL")


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(part: str, port: int, what: str) -> None:
    if port_open(port):
        raise StackError(
            part,
            f"{what} port {LOOPBACK}:{port} is already taken by a process this stack did not "
            f"start; stop it or choose another port with the HUBSTREAM_* variables",
        )


def apt_install(part: str, packages: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise StackError(
            part, f"{' '.join(packages)} missing; install it: sudo apt-get install -y {' '.join(packages)}"
        )
    say(part, f"installing Debian packages {' '.join(packages)} (apt-get) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(part, ["apt-get", "update", "-q"], env=env)
    run(part, ["apt-get", "install", "-y", "-q", *packages], env=env)


@contextlib.contextmanager
def stack_lock(home: Path) -> Iterator[None]:
    """One stack command at a time per HUBSTREAM_HOME (parallel test jobs may call `up`)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def java_bin(part: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        apt_install(part, ["openjdk-17-jre-headless"])
        found = shutil.which("java")
    if found is None:
        raise StackError(part, "java not found on PATH even after installing openjdk-17-jre-headless")
    return found


def mvn_bin(part: str) -> str:
    found = shutil.which("mvn")
    if found is None:
        apt_install(part, ["maven"])
        found = shutil.which("mvn")
    if found is None:
        raise StackError(part, "mvn not found on PATH even after installing maven")
    return found


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def wait_until(
    part: str,
    ready: Callable[[], bool],
    started: float,
    timeout_s: float,
    log_file: Path,
    proc: subprocess.Popen[bytes] | None = None,
    label: str = "ready",
) -> None:
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            print("failed", flush=True)
            raise StackError(part, f"exited with code {proc.returncode} while starting", log_file)
        if ready():
            print(f"{label} in {time.monotonic() - started:.1f}s", flush=True)
            return
        time.sleep(0.25)
    print("timed out", flush=True)
    raise StackError(part, f"did not answer within {timeout_s:.0f}s (it is left running)", log_file)


# --------------------------------------------------------------------------------------------
# Kafka


def _kafka_request(
    sock: socket.socket, api_key: int, version: int, body: bytes, *, flexible: bool = False
) -> bytes:
    """One request/response on the Kafka wire protocol.

    Header v1 for non-flexible versions; for flexible ones (every version of the SCRAM admin
    APIs) request header v2 and response header v1, which add tagged fields.
    """
    client_id = b"hubstream-stack"
    header = struct.pack(">hhih", api_key, version, 7, len(client_id)) + client_id
    if flexible:
        header += b"\0"  # no tagged fields
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    response = _recv_exact(sock, size)
    if struct.unpack(">i", response[:4])[0] != 7:
        raise ValueError("correlation id mismatch")
    if not flexible:
        return response[4:]
    reader = _Reader(response, 4)
    reader.tagged_fields()
    return response[reader.pos :]


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _compact_bytes(value: bytes) -> bytes:
    return _uvarint(len(value) + 1) + value


class _Reader:
    """Reads the fields of a flexible-version response in order."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def compact_string(self) -> str | None:
        length = self.uvarint() - 1
        if length < 0:
            return None
        text = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return text

    def tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_MECHANISM_ID = 2  # ScramMechanism in the AlterUserScramCredentials protocol
SCRAM_ITERATIONS = 8192  # Kafka accepts 4096..16384


def scram_authenticate(sock: socket.socket, username: str, password: str) -> None:
    """SASL SCRAM-SHA-512 (RFC 5802) on an open connection; raises PermissionError if refused."""
    mechanism = SCRAM_MECHANISM.encode()
    reply = _kafka_request(sock, 17, 1, struct.pack(">h", len(mechanism)) + mechanism)  # SaslHandshake
    if struct.unpack(">h", reply[:2])[0] != 0:
        raise PermissionError(f"broker does not offer {SCRAM_MECHANISM}")

    def exchange(message: bytes) -> bytes:
        answer = _kafka_request(sock, 36, 1, struct.pack(">i", len(message)) + message)  # SaslAuthenticate
        error, text_len = struct.unpack(">hh", answer[:4])
        pos = 4 + max(text_len, 0)
        if error != 0:
            detail = answer[4:pos].decode(errors="replace")
            raise PermissionError(f"authentication as {username!r} refused (error {error}: {detail})")
        (length,) = struct.unpack(">i", answer[pos : pos + 4])
        return answer[pos + 4 : pos + 4 + length]

    name = username.replace("=", "=3D").replace(",", "=2C")
    nonce = secrets.token_urlsafe(24)
    client_first = f"n={name},r={nonce}"
    server_first = exchange(f"n,,{client_first}".encode()).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    if not fields.get("r", "").startswith(nonce):
        raise PermissionError("SCRAM server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha512")
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{client_first},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha512(client_key).digest(), auth_message, "sha512")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    server_final = exchange(f"{without_proof},p={proof}".encode()).decode()
    expected = hmac.digest(hmac.digest(salted, b"Server Key", "sha512"), auth_message, "sha512")
    if server_final != "v=" + base64.b64encode(expected).decode():
        raise PermissionError("SCRAM server signature does not verify: not the broker we know")


@dataclass(frozen=True)
class Endpoint:
    """How to reach one listener: TLS context (None for plaintext) and SCRAM login (None for none)."""

    port: int
    tls: ssl.SSLContext | None = None
    login: tuple[str, str] | None = None


@contextlib.contextmanager
def kafka_connection(endpoint: Endpoint, timeout: float = 2.0) -> Iterator[socket.socket]:
    with socket.create_connection((LOOPBACK, endpoint.port), timeout=timeout) as raw:
        sock = raw if endpoint.tls is None else endpoint.tls.wrap_socket(raw, server_hostname=LOOPBACK)
        with sock:
            sock.settimeout(timeout)
            if endpoint.login is not None:
                scram_authenticate(sock, *endpoint.login)
            yield sock


def kafka_metadata_ok(endpoint: Endpoint, timeout: float = 2.0) -> bool | None:
    """Ask the broker for cluster metadata as a client would (over TLS and SCRAM if given).

    True: it lists at least one live broker. False: it does not (yet). None: the protocol
    versions this probe speaks (ApiVersions v0, Metadata v4..v8) are not offered.
    """
    try:
        with kafka_connection(endpoint, timeout) as sock:
            body = _kafka_request(sock, 18, 0, b"")
            error, count = struct.unpack(">hi", body[:6])
            if error != 0:
                return False
            ranges = {
                key: (low, high) for key, low, high in struct.iter_unpack(">hhh", body[6 : 6 + 6 * count])
            }
            low, high = ranges.get(3, (99, -1))
            version = max(low, 4)
            if version > min(high, 8):
                return None
            # topics: empty array = no topics; allow_auto_topic_creation=false; v8 adds two flags.
            request = struct.pack(">ib", 0, 0) + (b"\0\0" if version >= 8 else b"")
            reply = _kafka_request(sock, 3, version, request)
            brokers = int(struct.unpack(">i", reply[4:8])[0])  # after throttle_time_ms
            return brokers >= 1
    except (OSError, ValueError, struct.error, ConnectionError, PermissionError):
        return False


def scram_users(endpoint: Endpoint) -> set[str]:
    """Users that have a SCRAM-SHA-512 credential (DescribeUserScramCredentials v0)."""
    with kafka_connection(endpoint, timeout=10.0) as sock:
        reply = _Reader(_kafka_request(sock, 50, 0, b"\0\0", flexible=True))  # users=null: all
        reply.take(">i")  # throttle_time_ms
        error = reply.take(">h")
        message = reply.compact_string()
        if error not in (0, 91):  # 91 RESOURCE_NOT_FOUND: no user has a credential yet
            raise ConnectionError(f"DescribeUserScramCredentials failed: error {error} ({message})")
        found: set[str] = set()
        for _ in range(max(reply.uvarint() - 1, 0)):
            user = reply.compact_string() or ""
            user_error = reply.take(">h")
            reply.compact_string()
            for _ in range(max(reply.uvarint() - 1, 0)):
                mechanism = reply.take(">b")
                reply.take(">i")
                reply.tagged_fields()
                if user_error == 0 and mechanism == SCRAM_MECHANISM_ID:
                    found.add(user)
            reply.tagged_fields()
        return found


def add_scram_users(endpoint: Endpoint, passwords: dict[str, str]) -> None:
    """Give each user a SCRAM-SHA-512 credential (AlterUserScramCredentials v0).

    The salted password is computed here, so the password itself never crosses the wire.
    """
    upserts = bytearray(_uvarint(len(passwords) + 1))
    for user, password in sorted(passwords.items()):
        salt = secrets.token_bytes(32)
        salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
        upserts += _compact_bytes(user.encode()) + struct.pack(">bi", SCRAM_MECHANISM_ID, SCRAM_ITERATIONS)
        upserts += _compact_bytes(salt) + _compact_bytes(salted) + b"\0"
    body = _uvarint(1) + bytes(upserts) + b"\0"  # no deletions, the upsertions, no tagged fields
    # A restarted controller answers NOT_CONTROLLER (41) for a moment while it takes office.
    deadline = time.monotonic() + 30
    while True:
        failures = _alter_scram(endpoint, body)
        if not failures or any(e != NOT_CONTROLLER for e, _ in failures) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if failures:
        raise ConnectionError("AlterUserScramCredentials failed for " + "; ".join(m for _, m in failures))


NOT_CONTROLLER = 41


def _alter_scram(endpoint: Endpoint, body: bytes) -> list[tuple[int, str]]:
    """(error code, description) of each user the request failed for."""
    with kafka_connection(endpoint, timeout=10.0) as sock:
        reply = _Reader(_kafka_request(sock, 51, 0, body, flexible=True))
        reply.take(">i")
        failures = []
        for _ in range(max(reply.uvarint() - 1, 0)):
            failed_user = reply.compact_string()
            error = reply.take(">h")
            message = reply.compact_string()
            reply.tagged_fields()
            if error != 0:
                failures.append((error, f"{failed_user}: error {error} ({message})"))
        return failures


# --------------------------------------------------------------------------------------------
# Kafka security material: TLS certificates and SCRAM passwords for the local stack


ACL_FILE = DEPLOY_DIR / "kafka" / "acls.json"
BROKER_CN = "hubstream-broker"  # the broker certificate's subject; mapped to principal User:broker
CERT_DAYS = 825
RENEW_WITHIN_S = 30 * 24 * 3600


def declared_principals() -> tuple[list[str], list[str]]:
    """(super users, every principal) named in deploy/local/kafka/acls.json."""
    try:
        doc = json.loads(ACL_FILE.read_text())
        supers = list(doc["super_users"])
        everyone = supers + [p for role in doc["roles"] for p in role["principals"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError("kafka", f"cannot read principals from {ACL_FILE}: {exc}") from None
    return supers, list(dict.fromkeys(everyone))


def _read_properties(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    return values


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never leaving it readable for a moment."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp creates it 0600
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Secrets:
    """The broker's TLS material and every principal's SCRAM password, made once.

    Files (directory 0700, files 0600) under HUBSTREAM_SECRETS_DIR, default HUBSTREAM_HOME/secrets:
    ca.key/ca.pem (a local CA), broker.key/broker.pem (127.0.0.1 and localhost), broker.p12
    (keystore) and truststore.p12 (the CA) for the broker, broker.properties (the stores'
    passwords and the broker's own SCRAM password, read by the broker through its file config
    provider) and kafka-users.json (every principal's password). Only what is missing is made,
    and a principal's password is never changed. With the CA key present (the local CA), the
    broker certificate is re-issued within 30 days of its expiry, and a store whose password is
    unknown is made again; without it (certificates supplied from elsewhere, see README),
    missing broker material is an error rather than something to invent.
    """

    part = "kafka"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_key = directory / "ca.key"
        self.ca_pem = directory / "ca.pem"
        self.broker_key = directory / "broker.key"
        self.broker_pem = directory / "broker.pem"
        self.keystore = directory / "broker.p12"
        self.truststore = directory / "truststore.p12"
        self.broker_properties = directory / "broker.properties"
        self.users_file = directory / "kafka-users.json"

    def ensure(self, principals: Sequence[str], java: str) -> None:
        """Make whatever is missing; never delete or replace a file someone supplied."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        previous = os.umask(0o077)
        try:
            passwords = self._ensure_users(principals)
            stores = _read_properties(self.broker_properties)
            if not self.ca_pem.exists():
                issued = [p.name for p in (self.broker_pem, self.keystore, self.truststore) if p.exists()]
                if issued:
                    raise StackError(
                        self.part,
                        f"{self.ca_pem} is missing but {', '.join(issued)} exist in {self.dir}: supply "
                        "the CA certificate they belong to, or remove the Kafka files (see README) "
                        "to start afresh",
                    )
                self._make_ca()
            renew = self.broker_pem.exists() and self._expiring(self.broker_pem)
            if renew or not self.keystore.exists() or "keystore.password" not in stores:
                if not self.ca_key.exists():
                    raise StackError(
                        self.part,
                        f"cannot issue a broker certificate: no CA key {self.ca_key}; supply "
                        f"{self.keystore.name} and its password (keystore.password in "
                        f"{self.broker_properties.name})",
                    )
                self._make_broker_certificate()
                stores["keystore.password"] = secrets.token_urlsafe(24)
                self._make_keystore(stores["keystore.password"])
            if not self.truststore.exists() or "truststore.password" not in stores:
                stores["truststore.password"] = secrets.token_urlsafe(24)
                self._make_truststore(java, stores["truststore.password"])
            stores["scram.password"] = passwords["broker"]
            text = "# Read by the broker through its file config provider. OFFICIAL-SENSITIVE.\n" + "".join(
                f"{k}={stores[k]}\n" for k in ("keystore.password", "truststore.password", "scram.password")
            )
            if not self.broker_properties.exists() or self.broker_properties.read_text() != text:
                _write_private(self.broker_properties, text)
        finally:
            os.umask(previous)
        for path in self.files():  # only ours: the directory also holds other parts' secrets
            if path.exists():
                path.chmod(0o600)

    def files(self) -> list[Path]:
        return [
            self.ca_key, self.ca_pem, self.broker_key, self.broker_pem, self.keystore,
            self.truststore, self.broker_properties, self.users_file,
        ]  # fmt: skip

    def passwords(self) -> dict[str, str]:
        try:
            doc = json.loads(self.users_file.read_text())
            users = doc["users"]
        except (OSError, ValueError, KeyError) as exc:
            raise StackError(
                self.part, f"cannot read SCRAM passwords from {self.users_file}: {exc}"
            ) from None
        return {str(k): str(v) for k, v in users.items()}

    def _ensure_users(self, principals: Sequence[str]) -> dict[str, str]:
        users = self.passwords() if self.users_file.exists() else {}
        missing = [p for p in principals if p not in users]
        if missing:
            for principal in missing:
                users[principal] = secrets.token_urlsafe(32)
            doc = {
                "about": "SCRAM-SHA-512 passwords for the Kafka principals in deploy/local/kafka/acls.json; "
                "made once by deploy/local/stack.py. OFFICIAL-SENSITIVE: never copy out of this directory.",
                "mechanism": SCRAM_MECHANISM,
                "users": users,
            }
            _write_private(self.users_file, json.dumps(doc, indent=2) + "\n")
            say(self.part, f"SCRAM passwords made for {', '.join(missing)} in {self.users_file}")
        return users

    def _expiring(self, certificate: Path) -> bool:
        done = run(
            self.part,
            ["openssl", "x509", "-noout", "-checkend", str(RENEW_WITHIN_S), "-in", certificate],
            check=False,
        )
        return done.returncode != 0

    def _make_ca(self) -> None:
        say(self.part, f"making a local certificate authority in {self.dir}")
        self.ca_key.unlink(missing_ok=True)  # a key without its certificate is of no use
        run(
            self.part,
            [
                "openssl", "req", "-x509", "-new", "-newkey", "rsa:3072", "-sha256", "-nodes",
                "-keyout", self.ca_key, "-out", self.ca_pem, "-days", str(CERT_DAYS * 2),
                "-subj", "/O=hubstream local/CN=hubstream local CA",
                "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )  # fmt: skip

    def _make_broker_certificate(self) -> None:
        say(self.part, f"issuing the broker certificate ({BROKER_CN}, 127.0.0.1, localhost)")
        csr = self.dir / "broker.csr"
        extensions = self.dir / "broker.ext"
        extensions.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            # serverAuth on every listener; clientAuth because the broker side of this node
            # presents the same certificate to its controller listener.
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        try:
            run(
                self.part,
                [
                    "openssl", "req", "-new", "-newkey", "rsa:3072", "-sha256", "-nodes",
                    "-keyout", self.broker_key, "-out", csr, "-subj", f"/CN={BROKER_CN}",
                ],
            )  # fmt: skip
            run(
                self.part,
                [
                    "openssl", "x509", "-req", "-in", csr, "-CA", self.ca_pem, "-CAkey", self.ca_key,
                    "-set_serial", str(int.from_bytes(secrets.token_bytes(16), "big")), "-sha256",
                    "-days", str(CERT_DAYS), "-extfile", extensions, "-out", self.broker_pem,
                ],
            )  # fmt: skip
        finally:
            csr.unlink(missing_ok=True)
            extensions.unlink(missing_ok=True)

    def _make_keystore(self, password: str) -> None:
        # Passwords travel in the environment, never on a command line others can list.
        run(
            self.part,
            [
                "openssl", "pkcs12", "-export", "-name", "broker", "-in", self.broker_pem,
                "-inkey", self.broker_key, "-certfile", self.ca_pem, "-out", self.keystore,
                "-passout", "env:HUBSTREAM_STORE_PASSWORD",
            ],
            env=dict(os.environ, HUBSTREAM_STORE_PASSWORD=password),
        )  # fmt: skip

    def _make_truststore(self, java: str, password: str) -> None:
        keytool = Path(java).resolve().parent / "keytool"
        self.truststore.unlink(missing_ok=True)  # made here from ca.pem; its password was lost
        run(
            self.part,
            [
                keytool if keytool.exists() else "keytool", "-importcert", "-noprompt",
                "-alias", "hubstream-local-ca", "-file", self.ca_pem, "-keystore", self.truststore,
                "-storetype", "PKCS12", "-storepass:env", "HUBSTREAM_STORE_PASSWORD",
            ],
            env=dict(os.environ, HUBSTREAM_STORE_PASSWORD=password),
        )  # fmt: skip

    def client_tls(self, client_certificate: bool = False) -> ssl.SSLContext:
        """TLS as a client of the broker: trust only the local CA, check the name (127.0.0.1)."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        if client_certificate:
            context.load_cert_chain(str(self.broker_pem), str(self.broker_key))
        return context


class Kafka:
    name = "kafka"
    marker = "kafka.Kafka"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.home / "kafka"
        self.libs = self.root / "libs"
        self.data = self.root / "data"
        self.properties = self.root / "server.properties"
        self.cluster_id_file = self.root / "cluster.id"
        self.log_file = self.root / "kafka.log"
        self.pid_file = self.root / "kafka.pid"
        self.pom = DEPLOY_DIR / "kafka" / "pom.xml"
        self.template = DEPLOY_DIR / "kafka" / "server.properties.template"
        self.marker_file = self.libs / ".installed"
        self.secrets = Secrets(config.secrets_dir)

    @property
    def address(self) -> str:
        secure = f"SASL_SSL {LOOPBACK}:{self.config.secure_port}"
        return f"{secure}, PLAINTEXT {LOOPBACK}:{self.config.kafka_port}" if self.config.plaintext else secure

    def _secure_endpoint(self) -> Endpoint:
        """The secure listener, logged in as admin: what the readiness check and status use."""
        return Endpoint(
            self.config.secure_port, self.secrets.client_tls(), ("admin", self.secrets.passwords()["admin"])
        )

    def _controller_endpoint(self) -> Endpoint:
        """The controller listener: TLS with the broker's own certificate (principal User:broker)."""
        return Endpoint(self.config.controller_port, self.secrets.client_tls(client_certificate=True))

    def _controller_answers(self) -> bool:
        try:
            with kafka_connection(self._controller_endpoint()) as sock:
                return bool(struct.unpack(">h", _kafka_request(sock, 18, 0, b"")[:2])[0] == 0)
        except (OSError, ValueError, struct.error, ConnectionError):
            return False

    def _ensure_scram(self, *, only_missing: bool) -> None:
        """Give every principal in acls.json its SCRAM credential, through the controller listener.

        There the broker's certificate is the super user `broker`, so a cluster with no
        credentials at all can be given them. On each start every credential is written from
        kafka-users.json (a credential changed by other means is put back); on a running broker
        only those missing are added. The controller answers AlterUserScramCredentials but not
        DescribeUserScramCredentials (Kafka 4.0.2: "Unsupported ApiKey"), so the list of
        existing users is read from the broker, as admin.
        """
        _supers, principals = declared_principals()
        passwords = self.secrets.passwords()
        wanted = {p: passwords[p] for p in principals}
        try:
            if only_missing:
                try:
                    existing = scram_users(self._secure_endpoint())
                except (OSError, ValueError, struct.error, ConnectionError, PermissionError):
                    existing = set()  # admin cannot log in yet: write them all
                wanted = {p: pw for p, pw in wanted.items() if p not in existing}
            if wanted:
                add_scram_users(self._controller_endpoint(), wanted)
                if only_missing:
                    say(self.name, f"SCRAM credentials created for {', '.join(sorted(wanted))}")
        except (OSError, ValueError, struct.error, ConnectionError) as exc:
            raise StackError(self.name, f"could not write SCRAM credentials: {exc}", self.log_file) from None

    def installed(self) -> bool:
        try:
            return self.marker_file.read_text().strip() == file_digest(self.pom)
        except OSError:
            return False

    def install(self) -> None:
        if self.installed():
            jars = len(list(self.libs.glob("*.jar")))
            say(self.name, f"jars present ({jars} in {self.libs})")
            return
        mvn = mvn_bin(self.name)
        java_bin(self.name)
        started = time.monotonic()
        say(self.name, f"fetching jars with Maven into {self.libs} ...", end=" ")
        if self.libs.exists():
            shutil.rmtree(self.libs)  # a changed pom must not leave old versions on the classpath
        self.libs.mkdir(parents=True)
        try:
            run(
                self.name,
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    self.pom,
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={self.libs}",
                ],
            )
        except StackError:
            print("failed", flush=True)
            raise
        self._check_slf4j()
        self.marker_file.write_text(file_digest(self.pom) + "\n")
        jars = len(list(self.libs.glob("*.jar")))
        print(f"{jars} jars in {time.monotonic() - started:.1f}s", flush=True)

    def _check_slf4j(self) -> None:
        """The SLF4J provider must match slf4j-api's major, or the broker logs nothing."""

        def major(prefix: str) -> str | None:
            for jar in self.libs.glob(f"{prefix}-*.jar"):
                match = re.fullmatch(rf"{prefix}-(\d+)\..*\.jar", jar.name)
                if match:
                    return match.group(1)
            return None

        api, provider = major("slf4j-api"), major("slf4j-simple")
        if api is None or provider is None or api != provider:
            raise StackError(
                self.name,
                f"slf4j-api major {api} and slf4j-simple major {provider} differ (or one is "
                f"missing) in {self.libs}; fix the slf4j version in {self.pom}",
            )

    def pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid is not None and process_alive(pid, self.marker) else None

    def answers(self) -> bool:
        """Metadata with a live broker on every client listener: as admin over TLS and SCRAM on
        the secure one, and anonymously on the plaintext one while it is enabled."""
        endpoints = [self._secure_endpoint()]
        if self.config.plaintext:
            endpoints.append(Endpoint(self.config.kafka_port))
        for endpoint in endpoints:
            if not port_open(endpoint.port):
                return False
            probe = kafka_metadata_ok(endpoint)
            if probe is None:  # protocol not spoken by this probe: fall back on the broker's word
                probe = any("Kafka Server started" in line for line in tail(self.log_file, 2000))
            if not probe:
                return False
        return True

    def _classpath(self) -> str:
        return f"{self.libs}/*"

    def _write_properties(self) -> None:
        secure = f"SECURE://{LOOPBACK}:{self.config.secure_port}"
        listeners = [secure, f"CONTROLLER://{LOOPBACK}:{self.config.controller_port}"]
        advertised = [secure]
        protocols = ["CONTROLLER:SSL", "SECURE:SASL_SSL"]
        supers, _principals = declared_principals()
        super_users = [f"User:{name}" for name in supers]
        if self.config.plaintext:
            plain = f"PLAINTEXT://{LOOPBACK}:{self.config.kafka_port}"
            listeners.append(plain)
            advertised.append(plain)
            protocols.append("PLAINTEXT:PLAINTEXT")
            # Transition only: clients on the plaintext listener are User:ANONYMOUS, and they
            # still need to do everything they did before the authorizer was switched on.
            super_users.append("User:ANONYMOUS")
        template = string.Template(self.template.read_text())
        text = template.substitute(
            controller_port=self.config.controller_port,
            listeners=",".join(listeners),
            advertised_listeners=",".join(advertised),
            protocol_map=",".join(protocols),
            super_users=";".join(super_users),
            secrets_dir=self.secrets.dir,
            broker_cn=BROKER_CN,
            data_dir=self.data,
        )
        _write_private(self.properties, text)

    def _format_storage(self, java: str) -> None:
        if (self.data / "meta.properties").exists():
            return
        if self.cluster_id_file.exists():
            cluster_id = self.cluster_id_file.read_text().strip()
        else:
            done = run(self.name, [java, "-cp", self._classpath(), "kafka.tools.StorageTool", "random-uuid"])
            cluster_id = done.stdout.strip().splitlines()[-1]
            self.cluster_id_file.write_text(cluster_id + "\n")
        say(self.name, f"formatting storage in {self.data} (cluster id {cluster_id})")
        self.data.mkdir(parents=True, exist_ok=True)
        run(
            self.name,
            [
                java,
                "-cp",
                self._classpath(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                self.properties,
            ],
        )

    def up(self) -> None:
        self.install()
        started = time.monotonic()
        pid = self.pid()
        if pid is not None:
            # A principal added to acls.json since the start gets its password and credential now.
            self.secrets.ensure(declared_principals()[1], java_bin(self.name))
            if self._controller_answers():
                self._ensure_scram(only_missing=True)
            if self.answers():
                say(self.name, f"already running on {self.address} (pid {pid})")
                return
            say(self.name, f"pid {pid} is running but not answering yet; waiting ...", end=" ")
            wait_until(self.name, self.answers, started, self.config.timeout_s, self.log_file)
            return
        if self.config.plaintext:
            ensure_port_free(self.name, self.config.kafka_port, "broker")
        ensure_port_free(self.name, self.config.secure_port, "secure listener")
        ensure_port_free(self.name, self.config.controller_port, "controller")
        java = java_bin(self.name)
        self.root.mkdir(parents=True, exist_ok=True)
        self.secrets.ensure(declared_principals()[1], java)
        self._write_properties()
        self._format_storage(java)
        say(self.name, f"starting on {self.address} (controller :{self.config.controller_port}) ...", end=" ")
        proc = spawn(
            [
                java,
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
                "-cp",
                self._classpath(),
                self.marker,
                self.properties,
            ],
            self.log_file,
            self.root,
        )
        self.pid_file.write_text(f"{proc.pid}\n")
        wait_until(
            self.name, self._controller_answers, started, self.config.timeout_s, self.log_file, proc,
            label="controller answering",
        )  # fmt: skip
        self._ensure_scram(only_missing=False)
        say(
            self.name,
            f"SCRAM credentials written for {len(declared_principals()[1])} principals; broker ...",
            end=" ",
        )
        wait_until(self.name, self.answers, started, self.config.timeout_s, self.log_file, proc)

    def down(self) -> None:
        pid = self.pid()
        if pid is None:
            say(self.name, "not running")
        else:
            stop_pid(self.name, pid, self.marker)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            taken = any(port_open(p) for p in (self.config.kafka_port, self.config.secure_port))
            return "down" + (" (port taken by another process)" if taken else "")
        try:
            state = "up" if self.answers() else "running, NOT answering"
        except StackError as exc:
            state = f"running, cannot check ({exc})"
        rss = rss_mib(pid)
        return f"{state} (pid {pid}, rss {rss:.0f} MiB)" if rss is not None else f"{state} (pid {pid})"

    def clean(self, everything: bool) -> None:
        for path in (
            self.data,
            self.properties,
            self.cluster_id_file,
            self.pid_file,
            self.log_file,
            self.log_file.with_name(self.log_file.name + ".1"),
        ):
            remove(path)
        if everything:
            remove(self.root)

    def logs(self) -> list[Path]:
        return [self.log_file]


def unpack(part: str, archive_path: Path, target: Path) -> None:
    """Extract a .tar.gz or .zip, refusing members that would land outside target."""
    root = target.resolve()
    if archive_path.name.endswith(".zip"):
        with zipfile.ZipFile(archive_path) as archive:
            names = archive.namelist()
            _check_members(part, archive_path, root, names)
            archive.extractall(target)
        return
    with tarfile.open(archive_path) as archive:
        members = archive.getmembers()
        _check_members(part, archive_path, root, [m.name for m in members])
        for member in members:
            if member.issym() or member.islnk() or member.isdev():
                raise StackError(
                    part, f"{archive_path} holds a link or device ({member.name}); not unpacking it"
                )
        # Python before 3.11.4 (Debian 12's) has no extraction filters; the checks above stand in.
        archive.extractall(target)


def _check_members(part: str, archive_path: Path, root: Path, names: list[str]) -> None:
    for name in names:
        if not (root / name).resolve().is_relative_to(root):
            raise StackError(part, f"{archive_path} member {name!r} points outside {root}; not unpacking it")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# PostgreSQL


def pg_version_of(bindir: Path) -> tuple[int, ...]:
    match = re.search(r"/postgresql/(\d+(?:\.\d+)?)/bin", str(bindir))
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


# Every login role of the stack's cluster: the owner (superuser, runs migrations), one role per
# case store (rights granted by consumers/migrations), and the registry's (owns its database).
PG_OWNER = "hubstream"
PG_STORE_ROLES = ("hub_store", "health_store")
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


# --------------------------------------------------------------------------------------------
# Schema registry


class Registry:
    """Apicurio Registry with its storage in the stack's own PostgreSQL (database `registry`).

    The storage must outlive the process: Kafka keeps messages framed with schema ids, and a
    registry that forgot them would hand the same ids to other schemas after a restart.
    """

    name = "registry"
    database = "registry"
    role = PG_REGISTRY_ROLE

    def __init__(self, config: Config, postgres: Postgres) -> None:
        self.config = config
        self.postgres = postgres
        self.root = config.home / "registry"
        self.dist = self.root / "dist"
        self.log_file = self.root / "registry.log"
        self.pid_file = self.root / "registry.pid"
        # sha256 of the database password the running registry was started with: a registry
        # started before the role's password changed must be restarted to log in again.
        self.credential_file = self.root / "datasource.sha256"
        self.pom = DEPLOY_DIR / "registry" / "pom.xml"
        self.marker_file = self.dist / ".installed"

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.config.registry_port}/apis/ccompat/v7"

    @property
    def available(self) -> bool:
        return self.pom.exists()

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{LOOPBACK}:{self.config.pg_port}/{self.database}"

    def installed(self) -> bool:
        try:
            return self.marker_file.read_text().strip() == file_digest(self.pom)
        except OSError:
            return False

    def runner(self) -> Path:
        # 3.0.x ships a runner jar beside lib/; later releases a quarkus-app/ directory.
        for candidate in (*self.dist.glob("*-runner.jar"), self.dist / "quarkus-app" / "quarkus-run.jar"):
            if candidate.exists():
                return candidate
        raise StackError(self.name, f"no quarkus-run.jar or *-runner.jar in {self.dist}")

    def install(self) -> None:
        if not self.available:
            say(self.name, "skipped (no registry build available; see deploy/local/README.md)")
            return
        if self.installed():
            say(self.name, f"present in {self.dist}")
            return
        mvn = mvn_bin(self.name)
        started = time.monotonic()
        say(self.name, f"fetching Apicurio Registry with Maven into {self.dist} ...", end=" ")
        download = self.root / "download"
        for path in (download, self.dist):
            remove(path)
        download.mkdir(parents=True)
        try:
            run(
                self.name,
                [mvn, "-q", "-B", "-f", self.pom, "dependency:copy", f"-DoutputDirectory={download}"],
            )
        except StackError:
            print("failed", flush=True)
            raise
        archives = sorted(download.glob("*.tar.gz")) + sorted(download.glob("*.zip"))
        if not archives:
            raise StackError(self.name, f"Maven fetched no archive into {download}")
        self.dist.mkdir()
        try:
            unpack(self.name, archives[0], self.dist)
            self.runner()
        except StackError:
            print("failed", flush=True)
            raise
        remove(download)
        self.marker_file.write_text(file_digest(self.pom) + "\n")
        print(f"done in {time.monotonic() - started:.1f}s", flush=True)

    def pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid is not None and process_alive(pid, str(self.dist)) else None

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/subjects", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def up(self) -> None:
        if not self.available:
            say(self.name, "skipped (no registry build available; see deploy/local/README.md)")
            return
        self.install()
        # PostgreSQL's up also (re)applies roles, passwords and pg_hba.conf: always once per run.
        if not self.postgres.secured:
            self.postgres.up()
        credential = hashlib.sha256(self.postgres.password(self.role).encode()).hexdigest()
        started = time.monotonic()
        pid = self.pid()
        if pid is not None:
            current = self.credential_file.read_text().strip() if self.credential_file.exists() else ""
            if not hmac.compare_digest(current, credential):
                say(self.name, "running with another database password; restarting to use the current one")
                self.down()
            elif self.answers():
                say(self.name, f"already running on {self.address} (pid {pid})")
                return
            else:
                say(self.name, f"pid {pid} is running but not answering yet; waiting ...", end=" ")
                wait_until(self.name, self.answers, started, self.config.timeout_s, self.log_file)
                return
        ensure_port_free(self.name, self.config.registry_port, "registry")
        java = java_bin(self.name)
        self.postgres.ensure_database(self.database, self.role, private=True)
        started = time.monotonic()
        say(self.name, f"starting on {self.address} (storage: {self.jdbc_url}) ...", end=" ")
        proc = spawn(
            [
                java,
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dquarkus.http.port={self.config.registry_port}",
                f"-Dquarkus.http.host={LOOPBACK}",
                # Property names from the runner jar's application.properties (3.0.9); the
                # registry creates its tables on first start (apicurio.sql.init=true).
                "-Dapicurio.storage.kind=sql",
                "-Dapicurio.storage.sql.kind=postgresql",
                f"-Dapicurio.datasource.url={self.jdbc_url}",
                f"-Dapicurio.datasource.username={self.role}",
                # apicurio.datasource.password comes from APICURIO_DATASOURCE_PASSWORD (below):
                # Quarkus maps the variable to the property, and the environment, unlike the
                # command line, is not readable by other users.
                # The defaults (20 initial, 100 max) would take every connection of a server
                # whose max_connections is 100 and which the project's own sinks share.
                "-Dapicurio.datasource.jdbc.initial-size=2",
                "-Dapicurio.datasource.jdbc.min-size=2",
                "-Dapicurio.datasource.jdbc.max-size=10",
                "-jar",
                self.runner(),
            ],
            self.log_file,
            self.root,
            env=dict(os.environ, APICURIO_DATASOURCE_PASSWORD=self.postgres.password(self.role)),
        )
        self.pid_file.write_text(f"{proc.pid}\n")
        self.credential_file.write_text(credential + "\n")
        wait_until(self.name, self.answers, started, self.config.timeout_s, self.log_file, proc)

    def down(self) -> None:
        pid = self.pid()
        if pid is None:
            say(self.name, "not running")
        else:
            stop_pid(self.name, pid, str(self.dist))
        self.pid_file.unlink(missing_ok=True)
        self.credential_file.unlink(missing_ok=True)

    def status(self) -> str:
        if not self.available:
            return "not available (see deploy/local/README.md)"
        pid = self.pid()
        if pid is None:
            return "down" + (
                " (port taken by another process)" if port_open(self.config.registry_port) else ""
            )
        state = "up" if self.answers() else "running, NOT answering"
        rss = rss_mib(pid)
        return f"{state} (pid {pid}, rss {rss:.0f} MiB)" if rss is not None else f"{state} (pid {pid})"

    def clean(self, everything: bool) -> None:
        for path in (self.pid_file, self.log_file, self.log_file.with_name(self.log_file.name + ".1")):
            remove(path)
        self._drop_database()
        if everything:
            remove(self.root)

    def _drop_database(self) -> None:
        """Drop the schemas; `clean` removes Kafka's data in the same run (see cmd_clean)."""
        if not self.postgres.cluster_exists():
            return  # cleaned with postgres, or never created: the database went with the cluster
        was_running = self.postgres.pid() is not None
        if not was_running:
            self.postgres.up()
        try:
            self.postgres.drop_database(self.database)
        finally:
            if not was_running:
                self.postgres.down()

    def logs(self) -> list[Path]:
        return [self.log_file]


# --------------------------------------------------------------------------------------------
# Commands

Part = Kafka | Postgres | Registry


def parts_for(config: Config, names: Sequence[str]) -> list[Part]:
    chosen = names or PART_NAMES
    postgres = Postgres(config)
    table: dict[str, Part] = {
        "kafka": Kafka(config),
        "postgres": postgres,
        "registry": Registry(config, postgres),
    }
    return [table[name] for name in PART_NAMES if name in chosen]


def cmd_install(config: Config, parts: list[Part], _args: argparse.Namespace) -> int:
    started = time.monotonic()
    with stack_lock(config.home):
        for part in parts:
            part.install()
    print(f"stack: installed in {time.monotonic() - started:.1f}s", flush=True)
    return 0


def cmd_up(config: Config, parts: list[Part], _args: argparse.Namespace) -> int:
    started = time.monotonic()
    with stack_lock(config.home):
        for part in parts:
            part.up()
    print(f"stack: up in {time.monotonic() - started:.1f}s (state in {config.home})", flush=True)
    return 0


def cmd_down(config: Config, parts: list[Part], _args: argparse.Namespace) -> int:
    with stack_lock(config.home):
        failures = 0
        for part in reversed(parts):  # stop consumers of a part before the part
            try:
                part.down()
            except StackError as exc:
                print(exc.render(), file=sys.stderr)
                failures += 1
    return 1 if failures else 0


def cmd_status(config: Config, parts: list[Part], _args: argparse.Namespace) -> int:
    for part in parts:
        try:
            state = part.status()
        except StackError as exc:
            state = f"unknown ({exc})"
        print(f"{part.name:<9} {part.address:<45} {state}", flush=True)
    return 0


def cmd_clean(config: Config, parts: list[Part], args: argparse.Namespace) -> int:
    # Messages in Kafka carry registry schema ids, and the registry's database lives in the
    # PostgreSQL cluster: removing any one of the three without the others would leave ids
    # that point at nothing, or at a different schema once new ones are registered.
    # So Kafka's data and the registry's database are always removed together.
    names = {part.name for part in parts} | {"kafka", "registry"}
    added = sorted(names - {part.name for part in parts})
    if added:
        print(
            f"stack: also cleaning {' and '.join(added)}: Kafka's data and the registry's "
            "database are always removed together (messages carry schema ids)",
            flush=True,
        )
    parts = parts_for(config, sorted(names))
    if cmd_down(config, parts, args) != 0:
        print("stack: not removing state while something is still running", file=sys.stderr)
        return 1
    with stack_lock(config.home):
        for part in parts:
            part.clean(args.all)
            kept = " (downloads kept)" if not args.all and not isinstance(part, Postgres) else ""
            say(part.name, f"state removed{kept}")
    return 0


def cmd_logs(config: Config, parts: list[Part], args: argparse.Namespace) -> int:
    for part in parts:
        for log_file in part.logs():
            print(f"==> {part.name}: {log_file} <==", flush=True)
            if log_file.exists():
                print("\n".join(tail(log_file, args.lines)), flush=True)
            else:
                print("(no log yet)", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack.py",
        description="hubstream's local stack: Kafka (KRaft), PostgreSQL and the schema registry, "
        "run from the project's own files with state under HUBSTREAM_HOME "
        "(default <project>/.local). Ports come from HUBSTREAM_KAFKA_PORT, "
        "HUBSTREAM_KAFKA_CONTROLLER_PORT, HUBSTREAM_PG_PORT and HUBSTREAM_REGISTRY_PORT.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, handler: object) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "parts", nargs="*", metavar="PART", help=f"which parts ({', '.join(PART_NAMES)}); default all"
        )
        sub.set_defaults(handler=handler)
        return sub

    add(
        "install",
        "Fetch what the stack needs (Kafka jars via Maven, PostgreSQL server via apt if "
        "missing, the registry via Maven). Quick when already done.",
        cmd_install,
    )
    up = add(
        "up",
        "Install if needed, start each part and wait until it answers. "
        "Does nothing for a part that is already up.",
        cmd_up,
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for each part to answer (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    add(
        "down",
        "Stop what this stack started (TERM, then KILL after a timeout; "
        "pg_ctl stop -m fast). Safe to repeat.",
        cmd_down,
    )
    add("status", "Print each part, its address and whether it answers. Always exits 0.", cmd_status)
    clean = add(
        "clean",
        "Stop the stack, then delete its state (broker data, database cluster, logs). "
        "Kafka's data and the registry's database are always deleted together, whichever "
        "parts are named. Downloaded jars are kept unless --all.",
        cmd_clean,
    )
    clean.add_argument("--all", action="store_true", help="also delete downloaded jars and archives")
    logs = add("logs", "Print the last lines of each part's log.", cmd_logs)
    logs.add_argument("-n", "--lines", type=int, default=40, help="lines per log (default 40)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_settings(getattr(args, "timeout", DEFAULT_TIMEOUT_S))
    except ValueError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 0 if args.command == "status" else 2
    unknown = [name for name in args.parts if name not in PART_NAMES]
    if unknown:
        print(f"stack: unknown part {unknown[0]!r}; choose from {', '.join(PART_NAMES)}", file=sys.stderr)
        return 2
    parts = parts_for(config, args.parts)
    try:
        return int(args.handler(config, parts, args))
    except StackError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
