"""The hub web application over the real stack: every route's sign-in, role, authority and form
token rule; no page with personal data kept by a cache; bad input named, nothing half-written;
every view in the access log. Sign-in is real (Keycloak's form, authorization code with PKCE)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from hubstream import topics
from tests.support.stack import Namespace, read_topic
from tests.support.web import (
    CITY_CHILD,
    COUNTY_CHILD,
    WebApp,
    browser,
    concern_of,
    forms_of,
    owner_query,
    seeded_namespace,
    sign_in,
)

pytestmark = pytest.mark.timeout(400)
USERS = ("practitioner.city", "practitioner.county", "manager", "analyst", "auditor")


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[Namespace, WebApp]]:
    with seeded_namespace() as made:
        yield made


@pytest.fixture(scope="module")
def clients(site: tuple[Namespace, WebApp]) -> Iterator[dict[str, httpx.Client]]:
    _, app = site
    signed_in = {user: sign_in(app, user) for user in USERS}
    yield signed_in
    for client in signed_in.values():
        client.close()


def paths(ns: Namespace) -> dict[str, str]:
    return {
        "queue": "/concerns",
        "concern": f"/concerns/{concern_of(ns, CITY_CHILD)}",
        "child": f"/children/{CITY_CHILD}",
        "access log": "/access-log",
    }


def csrf(client: httpx.Client, app: WebApp, path: str) -> str:
    page = client.get(app.url(path))
    assert page.status_code == 200, page.text[:300]
    tokens = {f["inputs"].get("csrf_token") for f in forms_of(page.text).values() if f["method"] == "post"}
    [token] = tokens - {None}
    return str(token)


def test_anonymous_requests_go_to_sign_in(site: tuple[Namespace, WebApp]) -> None:
    ns, app = site
    with browser() as anonymous:
        for path in [*paths(ns).values(), "/", "/concerns?status=closed&page=2"]:
            response = anonymous.get(app.url(path))
            assert response.status_code == 303, path
            if path != "/":
                assert response.headers["location"].startswith("/sign-in?next="), path
        for path in (paths(ns)["concern"], f"/children/{CITY_CHILD}/decisions"):
            response = anonymous.post(app.url(path), data={"action": "acknowledge"})
            assert (response.status_code, response.headers["location"][:13]) == (303, "/sign-in?next"), path


@pytest.mark.parametrize(
    ("user", "page", "status"),
    [
        ("practitioner.city", "queue", 200),
        ("practitioner.city", "concern", 200),
        ("practitioner.city", "child", 200),
        ("practitioner.city", "access log", 403),
        ("practitioner.county", "concern", 403),
        ("practitioner.county", "child", 403),  # the city's
        ("manager", "queue", 200),
        ("manager", "concern", 200),
        ("manager", "child", 200),
        ("manager", "access log", 403),
        ("analyst", "queue", 200),
        ("analyst", "concern", 200),
        ("analyst", "child", 403),
        ("analyst", "access log", 403),
        ("auditor", "queue", 403),
        ("auditor", "concern", 403),
        ("auditor", "child", 403),
        ("auditor", "access log", 200),
    ],
)
def test_each_page_is_for_its_roles_and_authority(
    site: tuple[Namespace, WebApp], clients: dict[str, httpx.Client], user: str, page: str, status: int
) -> None:
    ns, app = site
    response = clients[user].get(app.url(paths(ns)[page]))
    assert response.status_code == status, response.text[:300]
    assert response.headers["cache-control"] == "no-store"  # nothing with personal data is cached
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    if status == 403:
        assert CITY_CHILD not in response.text


def test_the_queue_shows_only_the_practitioner_s_authority(
    site: tuple[Namespace, WebApp], clients: dict[str, httpx.Client]
) -> None:
    ns, app = site
    city, county = concern_of(ns, CITY_CHILD), concern_of(ns, COUNTY_CHILD)
    mine = clients["practitioner.city"].get(app.url("/concerns")).text
    assert city in mine and county not in mine
    everyone = clients["manager"].get(app.url("/concerns")).text
    assert city in everyone and county in everyone


def test_forms_without_their_token_are_refused_and_change_nothing(
    site: tuple[Namespace, WebApp], clients: dict[str, httpx.Client]
) -> None:
    ns, app = site
    concern = paths(ns)["concern"]
    client = clients["practitioner.city"]
    before = owner_query(ns, "SELECT status, owner FROM hub.concerns WHERE concern_id = %s", (concern[10:],))
    for token in (None, "", "forged"):
        data = {"action": "assign", "owner": "Mallory"} | ({"csrf_token": token} if token is not None else {})
        assert client.post(app.url(concern), data=data).status_code == 403
        decision = {"kind": "case_opened"} | ({"csrf_token": token} if token is not None else {})
        assert client.post(app.url(f"/children/{CITY_CHILD}/decisions"), data=decision).status_code == 403
    after = owner_query(ns, "SELECT status, owner FROM hub.concerns WHERE concern_id = %s", (concern[10:],))
    assert after == before
    assert read_topic(ns.settings, ns.topic(topics.HUB_DECISIONS), timeout_s=3) == []


def test_wrong_roles_may_not_change_anything(
    site: tuple[Namespace, WebApp], clients: dict[str, httpx.Client]
) -> None:
    ns, app = site
    concern = paths(ns)["concern"]
    analyst = clients["analyst"]
    token = csrf(analyst, app, "/concerns")  # the sign-out form's: a real token of this session
    assert (
        analyst.post(app.url(concern), data={"csrf_token": token, "action": "acknowledge"}).status_code == 403
    )
    county = clients["practitioner.county"]
    token = csrf(county, app, "/concerns")
    assert (
        county.post(app.url(concern), data={"csrf_token": token, "action": "acknowledge"}).status_code == 403
    )
    assert owner_query(ns, "SELECT status FROM hub.concerns WHERE concern_id = %s", (concern[10:],)) == [
        ("new",)
    ]


def test_bad_input_is_named_and_nothing_is_written(
    site: tuple[Namespace, WebApp], clients: dict[str, httpx.Client]
) -> None:
    ns, app = site
    client = clients["practitioner.city"]
    concern = paths(ns)["concern"]
    token = csrf(client, app, concern)
    closing = client.post(app.url(concern), data={"csrf_token": token, "action": "close", "reason": "  "})
    assert closing.status_code == 400
    assert "There is a problem" in closing.text and 'href="#close-reason"' in closing.text
    assert "Enter the reason for closing" in closing.text
    for action, field, message in (
        ("assign", "owner", "Enter who is to own this concern"),
        ("action", "note", "Enter what was done"),
    ):
        empty = client.post(app.url(concern), data={"csrf_token": token, "action": action, field: ""})
        assert (
            empty.status_code == 400 and f'href="#{action}-{field}"' in empty.text and message in empty.text
        )
    unknown = client.post(app.url(concern), data={"csrf_token": token, "action": "escalate"})
    assert unknown.status_code == 400 and 'href="#action"' in unknown.text
    deciding = client.post(
        app.url(f"/children/{CITY_CHILD}/decisions"),
        data={"csrf_token": token, "kind": "risk_level_set", "nhs_number": "123"},
    )
    assert deciding.status_code == 400
    for field, message in (("risk", "Select the risk level"), ("nhs_number", "Enter a real NHS number")):
        assert f'href="#{field}"' in deciding.text and message in deciding.text
    assert owner_query(ns, "SELECT status FROM hub.concerns WHERE concern_id = %s", (concern[10:],)) == [
        ("new",)
    ]
    assert read_topic(ns.settings, ns.topic(topics.HUB_DECISIONS), timeout_s=3) == []


def test_every_view_of_evidence_or_a_child_is_in_the_access_log_and_narratives_follow_the_role(
    site: tuple[Namespace, WebApp], clients: dict[str, httpx.Client]
) -> None:
    ns, app = site
    concern = paths(ns)["concern"]
    child = clients["practitioner.city"].get(app.url(f"/children/{CITY_CHILD}")).text
    assert "grey Astra outside the Premier Inn" in child  # decrypted for this reader
    assert "Handling code C" in child and "Not to be shared with the family" in child
    [(sealed,)] = owner_query(ns, "SELECT narrative FROM hub.evidence WHERE narrative IS NOT NULL")
    assert sealed.startswith("enc:v1:") and "Astra" not in sealed  # at rest, as on the wire
    clients["practitioner.city"].get(app.url(concern))
    clients["analyst"].get(app.url(concern))
    clients["manager"].get(app.url(f"/children/{CITY_CHILD}"))
    logged = owner_query(
        ns, "SELECT actor, purpose FROM audit.access_log WHERE record_ref = %s ORDER BY id", (concern[10:],)
    )
    assert ("practitioner.city", "triage: concern and its evidence") in logged
    assert ("analyst", "triage: concern and its evidence") in logged
    assert ("manager", "safeguarding: child's chronology and identity") in owner_query(
        ns, "SELECT actor, purpose FROM audit.access_log WHERE record_ref = %s", (CITY_CHILD,)
    )
    auditor = clients["auditor"].get(app.url("/access-log")).text
    assert "safeguarding: child&#39;s chronology and identity" in auditor


def test_sign_out_ends_the_session(site: tuple[Namespace, WebApp]) -> None:
    _, app = site
    client = sign_in(app, "practitioner.rutland")
    token = csrf(client, app, "/concerns")
    out = client.post(app.url("/sign-out"), data={"csrf_token": token})
    assert out.status_code == 303 and "/protocol/openid-connect/logout" in out.headers["location"]
    assert client.get(app.url("/concerns")).status_code == 303  # signed out here
    client.close()
