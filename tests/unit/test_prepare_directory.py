"""Directory preparation, the pure part: what the target lacks for a project's directory plan,
who adds it, and the LDIF (mailferry.plan.prepare)."""

from __future__ import annotations

import re
from typing import Any

from ad_schema_fixture import ATTRIBUTES, CLASSES, RULES, ad_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.formats.ldap_schema import Schema, parse_schema
from mailferry.plan.directory import CreateUser
from mailferry.plan.prepare import (
    AUX_CLASS,
    TargetFacts,
    ad_oid,
    check_preconditions_of,
    openldap_oid,
    prepare,
    probe_plan,
)

OU = "ou=Migrated,dc=tgt,dc=test"
GENERIC_ATTRS = [
    f"( 2.5.4.{i} NAME '{n}' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )"
    for i, n in enumerate(["cn", "sn", "givenName", "mail", "uid", "employeeType", "displayName", "title", "ou"], 100)
] + ["( 9.9.1 NAME 'mailAlternateAddress' SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )",
     "( 1.3.6.1.4.1.42.2.27.8.1.17 NAME 'pwdAccountLockedTimeX' SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 )",
     "( 9.9.2 NAME 'entryUUID' SYNTAX 1.3.6.1.1.16.1 NO-USER-MODIFICATION USAGE directoryOperation )"]  # fmt: skip
GENERIC_CLASSES = [
    "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )",
    "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) )",
    "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL MAY ( title $ ou ) )",
    "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL "
    "MAY ( givenName $ mail $ uid $ employeeType $ displayName ) )",
    "( 9.9.3 NAME 'mailAlternateRecipient' SUP top AUXILIARY MAY mailAlternateAddress )",
]
CREATE_CLASSES = "top person organizationalPerson inetOrgPerson mailAlternateRecipient"


def generic_schema(extra_attrs: list[str] = [], extra_classes: list[str] = []) -> Schema:  # noqa: B006
    return parse_schema(GENERIC_ATTRS + extra_attrs, GENERIC_CLASSES + extra_classes)


def generic_plan(**create: str) -> Any:
    return probe_plan(
        dialect="generic",
        target_container=OU,
        create_template={"objectClass": CREATE_CLASSES, **create},
        mail_attrs_template={},
        lock_marker={"employeeType": "locked"},
        alias_attribute="mailAlternateAddress",
    )


def facts(schema: Schema | None, *, server: Any = "openldap", chain: Any = None, child: Any = None,
          config: bool = True, dialect: Any = "generic", container: str = OU) -> TargetFacts:  # fmt: skip
    return TargetFacts(
        server=server,
        dialect=dialect,
        naming_context="dc=tgt,dc=test",
        container=container,
        chain=chain if chain is not None else [(container, True)],
        child_classes=child,
        schema=schema,
        schema_config=config,
        bind_dn="cn=admin,dc=tgt,dc=test",
    )


def test_the_probe_plan_writes_what_the_project_file_names() -> None:
    plan = generic_plan(favouriteColour="${login}-blue")
    (create,) = [a for a in plan.actions if isinstance(a, CreateUser)]
    assert create.dn == f"cn=Probe Person,{OU}"
    assert {"favouriteColour", "employeeType", "mailAlternateAddress", "uid", "mail"} <= set(create.attrs)
    assert create.attrs["objectClass"] == CREATE_CLASSES.split()


def test_a_prepared_generic_target_has_no_steps_and_every_precondition_holds() -> None:
    f = facts(generic_schema())
    plan = generic_plan()
    assert prepare(plan, f, {"employeeType": "locked"}).steps == []
    pre = check_preconditions_of(plan, f, {"employeeType": "locked"})
    assert [p for p in pre if p.ok is False] == []
    # The made-up matched person is not counted: no "rights to change 1 existing entries".
    assert not any("existing entries" in p.message for p in pre)


def test_missing_attribute_gets_an_olc_schema_with_an_auxiliary_class_and_a_project_file_step() -> None:
    prep = prepare(generic_plan(favouriteColour="blue"), facts(generic_schema()), {"employeeType": "locked"})
    schema_step, project_step = prep.steps
    assert (schema_step.kind, schema_step.by) == ("schema", "mailferry")
    assert f"NAME '{AUX_CLASS}'" in schema_step.ldif and "MAY ( favouriteColour )" in schema_step.ldif
    assert f"olcAttributeTypes: ( {openldap_oid('favouriteColour')} NAME 'favouriteColour'" in schema_step.ldif
    assert schema_step.ldif.startswith("dn: cn=mailferry-") and ",cn=schema,cn=config\n" in schema_step.ldif
    assert (project_step.kind, project_step.by) == ("project file", "admin")
    assert f"add {AUX_CLASS} to [directory.create] objectClass" in project_step.fix
    assert prep.ldif == schema_step.ldif and prep.admin_ldif == ""


