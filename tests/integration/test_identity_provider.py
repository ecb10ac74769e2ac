"""The local Keycloak (stack part `keycloak`) signs the hub's people in as the realm declares.

Every sign-in here is real: an authorization-code request with PKCE (S256) for the `hub-web`
client, Keycloak's own login form fetched and posted with httpx as a browser would (its cookies,
its form action), the redirect back to a loopback address read for the code, and the code
exchanged with the client secret and the code verifier at the token endpoint. The ID token's
signature is checked against the realm's published keys before its claims are believed.
Credentials come from the stack's keycloak.json (deploy/local/stackparts/keycloak.py).

Keycloak 26 marks its login cookies `Secure; SameSite=None` even over plain HTTP. Browsers send
them to http://127.0.0.1 all the same (a loopback origin is a secure context to Chromium and
Firefox); http.cookiejar would not, so the test's cookie jar follows the browsers' rule.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from deploy.local.stackparts import keycloak
from hubstream.settings import Settings
from tests.support import web
from tests.support.stack import free_port
from tests.support.web import login_form

ISSUER = f"{Settings().keycloak_url}/realms/{keycloak.REALM}"
HUB_ROLES = set(keycloak.ROLES)


@pytest.fixture(scope="module")
def discovery() -> dict[str, Any]:
    try:
        response = httpx.get(f"{ISSUER}/.well-known/openid-configuration", timeout=10)
    except httpx.HTTPError as exc:
        pytest.fail(
            f"Keycloak not answering at {ISSUER} ({exc}): start it with `make up` "
            "or `python3 deploy/local/stack.py up keycloak`",
            pytrace=False,
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def credentials() -> keycloak.Credentials:
    return keycloak.read_credentials()


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    """A browser's cookie jar and no automatic redirects: each hop is looked at."""
    with web.browser() as client:
        yield client


# --------------------------------------------------------------------------------------------
# Helpers: the browser's side of the authorization-code flow


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)  # 64 characters, within RFC 7636's 43..128
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class SignIn:
    redirect_uri: str
    verifier: str
    state: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    challenge: str = ""

    @classmethod
    def new(cls) -> SignIn:
        verifier, challenge = pkce_pair()
        # Any port of 127.0.0.1 is accepted: a fresh one each time shows it.
        return cls(f"http://127.0.0.1:{free_port()}/auth/callback", verifier, challenge=challenge)

    def params(self, **override: str | None) -> dict[str, str]:
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": keycloak.CLIENT_ID,
            "redirect_uri": self.redirect_uri,
            "scope": "openid",
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
            **override,
        }
        return {k: v for k, v in params.items() if v is not None}


def submit_login(
    browser: httpx.Client, discovery: dict[str, Any], sign_in: SignIn, username: str, password: str
) -> httpx.Response:
    """GET the authorization URL, then POST the credentials to the form's action."""
    page = browser.get(discovery["authorization_endpoint"], params=sign_in.params())
    assert page.status_code == 200, page.text[:500]
    action, inputs = login_form(page.text)
    assert action.startswith(f"{ISSUER}/login-actions/authenticate"), action
    return browser.post(action, data={**inputs, "username": username, "password": password})


