"""Directory preparation (what Exchange's ForestPrep and DomainPrep did): what the target directory
lacks for the directory plan, and the LDIF that adds it.

Pure: no I/O. The engine (:mod:`mailferry.engine.prepare`) reads what the target says of itself
(:class:`TargetFacts`) and carries out the steps mailferry may take.

What the plan writes is known from the project file alone, whoever the people are:
:func:`probe_plan` plans one made-up person to create and one matched person with the directory
planner itself, so the attributes (templates, addresses, lock marker, login and names) and object
classes are exactly those a real plan writes. Attributes a real plan copies from the source
people (title, phone numbers, ...) depend on the data: ``directory plan`` checks those, and drops
those the target schema lacks with a note. The probe plan's preconditions
(:func:`~mailferry.plan.directory.check_preconditions`) are the ``directory`` area of ``check``.

What is missing, and who adds it (:func:`prepare`):

==============================================  ===============================================
missing                                         step
==============================================  ===============================================
``target_container`` (and missing parents)      ``container``: an organizationalUnit entry each,
                                                by mailferry when the bind account may create
                                                one in the nearest existing parent (AD says so:
                                                allowedChildClassesEffective; OpenLDAP does not
                                                say: tried); else by the admin. A container
                                                named by other than ``ou=``: the admin.
the right to create users in the container      ``rights``: the admin (no account can grant
                                                itself rights)
attributes and object classes (OpenLDAP)        ``schema``: one ``olcSchemaConfig`` entry under
                                                ``cn=schema,cn=config`` (attribute types, and an
                                                auxiliary class that allows them on created
                                                users), by mailferry when the bind account sees
                                                cn=config, else by the admin (``ldapadd -Y
                                                EXTERNAL -H ldapi:///``); an auxiliary class not
                                                in ``[directory.create] objectClass``: the
                                                ``project file`` step says to add it
attributes (Active Directory)                   ``schema``: attributeSchema entries and their
                                                addition to Mail-Recipient (the auxiliary class
                                                of user, as Exchange's schema does), always by
                                                the admin: it needs the schema master and Schema
                                                Admins, and can't be undone
a lock marker of the ppolicy overlay            ``lock marker``: the admin loads the overlay
an attribute only the server may write          ``project file``: the admin picks another one
==============================================  ===============================================

New attribute types and classes get OIDs under ``2.25`` (X.667: an OID made of a UUID, which
anyone may use without registering an arc) on OpenLDAP, and under Microsoft's documented arc for
organisations without their own, ``1.2.840.113556.1.8000.2554``, on AD; both are derived from
the name, so the same LDIF comes out on every run.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mailferry.formats.ldap_schema import Schema
from mailferry.formats.ldif import dn_key, entry_to_ldif, parent_dn
from mailferry.model.directory import Person
from mailferry.plan.directory import (
    AddAddresses,
    CreateUser,
    Dialect,
    DirectoryPlan,
    Outcome,
    Precondition,
    SetMailAttributes,
    check_preconditions,
    plan_directory,
)

__all__ = [
    "AUX_CLASS",
    "Preparation",
    "Step",
    "TargetFacts",
    "ad_oid",
    "check_preconditions_of",
    "openldap_oid",
    "prepare",
    "probe_plan",
]

Server = Literal["ad", "openldap", "other"]
By = Literal["mailferry", "admin"]

# The auxiliary class mailferry defines on OpenLDAP to allow the attributes it adds.
AUX_CLASS = "mailferryRecipient"
_DIRECTORY_STRING = "1.3.6.1.4.1.1466.115.121.1.15"
_UUID_NS = uuid.UUID("4f7a3c1e-5d2b-4c1a-9e0f-6b8d2a7c9e31")  # mailferry's namespace for derived OIDs
# Lock markers that belong to an overlay: defining them by hand would not make them work.
_OVERLAY_ATTRIBUTES = {"pwdaccountlockedtime": "ppolicy"}


@dataclass(frozen=True, slots=True)
class TargetFacts:
    """What the target directory says of itself (read by the engine)."""

    server: Server  # "ad": Active Directory / Samba AD; "openldap"; "other"
    dialect: Dialect
    naming_context: str
    container: str  # target_container
    # target_container and each parent up to the naming context (or the root), nearest first:
    # (dn, exists); the list stops at the first one that exists.
    chain: Sequence[tuple[str, bool]]
    child_classes: Collection[str] | None  # allowedChildClassesEffective of the nearest existing entry
    schema: Schema | None
    schema_config: bool = False  # OpenLDAP: the bind account sees cn=schema,cn=config
    bind_dn: str = ""

    @property
    def container_exists(self) -> bool:
        return bool(self.chain) and self.chain[0][1]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the target lacks. ``by``: who adds it (mailferry with ``--apply``, or the admin);
    ``what``: what is missing and what breaks without it; ``fix``: the next step; ``ldif``: the
    change records that add it (``ldapmodify`` input), when there are any."""

    kind: str  # "container", "rights", "schema", "lock marker", "project file"
    subject: str
    by: By
    what: str
    fix: str
    ldif: str = ""


