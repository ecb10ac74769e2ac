"""The broker's secure listener and its ACLs, on the real local broker.

Every principal in deploy/local/kafka/acls.json can do what its row grants and is denied every
other read and write of a catalogued topic; wrong passwords, plaintext and TLS-without-SCRAM
connections to the secure port get nothing. One random topic prefix per run: its topics are
created as admin, the declared ACLs applied for that prefix, and both removed afterwards.

kafka-python 3.0.12 behaviours these tests rely on (and pin down):
- a denied write raises TopicAuthorizationFailedError from the send future; when the topic's
  metadata was visible (DESCRIBE through a READ grant) the denial comes in the produce response,
  and the sender then treats it as fatal: every later send of that producer fails too;
- a denied read does NOT raise from poll(): poll returns nothing and the client only logs
  "Topic ... is not authorized"; end_offsets()/position() raise TopicAuthorizationFailedError;
- a refused SCRAM login is retried like a network error until bootstrap_timeout_ms, then
  KafkaTimeoutError("Unable to bootstrap"); the SaslAuthenticationFailedError is only logged.
"""

from __future__ import annotations

import importlib.util
import socket
import ssl
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import uuid4

import pytest
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import KafkaException as ConfluentKafkaException
from confluent_kafka import Producer as ConfluentProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaTimeoutError,
    TopicAuthorizationFailedError,
)

from hubstream import kafka_security, topics
from hubstream.kafka import librdkafka_config
from hubstream.settings import Settings

pytestmark = pytest.mark.integration

QUICK = {"bootstrap_timeout_ms": 5000, "request_timeout_ms": 10000}
ACLS = kafka_security.load_acl_file()
PRINCIPALS = [p for role in ACLS.roles for p in role.principals]


def _granted(principal: str, resource: str, name: str, operation: str) -> bool:
    return any(
        g.principal == principal
        and g.resource == resource
        and g.operation == operation
        and (g.name == name if g.pattern == "literal" else name.startswith(g.name))
        for g in ACLS.grants
    )


def _idempotent(principal: str) -> bool:
    """kafka-python's default (idempotent) producer needs IDEMPOTENT_WRITE on the cluster; a
    principal without it (the worker) gets a non-idempotent kafka-python producer here."""
    return _granted(principal, "cluster", "", "IDEMPOTENT_WRITE")


@dataclass(frozen=True)
class SecureNamespace:
    prefix: str
    admin: KafkaAdminClient

    def topic(self, base_name: str) -> str:
        return self.prefix + base_name

    def producer(self, principal: str, **overrides: Any) -> KafkaProducer:
        config: dict[str, Any] = {**kafka_security.client_config(principal), **QUICK, "max_block_ms": 10000}
        if not _idempotent(principal):
            config["enable_idempotence"] = False
        config.update(overrides)
        return KafkaProducer(**config)

    def consumer(self, principal: str, **overrides: Any) -> KafkaConsumer:
        config: dict[str, Any] = {
            **kafka_security.client_config(principal),
            **QUICK,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
        }
        config.update(overrides)
        return KafkaConsumer(**config)


def _secure_port_answers() -> bool:
    host, port = kafka_security.secure_bootstrap_servers().rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) == 0


def _wait_for_acls(admin: KafkaAdminClient, prefix: str) -> None:
    """CreateAcls returns once the controller has the ACLs; wait until the broker enforces them."""
    wanted = len(kafka_security.declared_acls(prefix))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = 0
        for acl in kafka_security.declared_acls(prefix):
            found += len(kafka_security._acls_on(admin, acl.resource_pattern)) > 0
        if found == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"the broker did not show the {wanted} ACLs for prefix {prefix!r} within 15 s")


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureNamespace]:
    if not _secure_port_answers():
        pytest.fail(
            f"the secure listener {kafka_security.secure_bootstrap_servers()} is not answering: "
            "start the local stack with `make up`",
            pytrace=False,
        )
    prefix = f"s{uuid4().hex[:10]}."
    admin = KafkaAdminClient(client_id="hubstream-security-test", **kafka_security.client_config("admin"))
    ns = SecureNamespace(prefix, admin)
    try:
        admin.create_topics([NewTopic(ns.topic(t.base_name), 1, 1) for t in topics.ALL])
        kafka_security.apply_acls(admin, prefix)
        _wait_for_acls(admin, prefix)
        seed = ns.producer("admin")
        for t in topics.ALL:  # one record on every topic, so an allowed read has something to find
            seed.send(ns.topic(t.base_name), key=b"seed", value=b"seed").get(timeout=10)
        seed.close()
        yield ns
    finally:
        mine = [t for t in admin.list_topics() if t.startswith(prefix)]
        if mine:
            admin.delete_topics(mine)
        kafka_security.remove_acls(admin, prefix)
        admin.close()


