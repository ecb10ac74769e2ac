"""A real Prometheus server scrapes a real stream worker and hub consumer.

The server is the Debian package, installed and started by deploy/prometheus/prometheus.py with
a one-second scrape interval and the project's alerting rules. The story of the end-to-end test
is published (plus one message that is not Avro), and the project's metrics must arrive in
Prometheus with the right labels, the rules must evaluate cleanly against them, and every
query of the Grafana dashboard must be valid PromQL.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from hubstream import kafka, metrics, topics
from hubstream.progress import wait_until
from hubstream.settings import PROJECT_ROOT
from tests.integration.test_worker_end_to_end import county_story, publish
from tests.support.stack import Namespace, decoded, free_port, wait_for_worker

SCRIPT = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.py"
RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "hubstream-dashboard.json"
PROMTOOL = "/usr/bin/promtool"
WAIT_S = 60.0
WORKER_JOB = "hubstream-worker"
HUB_JOB = "hubstream-hub-consumer"


def _script(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert result.returncode == 0, f"prometheus.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed() -> None:
    # apt-get update and install on a fresh machine: well under the limit, but not instant.
    _script("install", timeout_s=600)


@dataclass(frozen=True)
class Prometheus:
    url: str
    worker_port: int
    hub_port: int

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def total(self, expr: str) -> float | None:
        """The sum of an instant vector's values; None when the query returns no series."""
        result = self.query(expr)
        return sum(float(r["value"][1]) for r in result) if result else None

    def targets(self) -> str:
        active = self.api("targets")["activeTargets"]
        return "; ".join(
            f"{t['labels']['job']} {t['scrapeUrl']} {t['health']} {t['lastError']!r}" for t in active
        )

    def wait_for(self, expr: str, satisfied: Callable[[float], bool], what: str) -> float:
        deadline = time.monotonic() + WAIT_S
        last: float | None = None
        while True:
            last = self.total(expr)
            if last is not None and satisfied(last):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {WAIT_S:.0f}s waiting for {what}: `{expr}` is "
                    f"{'no series' if last is None else last}; targets: {self.targets()}"
                )
            time.sleep(0.5)


def _config(worker_port: int, hub_port: int) -> str:
    # The shipped prometheus.yml with the test's ports and a one-second scrape and evaluation.
    return f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: {WORKER_JOB}
    static_configs:
      - targets: ["127.0.0.1:{worker_port}"]
  - job_name: {HUB_JOB}
    static_configs:
      - targets: ["127.0.0.1:{hub_port}"]