def test_an_unknown_class_named_in_the_template_is_defined_to_allow_the_attributes() -> None:
    plan = generic_plan(objectClass=CREATE_CLASSES + " corpPerson", favouriteColour="blue")
    (step,) = prepare(plan, facts(generic_schema()), {"employeeType": "locked"}).steps
    assert "NAME 'corpPerson'" in step.ldif and "AUXILIARY MAY ( favouriteColour )" in step.ldif
    assert AUX_CLASS not in step.ldif


def test_without_cn_config_the_schema_is_the_admins_with_the_ldif() -> None:
    (step, _project) = prepare(
        generic_plan(favouriteColour="blue"), facts(generic_schema(), config=False), {"employeeType": "locked"}
    ).steps
    assert step.by == "admin" and "ldapi:///" in step.fix and "olcAttributeTypes" in step.ldif


def test_an_overlay_lock_marker_and_a_server_only_attribute_are_the_admins() -> None:
    plan = probe_plan(dialect="generic", target_container=OU, create_template={"objectClass": CREATE_CLASSES},
                      mail_attrs_template={"entryUUID": "x"}, lock_marker={"pwdAccountLockedTime": "000001010000Z"},
                      alias_attribute="mailAlternateAddress")  # fmt: skip
    steps = prepare(plan, facts(generic_schema()), {"pwdAccountLockedTime": "000001010000Z"}).steps
    kinds = {(s.kind, s.subject): s for s in steps}
    assert "ppolicy" in kinds[("lock marker", "pwdAccountLockedTime")].fix
    assert "remove entryUUID" in kinds[("project file", "entryUUID")].fix
    assert all(s.by == "admin" for s in steps) and not any(s.kind == "schema" for s in steps)


def test_missing_containers_are_added_parent_first_when_the_server_does_not_say() -> None:
    deep = "ou=Migrated,ou=People,dc=tgt,dc=test"
    chain = [(deep, False), ("ou=People,dc=tgt,dc=test", False), ("dc=tgt,dc=test", True)]
    prep = prepare(generic_plan(), facts(generic_schema(), chain=chain, container=deep), {"employeeType": "locked"})
    assert [(s.kind, s.subject, s.by) for s in prep.steps] == [
        ("container", "ou=People,dc=tgt,dc=test", "mailferry"),
        ("container", deep, "mailferry"),
    ]
    assert prep.ldif.index("dn: ou=People") < prep.ldif.index(f"dn: {deep}")
    assert "changetype: add\nobjectClass: organizationalUnit\nou: People\n" in prep.ldif


def test_containers_where_the_account_may_not_create_or_nothing_exists_are_the_admins() -> None:
    chain = [(OU, False), ("dc=tgt,dc=test", True)]
    (step,) = prepare(generic_plan(), facts(generic_schema(), chain=chain, child=["user"], server="ad",
                                            dialect="generic"), {"employeeType": "locked"}).steps  # fmt: skip
    assert step.by == "admin" and "Delegate Control" in step.fix and "organizationalUnit" in step.fix
    (nowhere,) = prepare(generic_plan(), facts(generic_schema(), chain=[(OU, False), ("dc=tgt,dc=test", False)]),
                         {"employeeType": "locked"}).steps  # fmt: skip
    assert nowhere.by == "admin" and "correct target_container" in nowhere.fix
    cn_chain = [("cn=Staff,dc=tgt,dc=test", False), ("dc=tgt,dc=test", True)]
    (odd,) = prepare(generic_plan(), facts(generic_schema(), chain=cn_chain, container="cn=Staff,dc=tgt,dc=test"),
                     {"employeeType": "locked"}).steps  # fmt: skip
    assert odd.by == "admin" and "not an organizational unit" in odd.what


def test_no_right_to_create_users_in_an_existing_container() -> None:
    plan = probe_plan(dialect="ad", target_container=OU, create_template={}, mail_attrs_template={},
                      lock_marker=None, alias_attribute="proxyAddresses")  # fmt: skip
    (step,) = prepare(plan, facts(ad_schema(), server="ad", dialect="ad", child=["contact"])).steps
    assert (step.kind, step.by) == ("rights", "admin") and "may not create user entries" in step.what
    assert "can't grant itself" in step.what