@dataclass(slots=True)
class Preparation:
    steps: list[Step] = field(default_factory=list)

    @property
    def mine(self) -> list[Step]:
        """What ``directory prepare --apply`` adds."""
        return [s for s in self.steps if s.by == "mailferry"]

    @property
    def admins(self) -> list[Step]:
        return [s for s in self.steps if s.by == "admin"]

    @property
    def ldif(self) -> str:
        """The LDIF of what mailferry adds, in the order it adds it."""
        return "\n".join(s.ldif for s in self.mine if s.ldif)

    @property
    def admin_ldif(self) -> str:
        return "\n".join(s.ldif for s in self.admins if s.ldif)


# ------------------------------------------------------------------------------------ probe plan

_PROBE_SOURCE = "CN=mailferry probe,OU=probe,DC=probe,DC=invalid"


def probe_plan(
    *,
    dialect: Dialect,
    target_container: str,
    create_template: Mapping[str, str],
    mail_attrs_template: Mapping[str, str],
    lock_marker: Mapping[str, str] | None,
    alias_attribute: str,
    keep_old_addresses: bool = True,
) -> DirectoryPlan:
    """The plan for one made-up person to create and one made-up matched person: every attribute
    and object class a plan of this project writes whoever the people are (see the module)."""
    proxies: tuple[str, ...] = ("SMTP:probe@old.invalid", "smtp:probe.old@old.invalid")
    if dialect == "ad":
        proxies += ("X500:/o=Probe/ou=Probe/cn=Recipients/cn=probe",)
    names = {"cn": ("Probe Person",), "givenName": ("Probe",), "sn": ("Person",)}
    new = Person(_PROBE_SOURCE, "user", login="probe", mail="probe@old.invalid", proxy_addresses=proxies, attrs=names)
    old = Person(
        _PROBE_SOURCE.replace("probe,", "probe2,", 1),
        "user",
        login="probe2",
        mail="probe2@old.invalid",
        proxy_addresses=("SMTP:probe2@old.invalid", "smtp:probe2.old@old.invalid"),
        attrs={"cn": ("Probe Matched",), "givenName": ("Probe",), "sn": ("Matched",)},
    )
    there = Person(f"CN=matched probe,{target_container}", "user", login="matched", mail="matched@new.invalid")
    outcomes = [
        Outcome(new, "to_create", None, None, "probe"),
        Outcome(old, "matched", there, "login", "probe", (there.dn,)),
    ]
    return plan_directory(
        outcomes,
        target_container=target_container,
        create_template=create_template,
        keep_old_addresses=keep_old_addresses,
        dialect=dialect,
        mail_attrs_template=mail_attrs_template,
        lock_marker=lock_marker or None,
        alias_attribute=alias_attribute,
        upn_suffix="probe.invalid",
    )


