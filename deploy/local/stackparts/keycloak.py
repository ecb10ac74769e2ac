"""Keycloak: the identity provider of hubstream's web applications, and the realm they sign in to.

Keycloak 26 (`org.keycloak:keycloak-quarkus-dist`, the server zip, from Maven Central through
deploy/local/keycloak/pom.xml) runs from its own bin/kc.sh in production mode on a build made
once at install (`kc.sh build`, so every start is `kc.sh start --optimized`), on Java 21 or later
(the machines' Temurin 25; the other parts keep their Java), listening on 127.0.0.1 only. Storage
is dev-file: an H2 database under HUBSTREAM_HOME/keycloak/data.

After every start, and on every `up` of a running server, the realm `hubstream` is made to match
what this module declares, through the admin REST API as the bootstrap admin: realm roles, the
`authority` user attribute, demo users and the `hub-web` OIDC client. Re-running changes nothing
that already matches. Every password and the client secret are made once, in keycloak.json in the
secrets directory (0600), and read back with read_credentials().
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import (
    DEFAULT_TIMEOUT_S,
    DEPLOY_DIR,
    LOOPBACK,
    Config,
    StackError,
    _write_private,
    ensure_port_free,
    fetch_with_maven,
    file_digest,
    group_rss_mib,
    java_home_at_least,
    java_major,
    mvn_bin,
    port_open,
    process_alive,
    read_pid,
    remove,
    run,
    say,
    spawn,
    stop_pid,
    wait_until,
)

PART = "keycloak"
REALM = "hubstream"
CLIENT_ID = "hub-web"
ADMIN_USERNAME = "admin"
JAVA_RELEASE = 21  # Keycloak 26 needs Java 21 or later
JAVA_SETTING = "HUBSTREAM_KEYCLOAK_JAVA_HOME"
HEAP = "-Xms64m -Xmx512m"  # JAVA_OPTS_KC_HEAP: kc.sh keeps its other JVM defaults
SECRETS_FILE = "keycloak.json"

# Build-time options, fixed by `kc.sh build` at install: changing them rebuilds.
BUILD_OPTIONS = ("--db=dev-file", "--health-enabled=true", "--metrics-enabled=true")

# The three local authorities of the hub, as the project names them (producers/simulate.py).
AUTHORITIES = {
    "E06000016": "Leicester City Council",
    "E10000018": "Leicestershire County Council",
    "E06000017": "Rutland County Council",
}

ROLES = {
    "hub-practitioner": "Practitioner of the hub: works the cases and alerts of their own authority",
    "hub-manager": "Hub manager: oversees the cases and alerts of every authority",
    "analyst": "Analyst: studies patterns (hotspots, associations) across the hub",
    "auditor": "Auditor: reads the access log; changes nothing",
}


@dataclass(frozen=True)
class DemoUser:
    username: str
    first_name: str
    last_name: str
    roles: tuple[str, ...]
    authorities: tuple[str, ...]


DEMO_USERS = (
    DemoUser("practitioner.city", "City", "Practitioner", ("hub-practitioner",), ("E06000016",)),
    DemoUser("practitioner.county", "County", "Practitioner", ("hub-practitioner",), ("E10000018",)),
    DemoUser("practitioner.rutland", "Rutland", "Practitioner", ("hub-practitioner",), ("E06000017",)),
    DemoUser("manager", "Hub", "Manager", ("hub-manager",), tuple(AUTHORITIES)),
    DemoUser("analyst", "Hub", "Analyst", ("analyst",), tuple(AUTHORITIES)),
    DemoUser("auditor", "Hub", "Auditor", ("auditor",), tuple(AUTHORITIES)),
)

# Keycloak matches a redirect URI with a `*` only at the end of its path, never in the port, so
# `http://127.0.0.1:*/*` would match nothing. For loopback hosts it retries the match with the
# port removed (RFC 8252, 7.3: RedirectUtils, LOOPBACK_INTERFACES), so this one entry lets the
# local web app run on any port of 127.0.0.1, and no other host.
REDIRECT_URIS = ("http://127.0.0.1/*",)


# --------------------------------------------------------------------------------------------
# The realm, as declared: pure functions of the declarations above (tests/unit reads them)


def realm_settings() -> dict[str, Any]:
    return {
        "realm": REALM,
        "enabled": True,
        "displayName": "hubstream",
        "sslRequired": "external",  # plain HTTP only from loopback and private addresses
        "registrationAllowed": False,
        "resetPasswordAllowed": False,
        "rememberMe": False,
        "editUsernameAllowed": False,
        "loginWithEmailAllowed": False,
        "duplicateEmailsAllowed": False,
        # Brute-force detection: 10 failures in a row lock a user out for 1 minute, doubling up
        # to 15 minutes. Keycloak's quick-login check (a second failure within 1 s locks out for
        # a minute) is off: sign-ins by the tests and local tools come that fast.
        "bruteForceProtected": True,
        "permanentLockout": False,
        "failureFactor": 10,
        "waitIncrementSeconds": 60,
        "maxFailureWaitSeconds": 900,
        "quickLoginCheckMilliSeconds": 0,
    }


def authority_attribute() -> dict[str, Any]:
    """The `authority` attribute of the realm's user profile: one or more of the hub's authorities,
    set by administrators only (users may see theirs, never change it)."""
    return {
        "name": "authority",
        "displayName": "Authority",
        "multivalued": True,
        "validations": {"options": {"options": list(AUTHORITIES)}},
        "annotations": {"inputType": "multiselect", "inputOptionLabels": dict(AUTHORITIES)},
        "permissions": {"view": ["admin", "user"], "edit": ["admin"]},
    }


def user_profile(current: dict[str, Any]) -> dict[str, Any]:
    """The realm's user profile (Keycloak's own attributes kept) with `authority` as declared."""
    attributes = [a for a in current.get("attributes", []) if a.get("name") != "authority"]
    return {**current, "attributes": [*attributes, authority_attribute()]}


def protocol_mappers() -> list[dict[str, Any]]:
    """Claims of the hub-web client: `authority` (always a list) and realm roles in the ID token
    and userinfo. The realm's default `roles` scope already puts `realm_access.roles` in the access
    token, so the roles mapper here leaves the access token alone."""
    claims = {"id.token.claim": "true", "userinfo.token.claim": "true", "jsonType.label": "String"}
    return [
        {
            "name": "authority",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-usermodel-attribute-mapper",
            "consentRequired": False,
            "config": {
                **claims,
                "user.attribute": "authority",
                "claim.name": "authority",
                "multivalued": "true",
                "aggregate.attrs": "false",
                "access.token.claim": "true",
                "introspection.token.claim": "true",
            },
        },
        {
            "name": "realm roles in ID token and userinfo",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-usermodel-realm-role-mapper",
            "consentRequired": False,
            "config": {
                **claims,
                "claim.name": "realm_access.roles",
                "multivalued": "true",
                "access.token.claim": "false",
                "introspection.token.claim": "false",
            },
        },
    ]


def client_representation(secret: str) -> dict[str, Any]:
    """hub-web: a confidential client on the authorization-code flow, PKCE S256 required."""
    return {
        "clientId": CLIENT_ID,
        "name": "hubstream web",
        "description": "The hub's web applications (local stack)",
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": secret,
        "standardFlowEnabled": True,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": False,
        "consentRequired": False,
        "frontchannelLogout": True,
        "redirectUris": list(REDIRECT_URIS),
        "webOrigins": ["+"],
        "attributes": {
            "pkce.code.challenge.method": "S256",
            "post.logout.redirect.uris": "+",
            "oauth2.device.authorization.grant.enabled": "false",
            "oidc.ciba.grant.enabled": "false",
        },
    }


def user_representation(user: DemoUser) -> dict[str, Any]:
    return {
        "username": user.username,
        "enabled": True,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "email": f"{user.username}@hubstream.invalid",
        "emailVerified": True,
        "attributes": {"authority": list(user.authorities)},
        "requiredActions": [],
    }


# --------------------------------------------------------------------------------------------
# Secrets


@dataclass(frozen=True)
class Credentials:
    """What keycloak.json holds: the bootstrap admin, client secrets, demo users' passwords."""

    admin_username: str
    admin_password: str
    client_secrets: dict[str, str]
    passwords: dict[str, str]

    def client_secret(self, client_id: str = CLIENT_ID) -> str:
        return self.client_secrets[client_id]

    def password(self, username: str) -> str:
        return self.passwords[username]