"""


@pytest.fixture
def prometheus(installed: None, tmp_path: Path) -> Iterator[Prometheus]:
    worker_port, hub_port, port = free_port(), free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(worker_port, hub_port))
    data, pid_file = tmp_path / "data", tmp_path / "prometheus.pid"
    _script("check", "--config", str(config), timeout_s=60)
    _script(
        "start",
        "--config",
        str(config),
        "--port",
        str(port),
        "--data",
        str(data),
        "--pid-file",
        str(pid_file),
        "--timeout",
        str(WAIT_S),
        timeout_s=WAIT_S + 30,
    )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", worker_port, hub_port)
    finally:
        _script("stop", "--pid-file", str(pid_file), timeout_s=60)


def test_alert_rules_pass_their_promtool_unit_tests(installed: None) -> None:
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _hub_rows(ns: Namespace) -> int:
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM hub.alert_flags")
        return int(cur.fetchone()[0])


def _publish_undecodable(ns: Namespace, topic: str) -> None:
    producer = kafka.producer(ns.settings, "police")
    producer.send(topic, key=b"pk_garbage", value=b"not an avro message")
    producer.flush()
    producer.close()


def _exposed_name(metric: MetricWrapperBase) -> str:
    suffix = {"counter": "_total", "histogram": "_bucket"}.get(str(metric._type), "")
    return f"{metric._name}{suffix}"


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    # What Grafana substitutes: a window wide enough to hold the whole test, every hubstream job.
    grafana = {"$__rate_interval": "5m", "$__range": "5m", "$job": "hubstream-.*"}
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in grafana.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def test_prometheus_scrapes_the_worker_and_hub_consumer_metrics(
    ns: Namespace, prometheus: Prometheus
) -> None:
    ns.start(
        "worker",
        "--metrics-port",
        str(prometheus.worker_port),
        log_name="worker",
    )
    ns.start("consume", "hub", "--metrics-port", str(prometheus.hub_port), log_name="hub-consumer")
    story = county_story()
    missing_topic = ns.topic(topics.MISSING_EPISODES)
    missing_events = sum(1 for schema, _ in story if schema == "MissingEpisodeEvent")
    publish(ns.settings, story)
    _publish_undecodable(ns, missing_topic)

    wait_for_worker(ns, f"{ns.prefix}hubstream-worker")
    alerts = [record for _, record in decoded(ns.settings, ns.topic(topics.ALERTS))]
    assert any(a["rule"] == "repeat_missing" for a in alerts), "the story should raise repeat_missing"
    wait_until(
        lambda: _hub_rows(ns) == len(alerts), timeout_s=WAIT_S, what=f"{len(alerts)} rows in hub.alert_flags"
    )

    p = prometheus
    p.wait_for(f'up{{job="{WORKER_JOB}"}}', lambda v: v == 1, "the worker's target to be up")
    p.wait_for(f'up{{job="{HUB_JOB}"}}', lambda v: v == 1, "the hub consumer's target to be up")
    p.wait_for(
        f'hubstream_events_in_total{{job="{WORKER_JOB}", topic="{missing_topic}"}}',
        lambda v: v >= missing_events,
        f"the worker's {missing_events} missing-episode events",
    )
    p.wait_for(
        f'hubstream_alerts_raised_total{{job="{WORKER_JOB}", rule="repeat_missing"}}',
        lambda v: v > 0,
        "a repeat_missing alert",
    )
    p.wait_for(
        f'hubstream_events_out_total{{job="{WORKER_JOB}", topic="{ns.topic(topics.ALERTS)}"}}',
        lambda v: v >= len(alerts),
        f"{len(alerts)} alerts counted out",
    )
    p.wait_for(
        f'hubstream_dead_letters_total{{job="{WORKER_JOB}", topic="{missing_topic}", stage="decode"}}',
        lambda v: v == 1,
        "the one undecodable message dead-lettered at decode",
    )
    p.wait_for(
        f'hubstream_rows_written_total{{job="{HUB_JOB}", store="hub"}}',
        lambda v: v >= len(alerts),
        f"{len(alerts)} rows written to the hub store",
    )
    p.wait_for(
        f'hubstream_events_in_total{{job="{HUB_JOB}", topic="{ns.topic(topics.ALERTS)}", schema="Alert"}}',
        lambda v: v >= len(alerts),
        "the hub consumer's alerts in",
    )
    p.wait_for(f'hubstream_sink_batch_size_count{{job="{HUB_JOB}", store="hub"}}', lambda v: v > 0, "a batch")
    p.wait_for(
        f'hubstream_publish_to_row_seconds_count{{job="{HUB_JOB}", store="hub"}}',
        lambda v: v >= len(alerts),
        "publish-to-row observations",
    )
    p.wait_for(
        f'hubstream_publish_to_alert_seconds_count{{job="{WORKER_JOB}", rule="repeat_missing"}}',
        lambda v: v > 0,
        "publish-to-alert observations",
    )

    # Shown with `pytest -rP`: what the two processes reported, for reading against the story.
    for expr in (
        "sum by (job, topic) (hubstream_events_in_total)",
        "sum by (rule) (hubstream_alerts_raised_total)",
        "sum by (job, topic, stage) (hubstream_dead_letters_total)",
        "hubstream_rows_written_total",
        "sum by (topic) (hubstream_events_out_total)",
        "hubstream_sink_batch_size_count",
        "sum by (rule) (hubstream_publish_to_alert_seconds_sum)",
        "sum by (store) (hubstream_publish_to_row_seconds_sum)",
    ):
        print(expr, {json.dumps(r["metric"]): r["value"][1] for r in p.query(expr)})

    # The rules load and evaluate against the real series without errors.
    def rules_evaluated() -> list[dict[str, Any]]:
        return [r for g in p.api("rules")["groups"] for r in g["rules"]]

    wait_until(
        lambda: all(
            r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown"
            for r in rules_evaluated()
        ),
        timeout_s=WAIT_S,
        what="every alerting rule evaluated",
    )
    rules = rules_evaluated()
    written = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), flags=re.MULTILINE)
    assert len(written) >= 8
    assert sorted(r["name"] for r in rules) == sorted(written), "every rule in alerts.yml is loaded"
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken

    # Every dashboard query is valid PromQL; the panels over wired metrics have data. A rate
    # needs two scrapes in its window, and the pipeline can finish before the second one.
    def empty_panels() -> list[str]:
        return [title for title, expr in _dashboard_queries() if not p.query(expr)]

    # Nothing failed at the database here, and nothing sets the lag gauge (see below).
    expected_empty = {"Database errors", "Consumer lag"}
    with contextlib.suppress(TimeoutError):  # the assertion below names the panels
        wait_until(lambda: set(empty_panels()) <= expected_empty, timeout_s=WAIT_S, what="dashboard data")
    empty = empty_panels()
    assert set(empty) <= expected_empty, empty

    # Each metric hubstream defines should reach Prometheus once its event has happened.
    seen = set(p.api("label/__name__/values"))
    defined = {_exposed_name(m) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    not_happened = {"hubstream_db_errors_total"}  # no database error in this run
    unexported = sorted(defined - seen - not_happened)
    if unexported:
        warnings.warn(
            f"defined in hubstream/metrics.py but never exported by the worker or hub consumer: "
            f"{', '.join(unexported)}",
            stacklevel=1,
        )
