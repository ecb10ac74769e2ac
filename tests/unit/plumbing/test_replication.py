"""Replication settings per deployment, and the check of a cluster's topics against them."""

from __future__ import annotations

import pytest

from hubstream.kafka import replication_problems, topic_config
from hubstream.settings import Settings

VARIABLES = ("HUBSTREAM_DEPLOYMENT", "HUBSTREAM_REPLICATION_FACTOR", "HUBSTREAM_MIN_INSYNC_REPLICAS")


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_outside_the_local_stack_three_replicas_two_in_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.deployment == "cluster"
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    monkeypatch.setenv("HUBSTREAM_DEPLOYMENT", "cluster")
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (3, 2)


def test_the_local_stack_one_replica_one_in_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_DEPLOYMENT", "local")
    settings = Settings()
    assert settings.deployment == "local"
    assert (settings.replication_factor, settings.min_insync_replicas) == (1, 1)


def test_explicit_settings_override_the_deployments_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_DEPLOYMENT", "local")
    monkeypatch.setenv("HUBSTREAM_REPLICATION_FACTOR", "2")
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (2, 1)
    monkeypatch.setenv("HUBSTREAM_MIN_INSYNC_REPLICAS", "2")
    assert Settings().min_insync_replicas == 2
    monkeypatch.setenv("HUBSTREAM_DEPLOYMENT", "cluster")
    monkeypatch.setenv("HUBSTREAM_REPLICATION_FACTOR", "5")
    monkeypatch.setenv("HUBSTREAM_MIN_INSYNC_REPLICAS", "3")
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (5, 3)


def test_an_unknown_deployment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_DEPLOYMENT", "production-ish")
    with pytest.raises(ValueError, match=r"DEPLOYMENT must be cluster or local, got 'production-ish'"):
        _ = Settings().replication_factor


@pytest.mark.parametrize("value", ["0", "-1"])
def test_replication_factor_at_least_one(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HUBSTREAM_REPLICATION_FACTOR", value)
    with pytest.raises(ValueError, match=rf"HUBSTREAM_REPLICATION_FACTOR must be at least 1, got {value}"):
        _ = Settings().replication_factor


@pytest.mark.parametrize("value", ["0", "-2"])
def test_min_insync_at_least_one(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HUBSTREAM_MIN_INSYNC_REPLICAS", value)
    with pytest.raises(ValueError, match=rf"HUBSTREAM_MIN_INSYNC_REPLICAS must be at least 1, got {value}"):
        _ = Settings().min_insync_replicas


def test_not_whole_numbers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_REPLICATION_FACTOR", "three")
    with pytest.raises(ValueError, match=r"HUBSTREAM_REPLICATION_FACTOR must be a whole number, got 'three'"):
        _ = Settings().replication_factor


def test_min_insync_at_most_the_replication_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("HUBSTREAM_MIN_INSYNC_REPLICAS", "4")
    with pytest.raises(
        ValueError,
        match=r"HUBSTREAM_MIN_INSYNC_REPLICAS \(4\) must be at most HUBSTREAM_REPLICATION_FACTOR \(3\)",
    ):
        _ = Settings().min_insync_replicas
    # a replication factor of 1 outside the local stack leaves the default of 2 in sync impossible
    monkeypatch.setenv("HUBSTREAM_REPLICATION_FACTOR", "1")
    monkeypatch.delenv("HUBSTREAM_MIN_INSYNC_REPLICAS")
    with pytest.raises(ValueError, match=r"\(2, the default outside the local stack\) must be at most"):
        _ = Settings().min_insync_replicas


def test_every_created_topic_carries_min_insync(monkeypatch: pytest.MonkeyPatch) -> None:
    assert topic_config(Settings(), {"cleanup.policy": "compact"}) == {
        "cleanup.policy": "compact", "min.insync.replicas": "2",
    }
    monkeypatch.setenv("HUBSTREAM_DEPLOYMENT", "local")
    assert topic_config(Settings(), {}) == {"min.insync.replicas": "1"}


def test_a_cluster_that_holds_the_replicas_has_no_problem() -> None:
    assert replication_problems(3, brokers=3, existing={"a": 3, "b": 4}, to_create=["c"]) == []
    assert replication_problems(1, brokers=1, existing={"a": 1}, to_create=["c"]) == []
    # too few live brokers, but nothing to create and every topic assigned its replicas: a broker
    # down for a while must not stop a restarted worker
    assert replication_problems(3, brokers=2, existing={"a": 3}, to_create=[]) == []


def test_too_few_brokers_to_create_a_topic_names_it_and_the_setting() -> None:
    problems = replication_problems(2, brokers=1, existing={}, to_create=["x-changelog"])
    assert problems == [
        "topic x-changelog cannot be created with 2 replicas (HUBSTREAM_REPLICATION_FACTOR=2): "
        "the cluster has 1 broker"
    ]


def test_an_existing_topic_with_fewer_replicas_names_it_its_replication_and_the_setting() -> None:
    problems = replication_problems(3, brokers=3, existing={"a": 3, "x-changelog": 1}, to_create=[])
    assert problems == [
        "topic x-changelog has 1 replica per partition, fewer than HUBSTREAM_REPLICATION_FACTOR=3"
    ]