def check_preconditions_of(
    plan: DirectoryPlan, facts: TargetFacts, lock_marker: Mapping[str, str] | None
) -> list[Precondition]:
    """The directory planner's own preconditions for ``plan`` (a :func:`probe_plan`) against
    ``facts``: the schema's over every write, the rights only over the creations (the probe's
    matched person is made up: the rights to change real entries are ``directory plan``'s), and
    without the probe's counts ("1 users to create" says nothing of the real people)."""

    def run(p: DirectoryPlan) -> list[Precondition]:
        return check_preconditions(
            p,
            dialect=facts.dialect,
            target_container=facts.container,
            container_exists=facts.container_exists,
            child_classes=facts.child_classes if facts.container_exists else None,
            schema=facts.schema,
            lock_marker=lock_marker or None,
        )

    rights = [p for p in run(DirectoryPlan(actions=list(_creates(plan)))) if p.check == "rights"]
    out: list[Precondition] = []
    for p in run(plan):
        if p.check == "rights":
            out += rights
            rights = []
        else:
            out.append(Precondition(p.check, p.ok, _PROBE_COUNT.sub(r"\1", p.message)))
    return out + rights


_PROBE_COUNT = re.compile(r"\b1 (users to create|address additions|mail attribute changes)")


# ------------------------------------------------------------------------------------- prepare


def openldap_oid(name: str) -> str:
    """``2.25.<a UUID as an integer>`` derived from ``name`` (X.667)."""
    return f"2.25.{uuid.uuid5(_UUID_NS, 'openldap:' + name.lower()).int}"


def ad_oid(name: str) -> str:
    """An OID under Microsoft's arc for organisations without their own (the 1.2.840.113556.1.8000.2554
    prefix, then the GUID in parts, as Microsoft's OID script makes them), derived from ``name``."""
    h = uuid.uuid5(_UUID_NS, "ad:" + name.lower()).hex
    parts = [int(h[0:4], 16), int(h[4:8], 16), int(h[8:12], 16), int(h[12:16], 16), int(h[16:20], 16),
             int(h[20:26], 16), int(h[26:32], 16)]  # fmt: skip
    return "1.2.840.113556.1.8000.2554." + ".".join(str(p) for p in parts)


def _creates(plan: DirectoryPlan) -> list[CreateUser]:
    return [a for a in plan.actions if isinstance(a, CreateUser)]


def _written(plan: DirectoryPlan) -> tuple[dict[str, str], set[str]]:
    """Every attribute the plan writes (lower case -> as spelt), and those written on created users."""
    every: dict[str, str] = {}
    on_create: set[str] = set()
    for a in plan.actions:
        names: list[str] = []
        if isinstance(a, CreateUser):
            names = [k for k in a.attrs if k.lower() != "objectclass"]
            on_create.update(k.lower() for k in names)
        elif isinstance(a, AddAddresses):
            names = [a.attribute]
        elif isinstance(a, SetMailAttributes):
            names = list(a.attrs)
        for n in names:
            every.setdefault(n.lower(), n)
    return every, on_create


def prepare(plan: DirectoryPlan, facts: TargetFacts, lock_marker: Mapping[str, str] | None = None) -> Preparation:
    """What the target lacks for ``plan`` (a :func:`probe_plan`), each a :class:`Step` (see the
    module's table); an empty preparation when the target is ready."""
    out = Preparation()
    classes = list(_creates(plan)[0].attrs.get("objectClass", [])) if _creates(plan) else []
    out.steps += _container_steps(facts, classes)
    if facts.schema is not None:
        out.steps += _schema_steps(plan, facts, classes, lock_marker or {})
    return out


def _ou_ldif(dn: str, server: Server) -> str:
    """An ``changetype: add`` record of the organizationalUnit ``dn`` (its first RDN ``ou=``)."""
    parent = parent_dn(dn)
    first = dn[: len(dn) - len(parent)].rstrip().rstrip(",") if parent else dn
    value = re.sub(r"\\([0-9a-fA-F]{2})|\\(.)", _unescape, first.split("=", 1)[1].strip())
    classes = ["top", "organizationalUnit"] if server == "ad" else ["organizationalUnit"]
    lines = entry_to_ldif(dn, {"objectClass": classes, "ou": [value]}).splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if i and not line.startswith(" ")), len(lines))
    return "".join(lines[:at]) + "changetype: add\n" + "".join(lines[at:]).rstrip("\n") + "\n"


def _unescape(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 16)) if m.group(1) else m.group(2)


