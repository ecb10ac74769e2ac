"""The hub web application on the real stack, and a person's side of signing in to it.

A test namespace gets its own running ``hubstream serve hub`` (its database as ``hub_web``), and
``sign_in`` goes through Keycloak's own login form as a browser would. Credentials come from the
stack's keycloak.json (deploy/local/stackparts/keycloak.py).
"""

from __future__ import annotations

import http.cookiejar
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx

from consumers.run import prepare_database
from deploy.local.stackparts import keycloak
from hubstream.settings import Settings
from producers.publish import publish_lines
from tests.support.events import intelligence, missing
from tests.support.stack import Namespace, free_port, namespace


class BrowserCookieJar(http.cookiejar.CookieJar):
    """Keeps cookies as a browser does for a loopback origin: a Secure cookie set by
    http://127.0.0.1 is sent back to it over http (Keycloak 26 marks its login cookies Secure even
    over plain HTTP; browsers treat loopback as a secure context, http.cookiejar does not)."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        if cookie.domain in ("127.0.0.1", "localhost", "[::1]"):
            cookie.secure = False
        super().set_cookie(cookie)


class Forms(HTMLParser):
    """The forms of a page: action, method and the inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {
                "action": values.get("action", ""),
                "method": values.get("method", "get"),
                "inputs": {},
            }
            self.forms[values.get("id", f"form-{len(self.forms)}")] = self._current
        elif tag == "input" and self._current is not None and values.get("name"):
            self._current["inputs"][values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms_of(page: str) -> dict[str, dict[str, Any]]:
    parser = Forms()
    parser.feed(page)
    return parser.forms


def login_form(page: str) -> tuple[str, dict[str, str]]:
    forms = forms_of(page)
    assert "kc-form-login" in forms, f"no login form on the page: {page[:500]}"
    form = forms["kc-form-login"]
    return form["action"], dict(form["inputs"])


def browser() -> httpx.Client:
    """A browser's cookie jar and no automatic redirects: each hop is looked at."""
    return httpx.Client(cookies=BrowserCookieJar(), follow_redirects=False, timeout=30)


def password_of(username: str) -> str:
    return keycloak.read_credentials().password(username)


@dataclass
class WebApp:
    base: str

    def url(self, path: str) -> str:
        return self.base + path


def start_web_app(ns: Namespace, *, timeout_s: float = 60.0) -> WebApp:
    """``hubstream serve hub`` over the namespace's database, topics and the stack's Keycloak."""
    port = free_port()
    dsn = ns.env["HUBSTREAM_HUB_STORE_DSN"].replace("user=hub_store", "user=hub_web")
    proc = ns.start(
        "serve", "hub", "--port", str(port), log_name=f"web-{port}", extra_env={"HUBSTREAM_HUB_WEB_DSN": dsn}
    )
    app = WebApp(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the web application exited ({proc.returncode}); see its test log")
        try:
            if httpx.get(app.url("/healthz"), timeout=2).status_code == 200:
                return app
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the web application did not answer on {app.base} in {timeout_s} s")
        time.sleep(0.3)


def sign_in(app: WebApp, username: str, next_path: str = "/concerns") -> httpx.Client:
    """A client signed in to ``app`` as ``username``, through Keycloak's login form."""
    client = browser()
    to_idp = client.get(app.url("/sign-in"), params={"next": next_path})
    assert to_idp.status_code in (302, 303), to_idp.text[:300]
    page = client.get(to_idp.headers["location"])
    assert page.status_code == 200, page.text[:300]
    action, inputs = login_form(page.text)
    back = client.post(action, data={**inputs, "username": username, "password": password_of(username)})
    assert back.status_code == 302, back.text[:500]
    landed = client.get(back.headers["location"])
    assert landed.status_code == 303, landed.text[:500]
    assert landed.headers["location"] == next_path
    return client


# --------------------------------------------------------------------------------------------
# A county the pages can show: the real pipeline over a small story, in two authorities

CITY, COUNTY = "E06000016", "E10000018"
CITY_CHILD, COUNTY_CHILD = "pk_web_city", "pk_web_county"
CITY_NHS = "9434765919"
T0 = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def story() -> list[tuple[str, dict[str, Any]]]:
    m = "MissingEpisodeEvent"
    events: list[tuple[str, dict[str, Any]]] = []
    for child, area in ((CITY_CHILD, CITY), (COUNTY_CHILD, COUNTY)):
        for n in range(3):  # three episodes in ten days: repeat missing in either area's settings
            extra = {"nhs_number": CITY_NHS} if child == CITY_CHILD else {}
            events.append(
                (
                    m,
                    missing(
                        child,
                        f"{child}-{n}",
                        "reported_missing",
                        T0 + timedelta(days=5 * n),
                        area=area,
                        **extra,
                    ),
                )
            )
    report = intelligence(
        "web-hotel",
        T0 + timedelta(days=1),
        children=[CITY_CHILD],
        adults=["pk_web_adult"],
        vehicles=["AB12 CDE"],
        agency="Leicestershire Police",
        agency_type="police",
        grading={
            "source_evaluation": "B",
            "intelligence_assessment": 2,
            "handling_code": "C",
            "handling_conditions": "Not to be shared with the family",
        },
    )
    report["area"] = CITY
    report["narrative"] = "Seen getting into a grey Astra outside the Premier Inn with an older man"
    events.append(("IntelligenceReport", report))
    return events


def seed(ns: Namespace, *, timeout_s: float = 120.0) -> None:
    """Publish the story, run the worker and both sinks, and wait for the hub store to hold it."""
    lines = io.StringIO("".join(json.dumps({"schema": s, "event": e}) + "\n" for s, e in story()))
    result = publish_lines(ns.settings, "mixed", lines, progress=False)
    assert (result.published, result.rejected) == (len(story()), 0), result.problems
    ns.start_worker()
    ns.start("consume", "hub", "--metrics-port", "0", log_name="hub-sink")
    ns.start("consume", "health", "--metrics-port", "0", log_name="health-sink")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with ns.owner_connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM hub.concerns WHERE rule = 'repeat_missing'")
            concerns = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM hub.evidence")
            evidence = cur.fetchone()[0]
        if concerns == 2 and evidence == len(story()):
            return
        time.sleep(0.5)
    raise AssertionError(f"the hub store has {concerns} repeat-missing concerns and {evidence} events")


def owner_query(ns: Namespace, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = ns.owner_connection()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def concern_of(ns: Namespace, child: str) -> str:
    [(concern_id,)] = owner_query(
        ns, "SELECT concern_id FROM hub.concerns WHERE rule = 'repeat_missing' AND subject = %s", (child,)
    )
    return str(concern_id)


@contextmanager
def seeded_namespace() -> Iterator[tuple[Namespace, WebApp]]:
    """One namespace for a module of page tests: the story through the pipeline, and the app."""
    with namespace(Settings()) as ns:
        prepare_database(ns.settings)
        seed(ns)
        yield ns, start_web_app(ns)