class KeycloakSecrets:
    """keycloak.json in the secrets directory (0700; the file 0600), made once.

    {"admin": {"username", "password"}, "clients": {client_id: secret}, "users": {username:
    password}}. Whatever is missing is added; nothing present is ever changed, so a password or
    secret stays what the running Keycloak has.
    """

    part = PART

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.file = directory / SECRETS_FILE

    def read(self) -> Credentials:
        try:
            doc = json.loads(self.file.read_text())
            return Credentials(
                admin_username=str(doc["admin"]["username"]),
                admin_password=str(doc["admin"]["password"]),
                client_secrets={str(k): str(v) for k, v in doc["clients"].items()},
                passwords={str(k): str(v) for k, v in doc["users"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StackError(self.part, f"cannot read Keycloak credentials from {self.file}: {exc}") from None

    def ensure(self) -> Credentials:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        old = self.read() if self.file.exists() else Credentials(ADMIN_USERNAME, "", {}, {})
        admin_password = old.admin_password or secrets.token_urlsafe(24)
        clients = {CLIENT_ID: secrets.token_urlsafe(32), **old.client_secrets}
        users = {u.username: secrets.token_urlsafe(18) for u in DEMO_USERS} | old.passwords
        new = Credentials(old.admin_username, admin_password, clients, users)
        if new != old:
            made = [name for name in ("admin", *clients, *users) if name not in _names(old)]
            doc = {
                "about": "Keycloak credentials of the local stack: its bootstrap admin (realm master), "
                "the OIDC clients' secrets and the demo users' passwords (realm hubstream); made once "
                "by deploy/local/stack.py. OFFICIAL-SENSITIVE: never copy out of this directory.",
                "admin": {"username": new.admin_username, "password": new.admin_password},
                "clients": new.client_secrets,
                "users": new.passwords,
            }
            _write_private(self.file, json.dumps(doc, indent=2) + "\n")
            say(self.part, f"credentials made for {', '.join(made)} in {self.file}")
        self.file.chmod(0o600)
        return new


def _names(credentials: Credentials) -> set[str]:
    admin = {"admin"} if credentials.admin_password else set()
    return admin | set(credentials.client_secrets) | set(credentials.passwords)


def read_credentials(secrets_dir: Path | None = None) -> Credentials:
    """The local Keycloak's credentials, for tests and local tools.

    From HUBSTREAM_SECRETS_DIR/keycloak.json (default HUBSTREAM_HOME/secrets), written by
    `stack.py up keycloak`: .admin_username/.admin_password (realm master), .client_secret("hub-web"),
    .password("practitioner.city") and the other demo users'.
    """
    directory = secrets_dir or Config.from_settings(DEFAULT_TIMEOUT_S).secrets_dir
    return KeycloakSecrets(directory).read()


# --------------------------------------------------------------------------------------------
# The admin REST API, as the bootstrap admin


class AdminApi:
    """A few calls of Keycloak's admin REST API (/admin/realms), with the master realm's admin-cli."""

    def __init__(self, base_url: str, username: str, password: str, part: str = PART) -> None:
        self.base = base_url
        self.username = username
        self.password = password
        self.part = part
        self._token: str | None = None

    def _login(self) -> str:
        form = urllib.parse.urlencode(
            {
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": self.username,
                "password": self.password,
            }
        ).encode()
        request = urllib.request.Request(
            f"{self.base}/realms/master/protocol/openid-connect/token", data=form, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return str(json.loads(response.read())["access_token"])
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise StackError(
                    self.part,
                    f"the admin password in {SECRETS_FILE} does not open this Keycloak: its data was "
                    "made with other credentials. Start its data afresh with "
                    "`stack.py clean keycloak` (the realm is made again on the next up)",
                ) from None
            raise StackError(self.part, f"admin login: HTTP {exc.code}: {_body(exc)}") from None

    def call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        """One request to /admin/realms{path}; JSON in and out. None for 404 when missing_ok."""
        for attempt in (1, 2):
            if self._token is None:
                self._token = self._login()
            request = urllib.request.Request(
                f"{self.base}/admin/realms{path}",
                data=None if body is None else json.dumps(body).encode(),
                method=method,
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    text = response.read()
                    return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                if exc.code == 404 and missing_ok:
                    return None
                if exc.code == 401 and attempt == 1:  # the admin token (60 s) ran out
                    self._token = None
                    continue
                raise StackError(
                    self.part, f"{method} /admin/realms{path}: HTTP {exc.code}: {_body(exc)}"
                ) from None
        raise AssertionError("unreachable")


def _body(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read().decode(errors="replace")[:500]
    except OSError:
        return "(no body)"


def ensure_realm(api: AdminApi, credentials: Credentials, *, set_passwords: bool) -> list[str]:
    """Make realm `hubstream` match the declarations; returns what it changed (empty if nothing).

    Creates what is missing and updates what differs: the realm's settings, its roles, the user
    profile's `authority` attribute, the hub-web client (secret from keycloak.json) and its
    mappers, the demo users (attributes, names, roles of ROLES). Passwords are set when a user is
    created and, with set_passwords (after each start), put back from keycloak.json.
    """
    changed: list[str] = []
    realm_path = f"/{REALM}"
    current = api.call("GET", realm_path, missing_ok=True)
    wanted = realm_settings()
    if current is None:
        api.call("POST", "", wanted)
        changed.append(f"realm {REALM} created")
    elif any(current.get(k) != v for k, v in wanted.items()):
        api.call("PUT", realm_path, wanted)
        changed.append("realm settings")

    roles = {r["name"]: r for r in api.call("GET", f"{realm_path}/roles")}
    for name, description in ROLES.items():
        if name not in roles:
            api.call("POST", f"{realm_path}/roles", {"name": name, "description": description})
            changed.append(f"role {name}")
        elif roles[name].get("description") != description:
            api.call("PUT", f"{realm_path}/roles/{name}", {**roles[name], "description": description})
            changed.append(f"role {name} description")
    roles = {r["name"]: r for r in api.call("GET", f"{realm_path}/roles")}

    profile = api.call("GET", f"{realm_path}/users/profile")
    if user_profile(profile) != profile:
        api.call("PUT", f"{realm_path}/users/profile", user_profile(profile))
        changed.append("user profile attribute authority")

    changed += _ensure_client(api, credentials.client_secret(CLIENT_ID))
    for user in DEMO_USERS:
        changed += _ensure_user(api, user, credentials.password(user.username), roles, set_passwords)
    return changed


def _ensure_client(api: AdminApi, secret: str) -> list[str]:
    base = f"/{REALM}/clients"
    wanted = client_representation(secret)
    found = api.call("GET", f"{base}?clientId={CLIENT_ID}")
    if not found:
        api.call("POST", base, {**wanted, "protocolMappers": protocol_mappers()})
        return [f"client {CLIENT_ID} created"]
    changed: list[str] = []
    current = found[0]
    client_id = current["id"]
    stored_secret = api.call("GET", f"{base}/{client_id}/client-secret").get("value")
    differs = [k for k, v in wanted.items() if k not in ("secret", "attributes") and current.get(k) != v] + [
        k for k, v in wanted["attributes"].items() if current.get("attributes", {}).get(k) != v
    ]
    if differs or stored_secret != secret:
        attributes = {**current.get("attributes", {}), **wanted["attributes"]}
        api.call("PUT", f"{base}/{client_id}", {**current, **wanted, "attributes": attributes})
        changed.append(f"client {CLIENT_ID} ({', '.join(differs or ['secret'])})")
    mappers = {m["name"]: m for m in api.call("GET", f"{base}/{client_id}/protocol-mappers/models")}
    for mapper in protocol_mappers():
        existing = mappers.get(mapper["name"])
        if existing is None:
            api.call("POST", f"{base}/{client_id}/protocol-mappers/models", mapper)
            changed.append(f"mapper {mapper['name']}")
        elif (
            existing.get("protocolMapper") != mapper["protocolMapper"]
            or existing.get("config") != mapper["config"]
        ):
            api.call(
                "PUT",
                f"{base}/{client_id}/protocol-mappers/models/{existing['id']}",
                {**mapper, "id": existing["id"]},
            )
            changed.append(f"mapper {mapper['name']}")
    return changed


def _ensure_user(
    api: AdminApi, user: DemoUser, password: str, roles: dict[str, Any], set_password: bool
) -> list[str]:
    base = f"/{REALM}/users"
    wanted = user_representation(user)
    query = urllib.parse.urlencode({"username": user.username, "exact": "true"})
    found = api.call("GET", f"{base}?{query}")
    changed: list[str] = []
    created = not found
    if created:
        credential = {"type": "password", "value": password, "temporary": False}
        api.call("POST", base, {**wanted, "credentials": [credential]})
        found = api.call("GET", f"{base}?{query}")
        set_password = False
    current = found[0]
    user_id = current["id"]
    if any(current.get(k) != v for k, v in wanted.items()):
        api.call("PUT", f"{base}/{user_id}", {**current, **wanted})
        changed.append(f"user {user.username}")
    if set_password:
        api.call(
            "PUT",
            f"{base}/{user_id}/reset-password",
            {"type": "password", "value": password, "temporary": False},
        )
    held = {r["name"] for r in api.call("GET", f"{base}/{user_id}/role-mappings/realm")}
    grant = [roles[name] for name in user.roles if name not in held]
    revoke = [roles[name] for name in ROLES if name in held and name not in user.roles]
    if grant:
        api.call("POST", f"{base}/{user_id}/role-mappings/realm", grant)
    if revoke:
        api.call("DELETE", f"{base}/{user_id}/role-mappings/realm", revoke)
    if grant or revoke:
        changed.append(f"roles of {user.username}")
    return [f"user {user.username} created"] if created else changed


# --------------------------------------------------------------------------------------------
# The part


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Keycloak:
    name = PART
    realm = REALM

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.home / "keycloak"
        self.dist = self.root / "dist"
        self.data = self.root / "data"  # the H2 database: data/h2/keycloakdb.mv.db
        self.log_file = self.root / "keycloak.log"
        self.pid_file = self.root / "keycloak.pid"
        self.pom = DEPLOY_DIR / "keycloak" / "pom.xml"
        self.marker_file = self.dist / ".installed"
        self.secrets = KeycloakSecrets(config.secrets_dir)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.config.keycloak_port}"

    @property
    def address(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def management_url(self) -> str:
        return f"http://{LOOPBACK}:{self.config.keycloak_management_port}"

    def home(self) -> Path:
        """The unpacked distribution (dist/keycloak-<version>)."""
        for kc_sh in sorted(self.dist.glob("keycloak-*/bin/kc.sh")):
            return kc_sh.parent.parent
        raise StackError(
            self.name, f"no keycloak-*/bin/kc.sh in {self.dist}; run `stack.py install keycloak`"
        )

    def java_home(self) -> Path:
        return java_home_at_least(self.name, JAVA_RELEASE, JAVA_SETTING)

    def _install_digest(self) -> str:
        return hashlib.sha256((file_digest(self.pom) + " ".join(BUILD_OPTIONS)).encode()).hexdigest()

    def installed(self) -> bool:
        try:
            return self.marker_file.read_text().strip() == self._install_digest()
        except OSError:
            return False

    def _env(self, java_home: Path, credentials: Credentials | None = None) -> dict[str, str]:
        """kc.sh's environment: its Java, its heap, and nothing of ours that kc.sh or Keycloak
        would read as configuration (JAVA, JAVA_OPTS, KC_*)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KC_")
            and k not in ("JAVA", "JAVA_OPTS", "JAVA_OPTS_APPEND", "JAVA_OPTS_KC_HEAP")
        }
        env.update(JAVA_HOME=str(java_home), JAVA_OPTS_KC_HEAP=HEAP)
        if credentials is not None:
            # Read once, when the master realm is made (first start); the environment, unlike
            # the command line, is not readable by other users.
            env.update(
                KC_BOOTSTRAP_ADMIN_USERNAME=credentials.admin_username,
                KC_BOOTSTRAP_ADMIN_PASSWORD=credentials.admin_password,
            )
        return env

    def install(self) -> None:
        if self.installed():
            say(self.name, f"present in {self.dist}")
            return
        if self.pid() is not None:
            raise StackError(
                self.name, "a new build is due but Keycloak is running: `stack.py down keycloak` first"
            )
        java_home = self.java_home()
        mvn = mvn_bin(self.name)
        started = time.monotonic()
        say(self.name, f"fetching Keycloak with Maven into {self.dist} ...", end=" ")
        fetch_with_maven(self.name, mvn, self.pom, self.root, self.dist, self.home)
        home = self.home()
        print(f"done in {time.monotonic() - started:.1f}s", flush=True)
        started = time.monotonic()
        say(self.name, f"building the server (kc.sh build {' '.join(BUILD_OPTIONS)}) ...", end=" ")
        try:
            run(self.name, ["sh", home / "bin" / "kc.sh", "build", *BUILD_OPTIONS], env=self._env(java_home))
        except StackError:
            print("failed", flush=True)
            raise
        self.marker_file.write_text(self._install_digest() + "\n")
        print(f"done in {time.monotonic() - started:.1f}s", flush=True)

    def pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid is not None and process_alive(pid, str(self.dist)) else None

    def server_answers(self) -> bool:
        """The server is up: its master realm answers (before realm hubstream exists)."""
        return _http_ok(f"{self.base_url}/realms/master/.well-known/openid-configuration")

    def answers(self) -> bool:
        """Realm hubstream answers its OpenID discovery document."""
        return _http_ok(f"{self.address}/.well-known/openid-configuration")

    def _runtime_options(self) -> list[str]:
        return [
            "--http-enabled=true",
            f"--http-host={LOOPBACK}",  # the management interface inherits it
            f"--http-port={self.config.keycloak_port}",
            f"--http-management-port={self.config.keycloak_management_port}",
            f"--hostname={self.base_url}",  # the issuer is always http://127.0.0.1:<port>/realms/...
            "--cache=local",  # one node: no cluster transport listening anywhere
            "--log-console-color=false",
            # dev-file storage under HUBSTREAM_HOME: <db-url-path>/data/h2/keycloakdb;
            # Narayana's transaction log beside it, not inside the distribution. (Narayana's
            # recovery manager also listens, on an ephemeral port of 127.0.0.1.)
            f"-Dkc.db-url-path={self.root}",
            f"-Dquarkus.transaction-manager.object-store.directory={self.data / 'transaction-logs'}",
        ]

    def _ensure_realm(self, credentials: Credentials, *, after_start: bool) -> None:
        started = time.monotonic()
        say(self.name, f"realm {self.realm} ...", end=" ")
        api = AdminApi(self.base_url, credentials.admin_username, credentials.admin_password)
        deadline = started + self.config.timeout_s
        while True:
            try:
                changed = ensure_realm(api, credentials, set_passwords=after_start)
                break
            except StackError as exc:
                # A server that has just started may still refuse for a moment (503).
                if "HTTP 503" not in str(exc) or time.monotonic() > deadline:
                    print("failed", flush=True)
                    raise
                time.sleep(1)
        what = "; ".join(changed) if changed else "as declared"
        print(f"{what} ({time.monotonic() - started:.1f}s)", flush=True)

    def up(self) -> None:
        if not self.installed() and self.pid() is not None:
            say(self.name, "a new version or build options to install; stopping the running server")
            self.down()
        self.install()
        credentials = self.secrets.ensure()
        started = time.monotonic()
        pid = self.pid()
        if pid is not None:
            if not self.server_answers():
                say(self.name, f"pid {pid} is running but not answering yet; waiting ...", end=" ")
                wait_until(self.name, self.server_answers, started, self.config.timeout_s, self.log_file)
            self._ensure_realm(credentials, after_start=False)
            say(self.name, f"already running on {self.address} (pid {pid})")
            return
        ensure_port_free(self.name, self.config.keycloak_port, "Keycloak")
        ensure_port_free(self.name, self.config.keycloak_management_port, "Keycloak management")
        java_home = self.java_home()
        home = self.home()
        self.data.mkdir(parents=True, exist_ok=True)
        first = not (self.data / "h2").exists()
        say(
            self.name,
            f"starting on {self.base_url} (management {self.management_url}; Java {java_major(java_home)} "
            f"from {java_home}; dev-file storage in {self.data}{'; first boot' if first else ''}) ...",
            end=" ",
        )
        proc = spawn(
            ["sh", home / "bin" / "kc.sh", "start", "--optimized", *self._runtime_options()],
            self.log_file,
            self.root,
            env=self._env(java_home, credentials),
        )
        self.pid_file.write_text(f"{proc.pid}\n")
        wait_until(self.name, self.server_answers, started, self.config.timeout_s, self.log_file, proc)
        self._ensure_realm(credentials, after_start=True)
        if not self.answers():
            raise StackError(
                self.name, f"{self.address}/.well-known/openid-configuration does not answer", self.log_file
            )
        say(self.name, f"up in {time.monotonic() - started:.1f}s: {self.address}")

    def down(self) -> None:
        pid = self.pid()
        if pid is None:
            say(self.name, "not running")
        else:
            stop_pid(self.name, pid, str(self.dist))
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            taken = any(
                port_open(p) for p in (self.config.keycloak_port, self.config.keycloak_management_port)
            )
            return "down" + (" (port taken by another process)" if taken else "")
        if self.answers():
            state = "up"
        elif self.server_answers():
            state = f"running, realm {self.realm} missing (run up)"
        else:
            state = "running, NOT answering"
        rss = group_rss_mib(pid)
        return f"{state} (pid {pid}, rss {rss:.0f} MiB)" if rss is not None else f"{state} (pid {pid})"

    def clean(self, everything: bool) -> None:
        """Remove the database, logs and pid; keycloak.json stays with the other secrets, so the
        next first boot makes the same admin, users and client secret."""
        for path in (
            self.data,
            self.pid_file,
            self.log_file,
            self.log_file.with_name(self.log_file.name + ".1"),
        ):
            remove(path)
        for left in self.dist.glob("keycloak-*/data"):  # what a start outside the stack leaves
            remove(left)
        if everything:
            remove(self.root)

    def logs(self) -> list[Path]:
        return [self.log_file]