def _structural(classes: Sequence[str], facts: TargetFacts) -> str:
    schema = facts.schema
    if schema is not None:
        known = [c for c in classes if (oc := schema.object_class(c)) is not None and oc.kind == "STRUCTURAL"]
        supers = {n.lower() for c in known for oc in schema.chain(_sup(schema, c)) for n in oc.names}
        for c in reversed(known):
            if c.lower() not in supers:
                return c
    return "user" if facts.dialect == "ad" else "inetOrgPerson"


def _sup(schema: Schema, name: str) -> tuple[str, ...]:
    c = schema.object_class(name)
    return c.sup if c is not None else ()


def _rights_fix(facts: TargetFacts, what: str, where: str) -> str:
    who = facts.bind_dn or "the bind account"
    if facts.server == "ad":
        how = (f"in Active Directory Users and Computers, Delegate Control of {where} to {who} for "
               f"'Create, delete and manage {what}' (or dsacls {where!r} /G '<account>:CC;{what}')")  # fmt: skip
    else:
        how = f'an ACL such as \'access to dn.subtree="{where}" by dn.exact="{who}" write\' in the server\'s config'
    return (
        f"the directory admin gives {who} the right to create {what} entries in {where}: {how}; or bind as another one"
    )


def _container_steps(facts: TargetFacts, classes: Sequence[str]) -> list[Step]:
    if facts.container_exists:
        structural = _structural(classes, facts)
        cc = facts.child_classes
        if cc is not None and structural.lower() not in {c.lower() for c in cc}:
            return [
                Step(
                    "rights",
                    facts.container,
                    "admin",
                    f"the bind account may not create {structural} entries in {facts.container}: "
                    "directory apply can't create users there (mailferry can't grant itself rights)",
                    _rights_fix(facts, structural, facts.container),
                )
            ]
        return []
    missing = [dn for dn, exists in facts.chain if not exists]
    existing = next((dn for dn, exists in facts.chain if exists), None)
    if existing is None:
        return [
            Step(
                "container",
                facts.container,
                "admin",
                f"target_container {facts.container} does not exist, nor any entry above it in the target "
                f"(its naming context is {facts.naming_context or 'unknown'}): directory apply can't create users",
                "correct target_container in the project file: a DN under the target's naming context",
            )
        ]
    steps: list[Step] = []
    odd = [dn for dn in missing if dn.split("=", 1)[0].strip().lower() != "ou"]
    if odd:
        steps.append(
            Step(
                "container",
                facts.container,
                "admin",
                f"target_container {facts.container} does not exist, and {odd[0]} is not an organizational "
                "unit (ou=): mailferry creates only those",
                f"the directory admin creates {', '.join(reversed(odd))}; or correct target_container",
            )
        )
        return steps
    cc = facts.child_classes
    may = cc is None or "organizationalunit" in {c.lower() for c in cc}
    for dn in reversed(missing):  # the parent first
        what = f"target_container {facts.container} does not exist: directory apply can't create users"
        if dn_key(dn) != dn_key(facts.container):
            what = f"{dn}, a parent of target_container {facts.container}, does not exist"
        if may:
            tried = "" if cc is not None else " (the server does not say whether the bind account may: tried)"
            steps.append(Step("container", dn, "mailferry", what + tried, "mailferry directory prepare PROJECT --apply",
                              _ou_ldif(dn, facts.server)))  # fmt: skip
        else:
            steps.append(
                Step(
                    "container",
                    dn,
                    "admin",
                    what + f"; the bind account may not create organizationalUnit entries in {existing}",
                    f"{_rights_fix(facts, 'organizationalUnit', existing)}; or the admin adds the LDIF shown",
                    _ou_ldif(dn, facts.server),
                )  # fmt: skip
            )
    return steps


