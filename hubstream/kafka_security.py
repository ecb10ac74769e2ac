"""Kafka security for clients: who connects as whom, and what each principal may do.

Every client reaches the broker on its SASL_SSL listener: TLS 1.3, the broker certificate checked
against the project's CA (``ca.pem``), then SCRAM-SHA-512 as one principal. Passwords live in
``kafka-users.json`` in the secrets directory (HUBSTREAM_SECRETS_DIR, default
``HUBSTREAM_HOME/secrets``), which ``deploy/local/stack.py`` fills for the local stack and a real
deployment supplies itself.

What each principal may do is declared once, in ``deploy/local/kafka/acls.json``, by topic BASE
name; :func:`apply_acls` turns it into Kafka ACLs for one topic prefix, so a test namespace gets
grants of its own. The broker denies whatever is not granted (allow.everyone.if.no.acl.found=false).

    python -m hubstream.kafka_security apply     # the declared ACLs, for HUBSTREAM_TOPIC_PREFIX
    python -m hubstream.kafka_security table     # the grants as a Markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)

from hubstream import topics
from hubstream.retry import is_retriable, retrying
from hubstream.settings import PROJECT_ROOT, Settings

ACL_FILE = PROJECT_ROOT / "deploy" / "local" / "kafka" / "acls.json"
SCRAM_MECHANISM = "SCRAM-SHA-512"
DEFAULT_SECURE_PORT = 19094
CLUSTER_RESOURCE = "kafka-cluster"  # the one name Kafka gives the cluster resource
USERS_FILE = "kafka-users.json"
CA_FILE = "ca.pem"

_RESOURCES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "cluster": ResourceType.CLUSTER,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}
_PATTERNS = {"literal": ACLResourcePatternType.LITERAL, "prefixed": ACLResourcePatternType.PREFIXED}
# What each resource type can be granted; anything else in the file is a mistake.
_OPERATIONS = {
    "topic": {"READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "DELETE", "ALTER", "ALTER_CONFIGS"},
    "group": {"READ", "DESCRIBE", "DELETE"},
    "cluster": {"IDEMPOTENT_WRITE", "DESCRIBE", "CREATE", "DESCRIBE_CONFIGS"},
    "transactional_id": {"WRITE", "DESCRIBE"},
}


class SecurityConfigError(ValueError):
    """The ACL file or the secrets directory is not as expected; the message names what and where."""


# --------------------------------------------------------------------------------------------
# The declared grants


@dataclass(frozen=True)
class Grant:
    """One allowed operation of one principal on one resource, as declared (base names)."""

    role: str
    principal: str
    resource: str  # topic, group or cluster
    name: str  # base name; for a prefixed pattern the start of the names; the cluster has none
    pattern: str  # literal or prefixed
    operation: str  # an ACLOperation name

    def resource_name(self, prefix: str) -> str:
        return CLUSTER_RESOURCE if self.resource == "cluster" else prefix + self.name

    def acl(self, prefix: str = "") -> ACL:
        return ACL(
            principal=f"User:{self.principal}",
            host="*",
            operation=ACLOperation[self.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                _RESOURCES[self.resource], self.resource_name(prefix), _PATTERNS[self.pattern]
            ),
        )


@dataclass(frozen=True)
class AclFile:
    super_users: dict[str, str]
    roles: tuple[Role, ...]

    @property
    def grants(self) -> tuple[Grant, ...]:
        return tuple(g for role in self.roles for g in role.grants)

    @property
    def principals(self) -> tuple[str, ...]:
        return tuple(self.super_users) + tuple(p for role in self.roles for p in role.principals)

    def role_of(self, principal: str) -> Role:
        for role in self.roles:
            if principal in role.principals:
                return role
        raise SecurityConfigError(f"principal {principal!r} has no role in {ACL_FILE}")


@dataclass(frozen=True)
class Role:
    name: str
    about: str
    principals: tuple[str, ...]
    grants: tuple[Grant, ...]


def load_acl_file(path: Path = ACL_FILE) -> AclFile:
    """Read and check the ACL file: known resources, operations and catalogued topic names."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SecurityConfigError(f"cannot read ACL file {path}: {exc}") from None
    catalogued = {t.base_name for t in topics.ALL}
    supers = doc.get("super_users")
    if not isinstance(supers, dict) or "admin" not in supers:
        raise SecurityConfigError(
            f"{path}: super_users must be an object naming at least admin, got {supers!r}"
        )
    seen: set[str] = set(supers)
    roles: list[Role] = []
    for index, raw in enumerate(doc.get("roles", [])):
        where = f"{path}: roles[{index}]"
        name = raw.get("role")
        principals = raw.get("principals")
        if not isinstance(name, str) or not isinstance(principals, list) or not principals:
            raise SecurityConfigError(
                f"{where}: needs a role name and a non-empty principals list, got {raw!r}"
            )
        for principal in principals:
            if principal in seen:
                raise SecurityConfigError(f"{where}: principal {principal!r} is declared twice")
            seen.add(principal)
        grants: list[Grant] = []
        for entry in raw.get("allow", []):
            resource = entry.get("resource")
            if resource not in _RESOURCES:
                raise SecurityConfigError(
                    f"{where}: resource must be one of {sorted(_RESOURCES)}, got {resource!r}"
                )
            pattern = entry.get("pattern", "literal")
            if pattern not in _PATTERNS:
                raise SecurityConfigError(f"{where}: pattern must be literal or prefixed, got {pattern!r}")
            resource_name = "" if resource == "cluster" else entry.get("name")
            if resource != "cluster" and (not isinstance(resource_name, str) or not resource_name):
                raise SecurityConfigError(f"{where}: a {resource} grant needs a name, got {entry!r}")
            # A literal topic must be one the catalogue creates: a typo would grant nothing.
            if resource == "topic" and pattern == "literal" and resource_name not in catalogued:
                raise SecurityConfigError(
                    f"{where}: topic {resource_name!r} is not a base name in hubstream/topics.py"
                )
            for operation in entry.get("operations", []):
                if operation not in _OPERATIONS[resource]:
                    raise SecurityConfigError(
                        f"{where}: operation {operation!r} on a {resource}; "
                        f"allowed: {sorted(_OPERATIONS[resource])}"
                    )
                grants.extend(Grant(name, p, resource, resource_name, pattern, operation) for p in principals)
        roles.append(Role(name, str(raw.get("about", "")), tuple(principals), tuple(grants)))
    return AclFile(dict(supers), tuple(roles))


