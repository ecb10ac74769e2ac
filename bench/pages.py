"""The hub's pages at scale: the queue, a concern and a child page with 1,000,000 concerns and
100,000 children in the store; the server's own time per page (its Server-Timing header).

    .local/venv/bin/python bench/pages.py [--concerns 1000000] [--children 100000] [--requests 200]

Fills a database of its own (`bench_pages`, made again each run unless `--reuse`) with
generate_series: three authorities; per child a tracker row for one in five, five agency events
(one an intelligence report with an encrypted narrative) and two concerns (repeat missing, return
interview); the rest of the concerns about hotspot cells and associations' entities; 85% of them
closed; two history rows and one alert each. Then it starts `hubstream serve hub` over that
database and asks each page `--requests` times, as a practitioner of one authority and as a hub
manager. The session cookie is signed with the deployment's session key, as the application
signs it, so no identity provider is needed. Prints p50, p95 and max of the server's time and of
the whole request as the client saw it; the goal is p95 <= 200 ms server time.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg2
from itsdangerous import TimestampSigner

from consumers.run import prepare_database
from hubstream.protect import encrypt_narrative
from hubstream.secrets import key
from hubstream.settings import PROJECT_ROOT, Settings, load

DATABASE = "bench_pages"
AUTHORITIES = ("E06000016", "E10000018", "E06000017")


def _sql(dsn: str, statements: list[tuple[str, str, Any]]) -> None:
    conn = psycopg2.connect(dsn)
    try:
        for what, sql, params in statements:
            started = time.monotonic()
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
            print(f"  {what}: {time.monotonic() - started:.1f} s", flush=True)
    finally:
        conn.close()


def fill(settings: Settings, concerns: int, children: int) -> None:
    narratives = [encrypt_narrative(f"Seen with an older man near the station ({n})") for n in range(64)]
    child_concerns = 2 * children
    other = concerns - child_concerns
    if other < 0:
        raise SystemExit(f"--concerns must be at least twice --children ({child_concerns})")
    authority = "(ARRAY['E06000016','E10000018','E06000017'])[1 + i %% 3]"  # %% : every statement has params
    _sql(
        settings.pg_dsn,
        [
            (
                "children on the tracker (one in five)",
                "INSERT INTO hub.children (child_key, nhs_number, case_status, risk_level, owning_authority,"
                " authority_phone, opened_at, updated_at, authority)"
                f" SELECT 'c' || i, NULL, 'open', 'medium', 'x', '0116 496 0100', now(), now(), {authority}"
                " FROM generate_series(0, %s - 1, 5) AS i",
                (children,),
            ),
            (
                "agency events (five per child)",
                "INSERT INTO hub.evidence (event_id, source, kind, report_id, episode_id, occurred_at, reported_at,"
                " authority, agency, agency_type, children, detail, narrative, handling_code, handling_conditions)"
                " SELECT 'e' || i || '-' || n, CASE WHEN n = 0 THEN 'intelligence' ELSE 'missing_episode' END,"
                "  CASE WHEN n = 0 THEN 'intelligence_report' ELSE 'reported_missing' END,"
                "  CASE WHEN n = 0 THEN 'r' || i END, CASE WHEN n > 0 THEN 'ep' || i || '-' || n END,"
                "  now() - (n * 7 || ' days')::interval, now() - (n * 7 || ' days')::interval,"
                f"  {authority}, 'Leicestershire Police', 'police', ARRAY['c' || i],"
                '  CASE WHEN n = 0 THEN \'{"cse_indicators": ["older_partner"], "objects": [], "locations": [],'
                '   "persons": [], "grading": {"source_evaluation": "B", "intelligence_assessment": 2}}\'::jsonb'
                '   ELSE \'{"risk_level": "medium", "missing_from": "home"}\'::jsonb END,'
                "  CASE WHEN n = 0 THEN (%s::text[])[1 + i %% 64] END, CASE WHEN n = 0 THEN 'P' END, NULL"
                " FROM generate_series(0, %s - 1) AS i, generate_series(0, 4) AS n",
                (narratives, children),
            ),
            (
                "which children each event is about",
                "INSERT INTO hub.evidence_children (child_key, event_id, authority)"
                " SELECT unnest(children), event_id, authority FROM hub.evidence",
                (),
            ),
            (
                "concerns",
                "INSERT INTO hub.concerns (concern_id, rule, subject_kind, subject, authority, severity, status, owner,"
                " opened_at, last_change_at, closed_at, close_reason, alert_count, evidence, latest_evidence_at)"
                " SELECT md5(i::text),"
                "  CASE WHEN i < %(cc)s THEN (ARRAY['repeat_missing','return_interview_overdue'])[1 + i %% 2]"
                "   ELSE (ARRAY['hotspot','association'])[1 + i %% 2] END,"
                "  CASE WHEN i < %(cc)s THEN 'child' WHEN i %% 2 = 0 THEN 'cell' ELSE 'vehicle' END,"
                "  CASE WHEN i < %(cc)s THEN 'c' || (i / 2) ELSE 's' || i END,"
                f"  {authority.replace('i %% 3', '(CASE WHEN i < %(cc)s THEN i / 2 ELSE i END) %% 3')},"
                "  (ARRAY['low','medium','high'])[1 + (i / 7) %% 3],"
                "  CASE WHEN i %% 20 < 17 THEN 'closed' ELSE (ARRAY['new','acknowledged','actioned'])[1 + i %% 3] END,"
                "  CASE WHEN i %% 4 = 0 THEN 'Priya' END,"
                "  now() - ((i %% 900) || ' days')::interval, now() - ((i %% 600) || ' hours')::interval,"
                "  CASE WHEN i %% 20 < 17 THEN now() END, CASE WHEN i %% 20 < 17 THEN 'no further concern' END, 1,"
                "  CASE WHEN i < %(cc)s THEN ARRAY['e' || (i / 2) || '-1', 'e' || (i / 2) || '-2', 'e' || (i / 2) || '-3']"
                "   ELSE ARRAY['e' || (i %% %(children)s) || '-0'] END, now()"
                " FROM generate_series(0, %(all)s - 1) AS i",
                {"cc": child_concerns, "all": concerns, "children": children},
            ),
            (
                "history (two rows a concern)",
                "INSERT INTO hub.concern_history (concern_id, authority, action, actor, at, from_status, to_status)"
                " SELECT concern_id, authority, a, 'hub-consumer', opened_at, NULL, 'new' FROM hub.concerns,"
                " unnest(ARRAY['raised', 'updated']) AS a",
                (),
            ),
            (
                "alerts (one a concern)",
                "INSERT INTO hub.alert_flags (alert_id, rule, subject_kind, subject, area, severity, window_start,"
                " window_end, evidence, raised_at, settings, concern_id)"
                " SELECT 'a' || concern_id, rule, subject_kind, subject, authority, severity, opened_at, opened_at,"
                " evidence, opened_at, '{}'::jsonb, concern_id FROM hub.concerns",
                (),
            ),
            ("analyze", "ANALYZE", ()),
        ],
    )
    print(f"  other concerns (cells, entities): {other:,}")


def session_cookie(settings: Settings, user: dict[str, Any]) -> str:
    """The application's session cookie for ``user``, signed as Starlette's SessionMiddleware does."""
    signer = TimestampSigner(key("web_session", str(settings.home)).hex())
    data = base64.b64encode(json.dumps({"user": user, "csrf": "bench"}).encode())
    return signer.sign(data).decode()


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"{statistics.median(ordered):7.1f} {p95:7.1f} {ordered[-1]:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concerns", type=int, default=1_000_000)
    parser.add_argument("--children", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="requests per page and user")
    parser.add_argument("--reuse", action="store_true", help="keep the database of the last run")
    parser.add_argument("--port", type=int, default=8491)
    args = parser.parse_args()
    base = load()
    admin = psycopg2.connect(base.pg_dsn)
    admin.autocommit = True
    host = f"host=127.0.0.1 port={base.pg_port} dbname={DATABASE}"
    env = {
        **os.environ,
        "HUBSTREAM_PG_DSN": f"{host} user=hubstream",
        "HUBSTREAM_HUB_STORE_DSN": f"{host} user=hub_store",
        "HUBSTREAM_HUB_WEB_DSN": f"{host} user=hub_web",
    }
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        exists = cur.fetchone() is not None
        if not (args.reuse and exists):
            cur.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()
    os.environ.update(env)
    settings = Settings()
    if not (args.reuse and exists):
        print(f"filling {DATABASE}: {args.concerns:,} concerns, {args.children:,} children", flush=True)
        prepare_database(settings)
        fill(settings, args.concerns, args.children)
    web = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "hubstream"),
            "--log-level",
            "WARNING",
            "serve",
            "hub",
            "--port",
            str(args.port),
        ],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base_url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.3)
        rng = random.Random(1)
        practitioner = {
            "username": "bench.city",
            "name": "Bench",
            "kind": "practitioner",
            "authority": "E06000016",
        }
        manager = {"username": "bench.manager", "name": "Bench", "kind": "manager", "authority": None}
        city_children = [f"c{i}" for i in range(0, args.children, 3)]
        conn = psycopg2.connect(settings.pg_dsn)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT concern_id FROM hub.concerns WHERE authority = 'E06000016' AND subject_kind = 'child'"
                " AND status <> 'closed' LIMIT 5000"
            )
            city_concerns = [r[0] for r in cur.fetchall()]
        conn.close()
        pages: dict[str, Callable[[], str]] = {
            "queue (open, newest change)": lambda: "/concerns",
            "queue (high, by age, page 20)": lambda: "/concerns?severity=high&sort=oldest&page=20",
            "queue (closed, by evidence)": lambda: "/concerns?status=closed&sort=evidence",
            "concern": lambda: f"/concerns/{rng.choice(city_concerns)}",
            "child": lambda: f"/children/{rng.choice(city_children)}",
        }
        print(
            f"\n{'page':32} {'as':13} {'server p50':>10} {'p95':>7} {'max':>7}   {'client p50':>10} {'p95':>7} {'max':>7}"
            "  (ms)"
        )
        for who, user in (("practitioner", practitioner), ("manager", manager)):
            with httpx.Client(
                base_url=base_url, cookies={"hubstream_session": session_cookie(settings, user)}, timeout=30
            ) as client:
                for name, path in pages.items():
                    server, wall = [], []
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        response = client.get(path())
                        wall.append((time.perf_counter() - started) * 1000)
                        if response.status_code != 200:
                            raise SystemExit(f"{name} as {who}: {response.status_code} {response.text[:200]}")
                        server.append(float(response.headers["server-timing"].split("dur=")[1]))
                    print(f"{name:32} {who:13} {quantiles(server):>26}   {quantiles(wall):>26}", flush=True)
    finally:
        web.terminate()
        web.wait(timeout=30)


if __name__ == "__main__":
    main()