def _schema_steps(
    plan: DirectoryPlan, facts: TargetFacts, classes: Sequence[str], lock: Mapping[str, str]
) -> list[Step]:
    schema = facts.schema
    assert schema is not None
    steps: list[Step] = []
    every, on_create = _written(plan)
    lock_low = {k.lower(): k for k in lock} if facts.dialect == "generic" else {}
    for low, name in lock_low.items():
        every.setdefault(low, name)
        on_create.add(low)
    undefined = sorted(
        (n for low, n in every.items() if schema.attribute(n) is None and low not in _OVERLAY_ATTRIBUTES), key=str.lower
    )
    for low, overlay in _OVERLAY_ATTRIBUTES.items():
        if low in every and schema.attribute(every[low]) is None:
            steps.append(
                Step(
                    "lock marker",
                    every[low],
                    "admin",
                    f"lock marker {every[low]}: the target has no such attribute; it is the {overlay} overlay's, and "
                    "created users could not be locked",
                    f"the directory admin loads the {overlay} overlay on the target's database "
                    f"(slapd: moduleload {overlay}, overlay {overlay}); or choose another [directory.lock] attribute",
                )
            )
    for low, name in sorted(every.items()):
        a = schema.attribute(name)
        if a is not None and not schema.user_attribute(name) and low not in lock_low:
            steps.append(
                Step(
                    "project file",
                    name,
                    "admin",
                    f"attribute {name}: the target schema lets only the server write it; apply would be refused",
                    f"remove {name} from [directory.create] / [directory.mail_attributes] in the project file",
                )
            )
    unknown_classes = [c for c in classes if schema.object_class(c) is None]
    known_classes = [c for c in classes if schema.object_class(c) is not None]
    allowed = schema.allowed(known_classes) if known_classes else frozenset()
    # Attributes defined but not allowed on created users (each is an address, template or lock value).
    refused = sorted(
        (every[low] for low in on_create if schema.user_attribute(every[low]) and low not in allowed),
        key=str.lower,
    )
    if not (undefined or refused or unknown_classes):
        return steps
    needed = sorted({*undefined, *refused}, key=str.lower)  # what an auxiliary class must allow
    if facts.server == "ad":
        steps.append(_ad_schema_step(facts, undefined, refused, unknown_classes))
        return steps
    # The auxiliary class that allows the attributes on created users: an unknown class the project
    # file names already, else mailferry's own (an earlier prepare's, when it allows them all).
    project: list[str] = []  # attributes for which the project file must name mailferry's class
    aux: str | None = unknown_classes[0] if unknown_classes else None
    if aux is None and needed:
        aux = AUX_CLASS
        n = 1
        while schema.object_class(aux) is not None:
            if {x.lower() for x in needed} <= schema.allowed([aux]):
                project, needed = list(needed), []  # defined by an earlier prepare
                break
            n += 1
            aux = f"{AUX_CLASS}{n}"
        if needed:
            project = list(needed)
    definitions = [_openldap_attribute(n) for n in undefined]
    class_defs = [_openldap_class(c, needed if c == aux else []) for c in unknown_classes]
    if aux is not None and aux not in unknown_classes and needed:
        class_defs.append(_openldap_class(aux, needed))
    if not (definitions or class_defs):
        return steps + ([_project_step(aux or AUX_CLASS, project)] if project else [])
    name = "mailferry-" + uuid.uuid5(_UUID_NS, "|".join(definitions + class_defs)).hex[:8]
    ldif = f"dn: cn={name},cn=schema,cn=config\nchangetype: add\nobjectClass: olcSchemaConfig\ncn: {name}\n"
    ldif += "".join(f"olcAttributeTypes: {d}\n" for d in definitions)
    ldif += "".join(f"olcObjectClasses: {d}\n" for d in class_defs)
    parts = []
    if undefined:
        parts.append(f"attribute{'s' if len(undefined) > 1 else ''} {', '.join(undefined)}: the target schema has none")
    if refused:
        parts.append(f"{', '.join(refused)} not allowed for object classes {' '.join(known_classes)}")
    if unknown_classes:
        parts.append(f"object class{'es' if len(unknown_classes) > 1 else ''} {', '.join(unknown_classes)} unknown")
    what = "; ".join(parts) + ": directory apply writes them, the target would refuse it"
    if facts.server == "openldap" and facts.schema_config:
        steps.append(Step("schema", name, "mailferry", what, "mailferry directory prepare PROJECT --apply", ldif))
    else:
        steps.append(
            Step(
                "schema",
                name,
                "admin",
                what + " (the bind account can't see cn=config: mailferry can't add schema)",
                "the directory admin adds the LDIF shown: ldapmodify -Y EXTERNAL -H ldapi:/// -f prepare.ldif on "
                "the server (or the same definitions in slapd.conf, then a restart)",
                ldif,
            )
        )
    if project:
        steps.append(_project_step(aux or AUX_CLASS, project))
    return steps


