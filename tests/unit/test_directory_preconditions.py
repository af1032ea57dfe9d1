"""What the target must allow before ``directory apply`` writes anything (each problem once),
and the identity map of an apply that was refused something (only what exists)."""

from __future__ import annotations

from typing import Any

from ad_schema_fixture import ad_schema

from mailferry.engine.directory import accounts_csv, identity_rows
from mailferry.formats.ldap_schema import parse_schema
from mailferry.model.directory import Person
from mailferry.plan.directory import (
    CreateUser,
    DirectoryPlan,
    MergeContact,
    Precondition,
    check_preconditions,
    match_people,
    plan_directory,
)

NEW = "OU=Migrated,DC=tgt,DC=test"


def src(name: str, **kw: Any) -> Person:
    kw.setdefault("proxy_addresses", (f"SMTP:{name.lower()}@old.test",))
    kw.setdefault("login", name.lower())
    return Person(f"CN={name},OU=Staff,DC=src,DC=test", "user", **kw)


def plan_for(people: list[Person], target: list[Person] = [], **kw: Any) -> DirectoryPlan:  # noqa: B006
    args: dict[str, Any] = {
        "target_container": NEW,
        "create_template": {},
        "dialect": "ad",
        "mail_attrs_template": {},
        "lock_marker": None,
        "upn_suffix": "tgt.test",
    }
    args.update(kw)
    return plan_directory(match_people(people, target, ["sid", "x500", "smtp", "login"]), **args)


def check(plan: DirectoryPlan, **kw: Any) -> list[Precondition]:
    args: dict[str, Any] = {
        "dialect": "ad",
        "target_container": NEW,
        "container_exists": True,
        "child_classes": ["user", "contact", "group"],
        "schema": ad_schema(),
        "lock_marker": None,
    }
    args.update(kw)
    return check_preconditions(plan, **args)


def failed(pre: list[Precondition]) -> list[str]:
    return [p.message for p in pre if p.ok is False]


def test_everything_allowed() -> None:
    pre = check(plan_for([src("a"), src("b")]))
    assert failed(pre) == []
    assert {p.check for p in pre if p.ok} == {"container", "rights", "schema"}


def test_a_missing_container_is_one_problem_whatever_the_number_of_people() -> None:
    pre = check(plan_for([src(f"p{i}") for i in range(50)]), container_exists=False)
    (only,) = failed(pre)
    assert only.startswith(f"target_container {NEW} does not exist")


def test_no_right_to_create_users_in_the_container() -> None:
    (only,) = failed(check(plan_for([src("a")]), child_classes=["contact"]))
    assert "may not create user entries" in only
    unknown = check(plan_for([src("a")]), child_classes=None)  # OpenLDAP does not say
    assert failed(unknown) == [] and any(p.ok is None and "not checked" in p.message for p in unknown)
    # Nothing to create: the right does not matter.
    t = Person("CN=A,OU=Users,DC=tgt,DC=test", "user", login="a", proxy_addresses=("SMTP:a@old.test",))
    assert failed(check(plan_for([src("a")], [t]), child_classes=[])) == []


def test_an_attribute_the_schema_lacks_is_named_once_with_its_count() -> None:
    plan = plan_for([src("a"), src("b")], create_template={"favouriteColour": "blue"})
    (only,) = failed(check(plan))
    assert only.startswith("attribute favouriteColour (2 users to create): the target schema has no such attribute")


def test_an_attribute_not_allowed_for_the_class_or_written_only_by_the_server() -> None:
    plan = plan_for([src("a")], create_template={"notes": "x", "whenCreated": "20240101000000.0Z"})
    got = failed(check(plan))
    assert any(m.startswith("attribute notes (1 users to create): the target schema does not allow it") for m in got)
    assert any(
        m.startswith("attribute whenCreated (1 users to create): the target schema lets only the server") for m in got
    )
    assert len(got) == 2


def test_an_unknown_object_class() -> None:
    plan = plan_for([src("a")], create_template={"objectClass": "top person organizationalPerson user exchPerson"})
    assert failed(check(plan)) == [
        "object class exchPerson (of 1 users to create): the target schema has no such class"
    ]