def _write(ns: SecureNamespace, producer: KafkaProducer, base_name: str) -> None:
    producer.send(ns.topic(base_name), key=b"k", value=b"from the test").get(timeout=15)


def _read(ns: SecureNamespace, principal: str, base_name: str) -> int:
    """Records read from the start of the topic; raises TopicAuthorizationFailedError if denied."""
    consumer = ns.consumer(principal)
    try:
        tp = TopicPartition(ns.topic(base_name), 0)
        end = consumer.end_offsets([tp])[tp]  # raises when the principal may not read the topic
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = 0
        deadline = time.monotonic() + 15
        while consumer.position(tp) < end and time.monotonic() < deadline:
            got += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
        return got
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------
# The whole matrix: every principal, every catalogued topic, write and read


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_principal_can_do_exactly_what_its_row_grants(secure: SecureNamespace, principal: str) -> None:
    wrong: list[str] = []
    for t in topics.ALL:
        may_write = _granted(principal, "topic", t.base_name, "WRITE")
        # A producer per topic: once a produce request is denied, kafka-python's sender treats
        # the error as fatal and aborts every later batch of that producer.
        producer = secure.producer(principal)
        try:
            _write(secure, producer, t.base_name)
            if not may_write:
                wrong.append(f"wrote {t.base_name} but must be denied")
        except TopicAuthorizationFailedError:
            if may_write:
                wrong.append(f"denied writing {t.base_name} which it is granted")
        finally:
            producer.close(timeout=5)
    for t in topics.ALL:
        may_read = _granted(principal, "topic", t.base_name, "READ")
        try:
            got = _read(secure, principal, t.base_name)
            if not may_read:
                wrong.append(f"read {t.base_name} but must be denied")
            elif got < 1:
                wrong.append(f"read nothing from {t.base_name} although it holds records")
        except TopicAuthorizationFailedError:
            if may_read:
                wrong.append(f"denied reading {t.base_name} which it is granted")
    assert not wrong, f"{principal}: " + "; ".join(wrong)


# --------------------------------------------------------------------------------------------
# The cases named in the rules of information handling


def test_police_publishes_police_intelligence(secure: SecureNamespace) -> None:
    producer = secure.producer("police")
    metadata = producer.send(secure.topic(topics.POLICE_INTELLIGENCE.base_name), value=b"report").get(
        timeout=15
    )
    producer.close()
    assert metadata.topic == secure.topic(topics.POLICE_INTELLIGENCE.base_name)
    assert _read(secure, "worker", topics.POLICE_INTELLIGENCE.base_name) >= 2  # the seed and this one


def test_hub_reads_alerts(secure: SecureNamespace) -> None:
    producer = secure.producer("worker")
    _write(secure, producer, topics.ALERTS.base_name)
    producer.close()
    assert _read(secure, "hub", topics.ALERTS.base_name) >= 2


@pytest.mark.parametrize("topic", [topics.POLICE_INTELLIGENCE, topics.PARTNER_INTELLIGENCE])
def test_health_cannot_publish_intelligence(secure: SecureNamespace, topic: topics.Topic) -> None:
    producer = secure.producer("health")
    with pytest.raises(TopicAuthorizationFailedError):
        _write(secure, producer, topic.base_name)
    producer.close()


