"""Who is signed in, and what each kind of user may do: pure functions of the identity
provider's claims, so that every route's rule is one line of a table with its own tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AUTHORITIES = {
    "E06000016": "Leicester City Council",
    "E10000018": "Leicestershire County Council",
    "E06000017": "Rutland County Council",
}

# The realm role that makes each kind of user, strongest first: a person holding two is the first.
KINDS = (
    ("hub-manager", "manager"),
    ("hub-practitioner", "practitioner"),
    ("analyst", "analyst"),
    ("auditor", "auditor"),
)

# What each kind of user may do. A route names its permission; anyone else gets 403.
MAY = {
    "see_queue": {"practitioner", "manager", "analyst"},
    "see_concern": {"practitioner", "manager", "analyst"},
    "read_narrative": {"practitioner", "manager"},
    "triage": {"practitioner", "manager"},
    "see_child": {"practitioner", "manager"},
    "decide": {"practitioner", "manager"},
    "see_access_log": {"auditor"},
}


class NotAllowed(Exception):
    """A signed-in user without the right for what they asked (HTTP 403)."""


@dataclass(frozen=True)
class User:
    username: str
    name: str
    kind: str  # manager, practitioner, analyst or auditor
    authority: str | None  # a practitioner's own authority (code); None for the others

    @property
    def db_role(self) -> str:
        """The PostgreSQL role the web application takes for this user's requests."""
        if self.kind == "practitioner":
            assert self.authority is not None
            return f"hub_authority_{self.authority.lower()}"
        return f"hub_{self.kind}"

    @property
    def authority_name(self) -> str:
        return AUTHORITIES[self.authority] if self.authority else "every authority"

    def may(self, permission: str) -> bool:
        return self.kind in MAY[permission]

    def require(self, permission: str) -> None:
        if not self.may(permission):
            raise NotAllowed(f"{self.username} ({self.kind}) may not {permission.replace('_', ' ')}")

    def to_session(self) -> dict[str, Any]:
        return {"username": self.username, "name": self.name, "kind": self.kind, "authority": self.authority}

    @classmethod
    def from_session(cls, data: Mapping[str, Any]) -> User:
        return cls(str(data["username"]), str(data["name"]), str(data["kind"]), data.get("authority"))


class NoAccess(ValueError):
    """Signed in at the identity provider, but with no role or authority this service knows."""


def user_from_claims(claims: Mapping[str, Any]) -> User:
    """The user an ID token (or userinfo) describes: ``realm_access.roles`` and ``authority``."""
    username = str(claims.get("preferred_username") or claims.get("sub") or "")
    if not username:
        raise NoAccess("the identity provider named no user")
    name = str(claims.get("name") or username)
    roles = set((claims.get("realm_access") or {}).get("roles") or ())
    kind = next((kind for role, kind in KINDS if role in roles), None)
    if kind is None:
        raise NoAccess(f"{username} holds none of the roles {', '.join(r for r, _ in KINDS)}")
    authority = None
    if kind == "practitioner":
        raw = claims.get("authority")
        given = [raw] if isinstance(raw, str) else list(raw or ())
        known = [a for a in given if a in AUTHORITIES]
        if len(known) != 1:
            raise NoAccess(
                f"{username} is a practitioner, who works one authority's children: the account names "
                f"{len(known)} known authorities ({', '.join(map(str, given)) or 'none'})"
            )
        authority = known[0]
    return User(username, name, kind, authority)