def test_changes_to_matched_entries_are_checked_against_their_own_classes() -> None:
    t = Person(
        "CN=A,OU=Users,DC=tgt,DC=test", "user", login="a", mail="a@tgt.test",
        object_classes=("top", "person", "organizationalPerson", "contact"),
    )  # fmt: skip
    s = src("a", proxy_addresses=("SMTP:a@old.test",))
    plan = plan_for([s], [t], mail_attrs_template={"sAMAccountName": "${login}x"})
    (only,) = failed(check(plan, people=[t]))
    assert "attribute sAMAccountName (1 mail attribute changes)" in only and "contact" in only


def test_unreadable_schema_is_said_not_silently_passed() -> None:
    pre = check(plan_for([src("a")]), schema=None)
    assert failed(pre) == [] and any(p.check == "schema" and p.ok is None for p in pre)


LDAP = parse_schema(
    [
        "( 2.5.4.3 NAME 'cn' )", "( 2.5.4.4 NAME 'sn' )", "( 0.9.2342.19200300.100.1.1 NAME 'uid' )",
        "( 0.9.2342.19200300.100.1.3 NAME 'mail' )", "( 2.16.840.1.113730.3.1.4 NAME 'employeeType' )",
        "( 9.9.1 NAME 'mailAlternateAddress' )",
        "( 1.3.6.1.4.1.42.2.27.8.1.17 NAME 'pwdAccountLockedTime' NO-USER-MODIFICATION USAGE directoryOperation )",
    ],
    [
        "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )",
        "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) )",
        "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL )",
        "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL MAY ( uid $ mail ) )",
        "( 9.9.2 NAME 'mailAlternateRecipient' SUP top AUXILIARY MAY mailAlternateAddress )",
    ],
)  # fmt: skip


def generic(lock: dict[str, str], schema: Any = LDAP) -> list[Precondition]:
    classes = "top person organizationalPerson inetOrgPerson mailAlternateRecipient"
    plan = plan_for([src("a")], dialect="generic", lock_marker=lock, create_template={"objectClass": classes})
    return check(plan, dialect="generic", lock_marker=lock, schema=schema, child_classes=None)


def test_the_lock_marker_must_be_allowed() -> None:
    assert (
        "lock marker favouriteLock: the target schema has no such attribute"
        in failed(generic({"favouriteLock": "x"}))[0]
    )
    (only,) = failed(generic({"employeeType": "locked"}))  # inetOrgPerson here lacks employeeType
    assert only.startswith("lock marker employeeType: not allowed for object classes")
    ok = generic({"pwdAccountLockedTime": "000001010000Z"})  # ppolicy's operational attribute
    assert failed(ok) == [] and any(p.check == "lock marker" and "operational" in p.message for p in ok)


# --------------------------------------------------------------- the identity map of an apply


def test_identity_map_and_accounts_hold_only_what_exists() -> None:
    a, b = src("a"), src("b")
    contact = Person("CN=B (ext),OU=Users,DC=tgt,DC=test", "contact", mail="b@old.test")
    t = Person("CN=T,OU=Users,DC=tgt,DC=test", "user", login="t", proxy_addresses=("SMTP:a@old.test",))
    plan = plan_for([a, b], [t, contact])
    kinds = [type(x).__name__ for x in plan.actions]
    assert kinds == ["CreateUser", "MergeContact"]  # b created and its contact merged; a matched, nothing to do
    refused = {0: "refused", 1: "not attempted"}
    rows = identity_rows(plan, refused)
    assert [r["source_login"] for r in rows] == ["a"]  # b's user does not exist: not in the map
    assert accounts_csv(rows) == "source_user,target_user\na,t\n"
    done = identity_rows(plan, {0: "done", 1: "refused"})
    assert [r["how"] for r in done] == [f"created; contact {contact.dn} not merged (refused)", "matched by smtp"]
    assert identity_rows(plan) == identity_rows(plan, {0: "done", 1: "done"})
    assert isinstance(plan.actions[0], CreateUser) and isinstance(plan.actions[1], MergeContact)
