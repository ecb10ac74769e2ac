"""Prometheus metrics of every long-running hubstream process (documented in the README)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("hubstream_events_in_total", "Events consumed, by topic and schema.", ["topic", "schema"])
EVENTS_OUT = Counter("hubstream_events_out_total", "Events produced, by topic.", ["topic"])
DEAD_LETTERS = Counter(
    "hubstream_dead_letters_total", "Messages sent to the dead-letter topic.", ["topic", "stage"]
)
ALERTS_RAISED = Counter(
    "hubstream_alerts_raised_total", "Alerts raised by the stream worker.", ["rule", "area"]
)
ROWS_WRITTEN = Counter("hubstream_rows_written_total", "Rows committed to a case store.", ["store"])
DB_ERRORS = Counter("hubstream_db_errors_total", "Database errors waited out by a consumer.", ["store"])
BATCH_SIZE = Histogram(
    "hubstream_sink_batch_size", "Messages per committed consumer batch.", ["store"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
EVENT_TO_ROW_SECONDS = Histogram(
    "hubstream_publish_to_row_seconds", "From a message's publication to its row being committed.", ["store"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENT_TO_ALERT_SECONDS = Histogram(
    "hubstream_publish_to_alert_seconds", "From the triggering event's publication to the alert being sent.",
    ["rule"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WORKER_BATCH_SIZE = Histogram(
    "hubstream_worker_batch_size", "Messages per batch the stream worker handled and committed.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000),
)
WORKER_BATCH_SECONDS = Histogram(
    "hubstream_worker_batch_seconds", "Time to handle a batch and send its outputs.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
TRANSACTION_SECONDS = Histogram(
    "hubstream_worker_transaction_commit_seconds",
    "Time to commit one transaction of the stream worker: changelogs, offsets, and the broker's commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
POISONED = Counter(
    "hubstream_worker_poisoned_total",
    "Records whose handling raised: dead-lettered with the exception, the rules' state left as before.",
    ["topic"],
)
CONSUMER_LAG = Gauge("hubstream_consumer_lag", "Messages not yet consumed, per topic and partition.",
                     ["group", "topic", "partition"])


def serve(port: int) -> None:
    """Serve /metrics on 127.0.0.1:port (a no-op when port is 0)."""
    if port:
        start_http_server(port, addr="127.0.0.1")
