"""Kafka: the broker (KRaft, one JVM as broker and controller), its TLS and SCRAM secrets, and a
standard-library client for the few Kafka wire requests the stack needs (readiness, SCRAM logins
and credentials).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import string
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .runner import (
    DEPLOY_DIR,
    LOOPBACK,
    Config,
    StackError,
    _write_private,
    ensure_port_free,
    file_digest,
    java_bin,
    mvn_bin,
    port_open,
    process_alive,
    read_pid,
    remove,
    rss_mib,
    run,
    say,
    spawn,
    stop_pid,
    tail,
    wait_until,
)


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