def declared_acls(prefix: str = "", path: Path = ACL_FILE) -> list[ACL]:
    """The Kafka ACLs the file declares, with topic and group names after ``prefix``."""
    return list(dict.fromkeys(g.acl(prefix) for g in load_acl_file(path).grants))


def _acl_key(acl: ACL) -> tuple[str, str, int, int, int, str, int]:
    pattern = acl.resource_pattern
    return (
        acl.principal,
        acl.host,
        int(acl.operation),
        int(acl.permission_type),
        int(pattern.resource_type),
        pattern.resource_name,
        int(pattern.pattern_type),
    )


def _acls_on(admin: KafkaAdminClient, pattern: ResourcePattern) -> list[ACL]:
    """Every ACL on exactly this resource pattern (not those on other patterns that match it)."""
    acl_filter = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(
            pattern.resource_type, pattern.resource_name, pattern.pattern_type
        ),
    )
    what = f"describe_acls on {pattern.resource_type.name} {pattern.resource_name!r}"
    found, _error = retrying(what, lambda: admin.describe_acls(acl_filter))  # raises on error
    return list(found)


def _exact_filter(acl: ACL) -> ACLFilter:
    p = acl.resource_pattern
    return ACLFilter(
        principal=acl.principal,
        host=acl.host,
        operation=acl.operation,
        permission_type=acl.permission_type,
        resource_pattern=ResourcePatternFilter(p.resource_type, p.resource_name, p.pattern_type),
    )


def apply_acls(admin_client: KafkaAdminClient, prefix: str = "", path: Path = ACL_FILE) -> list[ACL]:
    """Make the ACLs on the resources the file names (under ``prefix``) exactly the declared ones.

    Declared ACLs that are missing are created; any other ACL on one of those resource patterns
    (a grant since removed from the file, or one added by hand) is deleted. With the empty
    prefix, ACLs on the wildcard topic and group ``*`` are deleted too, since they would grant
    every topic or group. ACLs on other names (another test prefix) are left alone.
    Returns the declared ACLs.
    """
    wanted = declared_acls(prefix, path)
    wanted_keys = {_acl_key(a) for a in wanted}
    patterns = list(dict.fromkeys(a.resource_pattern for a in wanted))
    if prefix == "":
        patterns += [ResourcePattern(ResourceType.TOPIC, "*"), ResourcePattern(ResourceType.GROUP, "*")]
    existing: list[ACL] = []
    for pattern in patterns:
        existing.extend(_acls_on(admin_client, pattern))
    existing_keys = {_acl_key(a) for a in existing}
    extra = [a for a in existing if _acl_key(a) not in wanted_keys]
    if extra:
        _delete(admin_client, extra)
    missing = [a for a in wanted if _acl_key(a) not in existing_keys]
    if missing:
        retrying(f"create_acls ({len(missing)} ACLs)", lambda: _create(admin_client, missing))
    return wanted


