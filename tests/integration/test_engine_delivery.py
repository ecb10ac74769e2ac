"""The engine against the real broker: an output the broker refuses stops it before any commit."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from hubstream.kafka import librdkafka_config
from streams.engine import Batch, DeliveryFailed, Engine, Record
from tests.support.stack import Namespace


def test_an_output_the_broker_refuses_stops_the_engine_with_its_offsets_uncommitted(ns: Namespace) -> None:
    config = librdkafka_config(ns.settings, "admin")
    source, small = f"{ns.prefix}engine-in", f"{ns.prefix}engine-small"
    admin = AdminClient(config)
    created = admin.create_topics(
        [NewTopic(source, 1, 1), NewTopic(small, 1, 1, config={"max.message.bytes": "1000"})]
    )
    for future in created.values():
        future.result(30)
    producer = Producer(config)
    producer.produce(source, b"an event", b"k")
    assert producer.flush(30) == 0

    def handler(record: Record, batch: Batch) -> None:
        batch.send(small, record.key, record.value * 1000)  # 8 kB: above the topic's limit

    group = f"{ns.prefix}engine-test"
    engine = Engine(group, {source: handler}, [], config, config, commit_every_s=0.1)
    stop = threading.Timer(30, engine.stop)  # should the refusal go unnoticed
    stop.start()
    try:
        refused = "commit_transaction failed .*the transaction is aborted"
        with pytest.raises(DeliveryFailed, match=refused):
            engine.run(install_signal_handlers=False)
    finally:
        stop.cancel()

    reader = Consumer({**config, "group.id": group})
    try:
        [committed] = reader.committed([TopicPartition(source, 0)], timeout=10)
    finally:
        reader.close()
    assert committed.offset < 0  # nothing committed: the event is handled again on restart
