"""Who may do what on the hub's pages: the claims of the identity provider, and the table of rights."""

from __future__ import annotations

import pytest

from web.people import MAY, NoAccess, NotAllowed, User, user_from_claims


def claims(*roles: str, authority: object = ("E06000016",), username: str = "sam") -> dict[str, object]:
    return {
        "preferred_username": username,
        "name": "Sam Smith",
        "realm_access": {"roles": [*roles, "offline_access"]},
        "authority": authority,
    }


def test_a_practitioner_works_one_authority_as_its_database_role() -> None:
    user = user_from_claims(claims("hub-practitioner"))
    assert (user.kind, user.authority, user.db_role) == (
        "practitioner",
        "E06000016",
        "hub_authority_e06000016",
    )
    assert user.authority_name == "Leicester City Council"


@pytest.mark.parametrize(
    ("role", "kind", "db_role"),
    [
        ("hub-manager", "manager", "hub_manager"),
        ("analyst", "analyst", "hub_analyst"),
        ("auditor", "auditor", "hub_auditor"),
    ],
)
def test_the_other_kinds_see_every_authority(role: str, kind: str, db_role: str) -> None:
    user = user_from_claims(claims(role, authority=["E06000016", "E10000018", "E06000017"]))
    assert (user.kind, user.authority, user.db_role) == (kind, None, db_role)
    assert user.authority_name == "every authority"


def test_the_strongest_role_wins() -> None:
    assert user_from_claims(claims("auditor", "hub-manager")).kind == "manager"


@pytest.mark.parametrize(
    ("given", "why"),
    [
        (claims(), "none of the roles"),
        (claims("hub-practitioner", authority=[]), "0 known authorities"),
        (claims("hub-practitioner", authority=["E06000016", "E10000018"]), "2 known authorities"),
        (claims("hub-practitioner", authority=["E99999999"]), "0 known authorities (E99999999)"),
        ({"realm_access": {"roles": ["analyst"]}}, "named no user"),
    ],
)
def test_an_account_without_a_known_role_or_one_authority_has_no_access(
    given: dict[str, object], why: str
) -> None:
    with pytest.raises(NoAccess, match=why.replace("(", r"\(").replace(")", r"\)")):
        user_from_claims(given)


def test_a_single_authority_may_arrive_as_a_string() -> None:
    assert user_from_claims(claims("hub-practitioner", authority="E06000017")).authority == "E06000017"


@pytest.mark.parametrize("permission", sorted(MAY))
def test_every_right_is_refused_to_every_kind_not_listed(permission: str) -> None:
    for kind in ("practitioner", "manager", "analyst", "auditor"):
        user = User("u", "U", kind, "E06000016" if kind == "practitioner" else None)
        assert user.may(permission) == (kind in MAY[permission])
        if not user.may(permission):
            with pytest.raises(NotAllowed):
                user.require(permission)


def test_an_auditor_sees_the_access_log_and_no_child_and_an_analyst_no_narrative() -> None:
    auditor, analyst = User("a", "A", "auditor", None), User("b", "B", "analyst", None)
    assert auditor.may("see_access_log") and not auditor.may("see_child") and not auditor.may("see_queue")
    assert analyst.may("see_concern") and not analyst.may("read_narrative") and not analyst.may("triage")


def test_the_session_holds_the_user_and_gives_it_back() -> None:
    user = user_from_claims(claims("hub-practitioner"))
    assert User.from_session(user.to_session()) == user


def test_a_narrative_is_decrypted_only_for_a_role_that_reads_narratives() -> None:
    from hubstream.protect import encrypt_narrative
    from web.app import _narrative

    sealed = encrypt_narrative("Seen with an older man")
    assert _narrative(User("p", "P", "practitioner", "E06000016"), sealed) == "Seen with an older man"
    assert _narrative(User("m", "M", "manager", None), sealed) == "Seen with an older man"
    assert (
        _narrative(User("a", "A", "analyst", None), sealed)
        == "(withheld: your role does not read narratives)"
    )
    assert _narrative(User("p", "P", "practitioner", "E06000016"), "enc:v1:AAAA") == (
        "(this narrative cannot be decrypted with this deployment's key)"
    )
    assert _narrative(User("p", "P", "practitioner", "E06000016"), None) is None