def _create(admin_client: KafkaAdminClient, acls: list[ACL]) -> None:
    """Create the ACLs; a retriable failure is raised for :func:`retrying` (creating an ACL that
    exists already succeeds, so the next attempt may send them all again)."""
    failed = admin_client.create_acls(acls)["failed"]
    if failed:
        errors = [error() for error in failed]  # error classes, one per failed ACL
        if all(is_retriable(e) for e in errors):
            raise errors[0]
        raise SecurityConfigError(f"the broker refused {len(failed)} ACLs: {failed}")


def remove_acls(admin_client: KafkaAdminClient, prefix: str, path: Path = ACL_FILE) -> int:
    """Delete the ACLs :func:`apply_acls` made for a (non-empty) test prefix; returns how many.

    The cluster grants are shared by every prefix and stay.
    """
    if not prefix:
        raise SecurityConfigError("remove_acls needs a non-empty prefix: it is for test namespaces")
    mine = [
        a for a in declared_acls(prefix, path) if a.resource_pattern.resource_type != ResourceType.CLUSTER
    ]
    return _delete(admin_client, mine)


def _delete(admin_client: KafkaAdminClient, acls: Sequence[ACL]) -> int:
    filters = [_exact_filter(a) for a in acls]
    deleted = 0

    def attempt() -> None:
        # Deleting an ACL already gone matches nothing, so a retry sends every filter again.
        nonlocal deleted
        for _filter, matched, error in admin_client.delete_acls(filters):
            deleted += len(matched)
            if error.errno != 0:
                if is_retriable(error()):
                    raise error(f"deleting ACL {_filter}")
                raise SecurityConfigError(f"deleting ACL {_filter} failed: {error.__name__}")

    retrying(f"delete_acls ({len(filters)} filters)", attempt)
    return deleted


# --------------------------------------------------------------------------------------------
# Client settings


def secrets_dir(settings: Settings | None = None) -> Path:
    """HUBSTREAM_SECRETS_DIR, else HUBSTREAM_HOME/secrets (where the local stack makes them)."""
    explicit = os.environ.get("HUBSTREAM_SECRETS_DIR")
    if explicit:
        return Path(explicit)
    return (settings or Settings()).home / "secrets"


def secure_bootstrap_servers(settings: Settings | None = None) -> str:
    """The SASL_SSL listener's address.

    HUBSTREAM_SECURE_BOOTSTRAP_SERVERS, else 127.0.0.1:HUBSTREAM_KAFKA_SECURE_PORT (19094).
    """
    explicit = os.environ.get("HUBSTREAM_SECURE_BOOTSTRAP_SERVERS")
    if explicit:
        return explicit
    raw = os.environ.get("HUBSTREAM_KAFKA_SECURE_PORT", "")
    try:
        port = int(raw) if raw else DEFAULT_SECURE_PORT
    except ValueError:
        raise SecurityConfigError(
            f"setting HUBSTREAM_KAFKA_SECURE_PORT must be a whole number, got {raw!r}"
        ) from None
    return f"127.0.0.1:{port}"


def password_for(principal: str, settings: Settings | None = None) -> str:
    path = secrets_dir(settings) / USERS_FILE
    try:
        users = json.loads(path.read_text())["users"]
    except (OSError, ValueError, KeyError) as exc:
        raise SecurityConfigError(f"cannot read Kafka passwords from {path}: {exc}") from None
    if principal not in users:
        raise SecurityConfigError(f"principal {principal!r} has no password in {path}")
    return str(users[principal])


def ca_file(settings: Settings | None = None) -> Path:
    path = secrets_dir(settings) / CA_FILE
    if not path.is_file():
        raise SecurityConfigError(
            f"CA certificate {path} not found (start the stack, or set HUBSTREAM_SECRETS_DIR)"
        )
    return path