def _project_step(aux: str, needed: Sequence[str]) -> Step:
    return Step(
        "project file",
        aux,
        "admin",
        f"created users need the auxiliary class {aux} to hold {', '.join(needed)}",
        f"add {aux} to [directory.create] objectClass in the project file (mailferry writes only the target)",
    )


def _openldap_attribute(name: str) -> str:
    return (f"( {openldap_oid(name)} NAME '{name}' DESC 'added by mailferry directory prepare' "
            f"EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX {_DIRECTORY_STRING} )")  # fmt: skip


def _openldap_class(name: str, may: Sequence[str]) -> str:
    allowed = f" MAY ( {' $ '.join(may)} )" if may else ""
    oid = openldap_oid("class:" + name)
    return f"( {oid} NAME '{name}' DESC 'added by mailferry directory prepare' SUP top AUXILIARY{allowed} )"


def _ad_schema_step(
    facts: TargetFacts, undefined: Sequence[str], refused: Sequence[str], unknown: Sequence[str]
) -> Step:
    """AD: the attributes as attributeSchema entries, allowed on users through Mail-Recipient
    (user's auxiliary class, where Exchange's schema puts its attributes too). Unknown classes
    are not defined: the project file names a class AD doesn't have."""
    base = f"CN=Schema,CN=Configuration,{facts.naming_context}"
    ldif = ""
    for n in undefined:
        ldif += (f"dn: CN={n},{base}\nchangetype: add\nobjectClass: top\nobjectClass: attributeSchema\ncn: {n}\n"
                 f"lDAPDisplayName: {n}\nattributeID: {ad_oid(n)}\nattributeSyntax: 2.5.5.12\noMSyntax: 64\n"
                 "isSingleValued: FALSE\nsearchFlags: 0\n\n")  # fmt: skip
    if undefined:
        ldif += "dn:\nchangetype: modify\nadd: schemaUpdateNow\nschemaUpdateNow: 1\n-\n\n"
    may = sorted({*undefined, *refused}, key=str.lower)
    if may:
        ldif += f"dn: CN=Mail-Recipient,{base}\nchangetype: modify\nadd: mayContain\n"
        ldif += "".join(f"mayContain: {n}\n" for n in may) + "-\n\n"
        ldif += "dn:\nchangetype: modify\nadd: schemaUpdateNow\nschemaUpdateNow: 1\n-\n"
    parts = []
    if undefined:
        parts.append(f"attribute{'s' if len(undefined) > 1 else ''} {', '.join(undefined)}: the target schema has none")
    if refused:
        parts.append(f"{', '.join(refused)} not allowed for users")
    if unknown:
        parts.append(f"object class{'es' if len(unknown) > 1 else ''} {', '.join(unknown)} unknown: remove from "
                     "[directory.create] objectClass")  # fmt: skip
    what = "; ".join(parts) + ": directory apply writes them, the target would refuse it"
    fix = (
        "an Active Directory schema extension: mailferry does not make it (it needs the schema master and a member "
        "of Schema Admins, and can't be undone: schema objects can only be made defunct). A Schema Admin applies "
        "the LDIF shown on the schema master (netdom query fsmo / samba-tool fsmo show names it): ldapmodify -H "
        "ldap://<schema master> -D <Schema Admin> -W -f schema.ldif; on Samba, with 'dsdb:schema update allowed = "
        "yes' in smb.conf (or ldbmodify -H /var/lib/samba/private/sam.ldb --option='dsdb:schema update "
        "allowed=true' schema.ldif); test it in a lab forest first"
    )
    products = [n for n in undefined if n.lower().startswith("msexch")]
    if products:
        fix += (
            f"; {', '.join(products)} belong{'s' if len(products) == 1 else ''} to Exchange's schema: extend it with "
            "Exchange's own setup (/PrepareSchema) instead, so that the OIDs are Exchange's"
        )
    if not may:
        fix = "remove the unknown object classes from [directory.create] objectClass in the project file"
    return Step("schema", "Active Directory schema", "admin", what, fix, ldif)