def authorization_code(response: httpx.Response, sign_in: SignIn) -> str:
    assert response.status_code == 302, response.text[:1000]
    location = response.headers["location"]
    assert location.startswith(sign_in.redirect_uri + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [sign_in.state]
    assert query["iss"] == [ISSUER]
    return query["code"][0]


def sign_in_code(
    browser: httpx.Client, discovery: dict[str, Any], username: str, password: str
) -> tuple[SignIn, str]:
    sign_in = SignIn.new()
    return sign_in, authorization_code(submit_login(browser, discovery, sign_in, username, password), sign_in)


def exchange(
    discovery: dict[str, Any], sign_in: SignIn, code: str, secret: str, verifier: str | None
) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": sign_in.redirect_uri}
    if verifier is not None:
        form["code_verifier"] = verifier
    return httpx.post(discovery["token_endpoint"], data=form, auth=(keycloak.CLIENT_ID, secret), timeout=30)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verified_claims(token: str, discovery: dict[str, Any]) -> dict[str, Any]:
    """The claims of an RS256 JWT whose signature verifies with one of the realm's signing keys."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(_b64(header_b64))
    assert header["alg"] == "RS256", header
    keys = httpx.get(discovery["jwks_uri"], timeout=10).json()["keys"]
    (key,) = [k for k in keys if k["kid"] == header["kid"] and k.get("use", "sig") == "sig"]
    public_key = rsa.RSAPublicNumbers(
        int.from_bytes(_b64(key["e"]), "big"), int.from_bytes(_b64(key["n"]), "big")
    ).public_key()
    public_key.verify(  # raises InvalidSignature
        _b64(signature_b64), f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return dict(json.loads(_b64(payload_b64)))


# --------------------------------------------------------------------------------------------
# Tests


def test_discovery_document_names_the_realm_and_offers_pkce(discovery: dict[str, Any]) -> None:
    assert discovery["issuer"] == ISSUER
    for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert discovery[endpoint].startswith(f"{ISSUER}/protocol/openid-connect/"), endpoint
    assert "S256" in discovery["code_challenge_methods_supported"]
    assert "authorization_code" in discovery["grant_types_supported"]
    assert "client_secret_basic" in discovery["token_endpoint_auth_methods_supported"]


def test_practitioner_signs_in_with_pkce_and_gets_authority_and_roles(
    browser: httpx.Client, discovery: dict[str, Any], credentials: keycloak.Credentials
) -> None:
    sign_in, code = sign_in_code(
        browser, discovery, "practitioner.city", credentials.password("practitioner.city")
    )
    token = exchange(discovery, sign_in, code, credentials.client_secret(), sign_in.verifier)
    assert token.status_code == 200, token.text
    tokens = token.json()
    claims = verified_claims(tokens["id_token"], discovery)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == keycloak.CLIENT_ID
    assert claims["azp"] == keycloak.CLIENT_ID
    assert claims["nonce"] == sign_in.nonce
    assert claims["preferred_username"] == "practitioner.city"
    assert claims["authority"] == ["E06000016"]  # Leicester City
    roles = set(claims["realm_access"]["roles"])
    assert roles & HUB_ROLES == {"hub-practitioner"}

    userinfo = httpx.get(
        discovery["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    )
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["authority"] == ["E06000016"]
    assert set(userinfo.json()["realm_access"]["roles"]) & HUB_ROLES == {"hub-practitioner"}

    access = verified_claims(tokens["access_token"], discovery)
    assert access["authority"] == ["E06000016"]
    assert set(access["realm_access"]["roles"]) & HUB_ROLES == {"hub-practitioner"}


@pytest.mark.parametrize("user", keycloak.DEMO_USERS, ids=lambda u: u.username)
def test_every_demo_user_gets_the_authorities_and_roles_declared(
    browser: httpx.Client,
    discovery: dict[str, Any],
    credentials: keycloak.Credentials,
    user: keycloak.DemoUser,
) -> None:
    sign_in, code = sign_in_code(browser, discovery, user.username, credentials.password(user.username))
    token = exchange(discovery, sign_in, code, credentials.client_secret(), sign_in.verifier)
    assert token.status_code == 200, token.text
    claims = verified_claims(token.json()["id_token"], discovery)
    assert sorted(claims["authority"]) == sorted(user.authorities)
    assert set(claims["realm_access"]["roles"]) & HUB_ROLES == set(user.roles)


def test_manager_holds_every_authority(
    browser: httpx.Client, discovery: dict[str, Any], credentials: keycloak.Credentials
) -> None:
    sign_in, code = sign_in_code(browser, discovery, "manager", credentials.password("manager"))
    token = exchange(discovery, sign_in, code, credentials.client_secret(), sign_in.verifier)
    claims = verified_claims(token.json()["id_token"], discovery)
    assert sorted(claims["authority"]) == ["E06000016", "E06000017", "E10000018"]
    assert "hub-manager" in claims["realm_access"]["roles"]


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("practitioner.city", "not-the-password"),
        ("nobody.at.all", "not-the-password"),  # no such user: the same answer
        ("practitioner.city", "PASSWORD-OF-MANAGER"),  # one user's password does not open another
    ],
)
def test_wrong_password_is_refused(
    browser: httpx.Client,
    discovery: dict[str, Any],
    credentials: keycloak.Credentials,
    username: str,
    password: str,
) -> None:
    if password == "PASSWORD-OF-MANAGER":
        password = credentials.password("manager")
    response = submit_login(browser, discovery, SignIn.new(), username, password)
    assert response.status_code == 200  # the form again, no redirect with a code
    assert "location" not in response.headers
    assert "Invalid username or password." in response.text
    login_form(response.text)  # and it asks again


def test_token_request_without_code_verifier_is_refused(
    browser: httpx.Client, discovery: dict[str, Any], credentials: keycloak.Credentials
) -> None:
    password = credentials.password("practitioner.city")
    sign_in, code = sign_in_code(browser, discovery, "practitioner.city", password)
    refused = exchange(discovery, sign_in, code, credentials.client_secret(), verifier=None)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"
    assert "code verifier" in refused.json()["error_description"].lower()
    assert "id_token" not in refused.json()


def test_token_request_with_another_code_verifier_is_refused(
    browser: httpx.Client, discovery: dict[str, Any], credentials: keycloak.Credentials
) -> None:
    password = credentials.password("practitioner.city")
    sign_in, code = sign_in_code(browser, discovery, "practitioner.city", password)
    refused = exchange(discovery, sign_in, code, credentials.client_secret(), verifier=pkce_pair()[0])
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"


def test_token_request_with_a_wrong_client_secret_is_refused(
    browser: httpx.Client, discovery: dict[str, Any], credentials: keycloak.Credentials
) -> None:
    password = credentials.password("practitioner.city")
    sign_in, code = sign_in_code(browser, discovery, "practitioner.city", password)
    refused = exchange(discovery, sign_in, code, "not-the-secret", sign_in.verifier)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize("dropped", ["code_challenge", "both"])
def test_authorization_request_without_pkce_is_refused(
    browser: httpx.Client, discovery: dict[str, Any], dropped: str
) -> None:
    sign_in = SignIn.new()
    override: dict[str, str | None] = {"code_challenge": None}
    if dropped == "both":
        override["code_challenge_method"] = None
    response = browser.get(discovery["authorization_endpoint"], params=sign_in.params(**override))
    assert response.status_code == 302, response.text[:500]
    location = response.headers["location"]
    assert location.startswith(sign_in.redirect_uri + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["invalid_request"]
    assert "code" not in query


def test_authorization_request_with_plain_pkce_is_refused(
    browser: httpx.Client, discovery: dict[str, Any]
) -> None:
    sign_in = SignIn.new()
    params = sign_in.params(code_challenge=sign_in.verifier, code_challenge_method="plain")
    response = browser.get(discovery["authorization_endpoint"], params=params)
    assert response.status_code == 302, response.text[:500]
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["invalid_request"]


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://hub.example/auth/callback",  # another host
        "https://127.0.0.1/auth/callback",  # another scheme
        "http://localhost:8000/auth/callback",  # loopback, but not the address registered
        "http://127.0.0.1.hub.example/auth/callback",  # a name that starts like it
    ],
)
def test_redirect_uri_outside_the_loopback_rule_is_refused(
    browser: httpx.Client, discovery: dict[str, Any], redirect_uri: str
) -> None:
    sign_in = SignIn.new()
    sign_in.redirect_uri = redirect_uri
    response = browser.get(discovery["authorization_endpoint"], params=sign_in.params())
    assert response.status_code == 400, response.text[:500]
    assert "location" not in response.headers
    assert "Invalid parameter: redirect_uri" in response.text