def client_config(principal: str, settings: Settings | None = None) -> dict[str, Any]:
    """kafka-python keyword arguments (KafkaProducer, KafkaConsumer, KafkaAdminClient) for the
    secure listener as ``principal``. The broker's name is checked against its certificate."""
    return {
        "bootstrap_servers": secure_bootstrap_servers(settings),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": SCRAM_MECHANISM,
        "sasl_plain_username": principal,
        "sasl_plain_password": password_for(principal, settings),
        "ssl_cafile": str(ca_file(settings)),
        "ssl_check_hostname": True,
    }


def tls_context(settings: Settings | None = None) -> ssl.SSLContext:
    """Verify the broker against the project's CA only, by name, on TLS 1.3 (all the broker offers)."""
    context = ssl.create_default_context(cafile=str(ca_file(settings)))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


# --------------------------------------------------------------------------------------------
# Commands


def apply_from_file(
    path: Path = ACL_FILE, prefix: str | None = None, settings: Settings | None = None
) -> list[ACL]:
    """Apply the ACL file as admin over the secure listener (prefix: HUBSTREAM_TOPIC_PREFIX)."""
    chosen = os.environ.get("HUBSTREAM_TOPIC_PREFIX", "") if prefix is None else prefix
    admin = KafkaAdminClient(client_id="hubstream-acls", **client_config("admin", settings))
    try:
        return apply_acls(admin, chosen, path)
    finally:
        admin.close()


def markdown_table(path: Path = ACL_FILE) -> str:
    """The grants, one row per role, for deploy/local/README.md."""
    acl_file = load_acl_file(path)
    lines = [
        "| principal(s) | may | resource grants |",
        "| --- | --- | --- |",
    ]
    for name, about in acl_file.super_users.items():
        lines.append(f"| `{name}` | {about} | super user: every operation, no ACLs needed |")
    for role in acl_file.roles:
        rows: dict[tuple[str, str, str], list[str]] = {}
        for grant in role.grants:
            if grant.principal != role.principals[0]:
                continue
            key = (grant.resource, grant.name, grant.pattern)
            rows.setdefault(key, []).append(grant.operation)
        cells = []
        for (resource, name, pattern), operations in rows.items():
            target = (
                "cluster"
                if resource == "cluster"
                else f"{resource} `{name}{'*' if pattern == 'prefixed' else ''}`"
            )
            cells.append(f"{target}: {', '.join(operations)}")
        who = ", ".join(f"`{p}`" for p in role.principals)
        lines.append(f"| {who} | {role.about} | {'<br>'.join(cells)} |")
    return "\n".join(lines)


def _star(acl: ACL) -> str:
    return "*" if acl.resource_pattern.pattern_type == ACLResourcePatternType.PREFIXED else ""


def _describe(acls: Iterable[ACL]) -> str:
    return "\n".join(
        f"  {a.principal:<32} {a.operation.name:<17} {a.resource_pattern.resource_type.name.lower():<8} "
        f"{a.resource_pattern.resource_name}{_star(a)}"
        for a in acls
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hubstream.kafka_security",
        description="Kafka ACLs from deploy/local/kafka/acls.json, "
        "applied as admin over the secure listener.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    apply = commands.add_parser(
        "apply",
        help="make the broker's ACLs on the declared resources exactly those in the file",
        description="Create the declared ACLs and delete any other ACL on the same resources, "
        "for one topic prefix (default HUBSTREAM_TOPIC_PREFIX, usually empty).",
    )
    apply.add_argument(
        "--prefix", default=None, help="topic/group name prefix (default: HUBSTREAM_TOPIC_PREFIX)"
    )
    apply.add_argument("--file", type=Path, default=ACL_FILE, help=f"ACL file (default {ACL_FILE})")
    show = commands.add_parser("show", help="print the ACLs the file declares, without connecting")
    show.add_argument("--prefix", default="", help="topic/group name prefix")
    show.add_argument("--file", type=Path, default=ACL_FILE)
    table = commands.add_parser("table", help="print the grants as a Markdown table")
    table.add_argument("--file", type=Path, default=ACL_FILE)
    args = parser.parse_args(argv)
    try:
        if args.command == "apply":
            applied = apply_from_file(args.file, args.prefix)
            print(f"{len(applied)} ACLs in place (no others on the declared resources):")
            print(_describe(applied))
        elif args.command == "show":
            print(_describe(declared_acls(args.prefix, args.file)))
        else:
            print(markdown_table(args.file))
    except SecurityConfigError as exc:
        print(f"kafka_security: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