def test_ad_schema_extension_is_the_schema_admins_and_goes_to_mail_recipient() -> None:
    plan = probe_plan(dialect="ad", target_container="OU=Migrated,DC=tgt,DC=test", create_template={},
                      mail_attrs_template={"favouriteColour": "blue", "notes": "x"}, lock_marker=None,
                      alias_attribute="proxyAddresses")  # fmt: skip
    f = facts(ad_schema(), server="ad", dialect="ad", child=["user"], container="OU=Migrated,DC=tgt,DC=test")
    (step,) = prepare(plan, f).steps
    assert (step.kind, step.by) == ("schema", "admin")
    assert "Schema Admins" in step.fix and "schema master" in step.fix and "can't be undone" in step.fix
    assert "dn: CN=favouriteColour,CN=Schema,CN=Configuration,dc=tgt,dc=test" in step.ldif
    assert f"attributeID: {ad_oid('favouriteColour')}" in step.ldif
    # notes exists (on contact) but user may not hold it: only added to Mail-Recipient.
    assert "dn: CN=notes," not in step.ldif
    assert "mayContain: favouriteColour\nmayContain: notes\n" in step.ldif
    assert step.ldif.count("schemaUpdateNow: 1") == 2
    assert "PrepareSchema" not in step.fix


def test_an_exchange_attribute_is_left_to_exchanges_own_schema_preparation() -> None:
    plan = probe_plan(
        dialect="ad",
        target_container=OU,
        create_template={},
        lock_marker=None,
        mail_attrs_template={"msExchHomeServerName": "/o=New"},
        alias_attribute="proxyAddresses",
    )
    (step,) = prepare(plan, facts(ad_schema(), server="ad", dialect="ad", child=["user"])).steps
    assert "msExchHomeServerName belongs to Exchange's schema" in step.fix and "/PrepareSchema" in step.fix


_NAME = st.from_regex(r"[a-z][a-zA-Z0-9]{2,15}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(_NAME, min_size=1, max_size=4, unique_by=str.lower))
def test_after_the_ldif_is_applied_only_the_project_file_is_left(names: list[str]) -> None:
    """Property: the schema LDIF makes the target allow what the plan writes; prepared again, no
    schema step is left (only naming the auxiliary class in the project file)."""
    known = {a.lower() for a in ["cn", "sn", "givenname", "mail", "uid", "employeetype", "displayname", "title",
                                 "ou", "mailalternateaddress", "objectclass", "top"]}  # fmt: skip
    names = [n for n in names if n.lower() not in known and n.lower() != AUX_CLASS.lower()]
    if not names:
        return
    plan = generic_plan(**{n: "v" for n in names})
    (step, _project) = prepare(plan, facts(generic_schema()), {"employeeType": "locked"}).steps
    attrs = re.findall(r"^olcAttributeTypes: (.*)$", step.ldif, re.M)
    classes = re.findall(r"^olcObjectClasses: (.*)$", step.ldif, re.M)
    assert len(attrs) == len(names) and len(set(openldap_oid(n) for n in names)) == len(names)
    after = generic_schema(attrs, classes)
    steps = prepare(plan, facts(after), {"employeeType": "locked"}).steps
    assert [s.kind for s in steps] == ["project file"]
    named = generic_plan(objectClass=CREATE_CLASSES + " " + AUX_CLASS, **{n: "v" for n in names})
    assert prepare(named, facts(after), {"employeeType": "locked"}).steps == []
    assert [p for p in check_preconditions_of(named, facts(after), {"employeeType": "locked"}) if p.ok is False] == []


def test_oids_are_stable_distinct_and_numeric() -> None:
    assert openldap_oid("favouriteColour") == openldap_oid("FavouriteColour")
    assert openldap_oid("a1") != openldap_oid("a2") and ad_oid("a1") != ad_oid("a2")
    for oid in (openldap_oid("x"), ad_oid("x")):
        assert re.fullmatch(r"\d+(\.\d+)+", oid)
    assert ad_oid("x").startswith("1.2.840.113556.1.8000.2554.")


def test_ad_fixture_names_are_untouched() -> None:
    assert parse_schema(ATTRIBUTES, CLASSES, RULES).attribute("proxyAddresses") is not None