@pytest.mark.parametrize("topic", [topics.POLICE_INTELLIGENCE, topics.PARTNER_INTELLIGENCE])
def test_health_cannot_read_intelligence(secure: SecureNamespace, topic: topics.Topic) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        _read(secure, "health", topic.base_name)
    # poll() itself does not raise in kafka-python 3.0.12: it must still return nothing.
    consumer = secure.consumer("health")
    tp = TopicPartition(secure.topic(topic.base_name), 0)
    consumer.assign([tp])
    seen = sum(len(b) for _ in range(4) for b in consumer.poll(timeout_ms=500).values())
    consumer.close()
    assert seen == 0


@pytest.mark.parametrize("partner", [p for p in PRINCIPALS if p.startswith("partner-")])
def test_partner_cannot_read_police_alerts(secure: SecureNamespace, partner: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        _read(secure, partner, topics.POLICE_ALERTS.base_name)


def test_partner_cannot_publish_police_intelligence(secure: SecureNamespace) -> None:
    producer = secure.producer("partner-social-care")
    with pytest.raises(TopicAuthorizationFailedError):
        _write(secure, producer, topics.POLICE_INTELLIGENCE.base_name)
    _write(secure, producer, topics.PARTNER_INTELLIGENCE.base_name)  # its own topic still works
    producer.close()


# --------------------------------------------------------------------------------------------
# Consumer groups and topic creation


@pytest.mark.parametrize(
    ("principal", "group", "base_name"),
    [
        ("police", "police-alerts-reader", topics.POLICE_ALERTS.base_name),
        ("health", "health-nhs-spine", topics.HEALTH_FLAGS.base_name),
        ("hub", "hub-triage", topics.ALERTS.base_name),
        ("hub-consumer", "hubstream-hub-store", topics.ALERTS.base_name),
        ("health-consumer", "hubstream-health-store", topics.HEALTH_FLAGS.base_name),
        ("worker", "hubstream-worker", topics.MISSING_EPISODES.base_name),
    ],
)
def test_granted_group_reads_and_commits(
    secure: SecureNamespace, principal: str, group: str, base_name: str
) -> None:
    consumer = secure.consumer(principal, group_id=secure.prefix + group)
    try:
        consumer.subscribe([secure.topic(base_name)])
        got = 0
        deadline = time.monotonic() + 30
        while got == 0 and time.monotonic() < deadline:
            got += sum(len(b) for b in consumer.poll(timeout_ms=500).values())
        assert got >= 1
        consumer.commit()
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("principal", "group", "base_name"),
    [
        ("police", "health-nhs-spine", topics.POLICE_ALERTS.base_name),  # another agency's group
        ("health", "hubstream-health-store", topics.HEALTH_FLAGS.base_name),  # the sink's group
        ("hub-consumer", "hubstream-health-store", topics.ALERTS.base_name),
    ],
)
def test_other_groups_are_denied(secure: SecureNamespace, principal: str, group: str, base_name: str) -> None:
    consumer = secure.consumer(principal, group_id=secure.prefix + group)
    try:
        consumer.subscribe([secure.topic(base_name)])
        with pytest.raises(GroupAuthorizationFailedError):
            for _ in range(20):
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()


def test_only_the_worker_creates_its_own_topics(secure: SecureNamespace) -> None:
    name = secure.topic("hubstream-worker-test-changelog")
    worker = KafkaAdminClient(**kafka_security.client_config("worker"), **QUICK)
    police = KafkaAdminClient(**kafka_security.client_config("police"), **QUICK)
    try:
        worker.create_topics([NewTopic(name, 1, 1)])
        assert name in secure.admin.list_topics()
        with pytest.raises(TopicAuthorizationFailedError):
            police.create_topics([NewTopic(secure.topic("hubstream-police-made"), 1, 1)])
        with pytest.raises(TopicAuthorizationFailedError):
            worker.create_topics([NewTopic(secure.topic("hubstream.not-the-worker"), 1, 1)])
    finally:
        worker.close()
        police.close()


@pytest.mark.parametrize(
    ("principal", "transactional_id", "allowed"),
    [
        ("worker", "hubstream-worker-acl-test", True),
        ("worker", "someone-else", False),
        ("police", "hubstream-worker-acl-test", False),
        ("hub-consumer", "hubstream-worker-acl-test", False),
    ],
)
def test_only_the_worker_holds_its_transactional_ids(
    secure: SecureNamespace, principal: str, transactional_id: str, allowed: bool
) -> None:
    """The worker is exactly once on transactions named after its app id; nobody else can take
    (and so fence) one of its transactional ids."""
    config = librdkafka_config(Settings(), principal)
    producer = ConfluentProducer(
        {**config, "transactional.id": secure.topic(transactional_id), "transaction.timeout.ms": 10_000}
    )
    if allowed:
        producer.init_transactions(30)  # the broker authorises the transactional id here
        producer.begin_transaction()
        producer.commit_transaction(10)
    else:
        with pytest.raises(ConfluentKafkaException) as refused:
            producer.init_transactions(30)
        assert refused.value.args[0].code() == ConfluentKafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


# --------------------------------------------------------------------------------------------
# Authentication and transport


def _stack() -> ModuleType:
    """deploy/local/stack.py, for its standard-library SCRAM client: kafka-python does not
    report why a login failed (see the module docstring), the broker's answer here does."""
    path = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.py"
    spec = importlib.util.spec_from_file_location("_hubstream_stack", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _login(username: str, password: str) -> None:
    stack = _stack()
    _host, port = kafka_security.secure_bootstrap_servers().rsplit(":", 1)
    endpoint = stack.Endpoint(int(port), kafka_security.tls_context(), (username, password))
    with stack.kafka_connection(endpoint, timeout=10.0):
        pass


def test_right_password_logs_in() -> None:
    _login("police", kafka_security.password_for("police"))


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("police", "not-the-password"),
        ("nobody", "not-the-password"),  # no such principal
        ("health", "PASSWORD-OF-POLICE"),  # one principal's password does not open another
    ],
)
def test_wrong_credentials_fail_authentication(username: str, password: str) -> None:
    if password == "PASSWORD-OF-POLICE":
        password = kafka_security.password_for("police")
    # error 58 is SASL_AUTHENTICATION_FAILED
    with pytest.raises(PermissionError, match=r"refused \(error 58"):
        _login(username, password)
    config = {**kafka_security.client_config("police"), "sasl_plain_username": username}
    config["sasl_plain_password"] = password
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        KafkaAdminClient(**config, bootstrap_timeout_ms=3000)


def _api_versions_request() -> bytes:
    client_id = b"plain"
    body = struct.pack(">hhih", 18, 0, 42, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ConnectionResetError, TimeoutError, ssl.SSLError):
        pass
    return data


def test_plaintext_connection_to_the_secure_port_gets_no_kafka_answer() -> None:
    host, port = kafka_security.secure_bootstrap_servers().rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_api_versions_request())
        answer = _read_until_closed(sock)
    # Either nothing, or a TLS alert record (content type 21): never a Kafka response frame.
    assert answer == b"" or answer[:1] == b"\x15", answer[:16]
    with pytest.raises(KafkaTimeoutError):
        KafkaAdminClient(bootstrap_servers=f"{host}:{port}", bootstrap_timeout_ms=4000)


def test_tls_without_scram_login_is_refused() -> None:
    host, port = kafka_security.secure_bootstrap_servers().rsplit(":", 1)
    context = kafka_security.tls_context()
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        # Metadata v4 with no topics, before any SASL handshake: the broker must hang up.
        client_id = b"no-login"
        body = struct.pack(">hhih", 3, 4, 43, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
        sock.sendall(struct.pack(">i", len(body)) + body)
        assert _read_until_closed(sock) == b""


def test_broker_certificate_is_checked_by_clients() -> None:
    host, port = kafka_security.secure_bootstrap_servers().rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname=host)  # system CAs only
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        old = ssl.create_default_context(cafile=str(kafka_security.ca_file()))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname=host)  # the broker offers TLS 1.3 only
