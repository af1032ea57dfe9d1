"""The directory planner: match source people to target people, then plan what ``apply`` does.

Pure: no I/O, no clock, no logging. ``directory plan`` prints the plan, ``directory apply`` carries
it out, and re-planning from fresh inventories after a (partial) apply plans only what is left.

Matching (:func:`match_people`), for one eligible source person P. Eligible: mail-enabled users
(an SMTP proxy address or ``mail``); mail-enabled contacts and groups when included. Rules run in
the configured order against indexes of the target built once; a rule's candidates are the target
entries *of P's kind* (users for users: a target contact is never a "match", see below).

===========================================================  =====================================
what the rules found                                         outcome
===========================================================  =====================================
no rule found anything; P is a user; exactly one target      ``contact_to_merge`` (target = that
contact has one of P's SMTP or X500 addresses                contact), whatever the rules
... two or more such contacts                                ``ambiguous`` (the contacts listed)
... no such contact (a contact without mail never is one)    ``to_create``
no candidate common to every rule that found one             ``conflict`` (SID says A, smtp says
                                                             B): each rule and its DNs named
a common candidate, but some rule found several entries      ``ambiguous`` (never guessed): the
                                                             rule and its candidate DNs named
every rule that found something found the same one entry     ``matched``, rule = the first of them,
                                                             reason = its evidence
no rule found a user, but a rule *not* configured (smtp,     ``conflict``: creating it would
x500, login) finds a target user with its address or login   duplicate an address or a login
two source people ``matched`` to one target entry            both ``conflict``
two source users sharing an SMTP or X500 address, or a       all ``conflict``, whatever their
login (their own, or the one a new user would get)           outcomes (decided the same on re-runs)
a contact whose addresses several source users have          merged into none: ``contact_to_merge``
                                                             becomes ``conflict``, a matched
                                                             person just doesn't merge it (noted)
===========================================================  =====================================

A matched user for whom exactly one target contact also stands (same SMTP or X500 address) gets
that contact in ``Outcome.contact``: it is merged into the user as well. That is what Exchange's
Migration Wizard did, and it makes an interrupted merge (user created, contact not yet deleted)
finish on the next apply.

Rules must include ``x500``, ``smtp`` or ``login`` (ValueError otherwise): a user created by an
earlier apply carries the source's addresses and login, and must be *found again* by a re-run;
``sid`` alone can't (sIDHistory is not writable over LDAP) and would create it twice.

Planning (:func:`plan_directory`), per outcome:

==================  =====================================================================
outcome             actions
==================  =====================================================================
matched             ``AddAddresses`` (old X500 and SMTP addresses the target lacks, after the
                    mail attributes are set; a mail the template replaces stays an address),
                    ``SetMailAttributes`` (template values that
                    differ from the target's), ``MergeContact`` (``Outcome.contact``), each only
                    when there is something to do: a finished person plans nothing
to_create (user)    ``CreateUser``: the whole entry in one add (disabled; names, phones,
                    title, ..., manager mapped; mail attributes; old addresses)
contact_to_merge    ``CreateUser`` from the source person, then ``MergeContact``: copy the
                    contact's attributes the user lacks and its addresses, move its group
                    memberships, delete it (its LDIF kept in the action)
to_create (other)   ``Skip``: contacts and groups are not created (not a finding)
ambiguous/conflict  ``Skip`` with the outcome's reason (a finding: the operator decides)
==================  =====================================================================

A user to create is skipped (a finding) when the configured rules would not find the entry
created for it on a re-run (say rules ``login`` and a person without a login): the next apply would
create it twice. Its DN is ``CN=<cn>,<target_container>`` (cn: the source cn, displayName, given
name + sn, the login; stripped; RFC 4514 escaping); when that cn is shared with another source user
or the DN is taken in the target (``target_dns``), ``CN=<cn> (<login>)``; if that is taken too:
``Skip``. A login comes from sAMAccountName/uid, else the local part of the first SMTP address.

Order: creations first, a manager before the people it manages (a cycle is cut: that person's
manager is dropped with a note); then the updates of matched people; then the skips.

The identity map has a row for every matched and created person (merged contacts included). The
accounts CSV for ``migrate`` is ``IdentityMap.accounts()``: source login -> target login, the
IMAP logins both servers use (Dovecot's ldap userdb looks users up by uid / sAMAccountName).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from string import Template
from typing import Literal

from mailferry.formats.addresses import (
    as_primary_smtp,
    as_secondary_smtp,
    as_x500,
    generic_proxies,
    normalize_email,
    parse_proxy,
    x500_key,
)
from mailferry.formats.ldif import dn_key, entry_to_ldif, rdn
from mailferry.model.directory import MATCH_RULES, MatchRule, Person

__all__ = [
    "Action",
    "AddAddresses",
    "CreateUser",
    "DirectoryPlan",
    "IdentityMap",
    "IdentityRow",
    "MergeContact",
    "Outcome",
    "OutcomeStatus",
    "SetMailAttributes",
    "Skip",
    "match_people",
    "plan_directory",
]

OutcomeStatus = Literal["matched", "to_create", "contact_to_merge", "ambiguous", "conflict"]
Dialect = Literal["ad", "generic"]

# Rules that find a person created by an earlier apply (see the module docstring).
REFINDING_RULES = frozenset({"x500", "smtp", "login"})
AD_USER_CLASSES = ("top", "person", "organizationalPerson", "user")
GENERIC_USER_CLASSES = ("top", "person", "organizationalPerson", "inetOrgPerson")
AD_CONTACT_CLASSES = ("top", "person", "organizationalPerson", "contact")
# NORMAL_ACCOUNT (0x200) | ACCOUNTDISABLE (0x2): created users can't log in until enabled.
AD_DISABLED_UAC = "514"
PLACEHOLDERS = ("login", "mail", "primary_smtp", "given", "sn")
_PLACEHOLDER_LIST = ", ".join("${" + n + "}" for n in PLACEHOLDERS)
# Attributes never copied from a source person or a contact: they name or classify the entry,
# or are set by the planner itself.
_NOT_COPIED = frozenset(
    {"objectclass", "cn", "name", "distinguishedname", "targetaddress", "manager", "useraccountcontrol"}
)


@dataclass(frozen=True, slots=True)
class Outcome:
    source: Person
    status: OutcomeStatus
    target: Person | None
    rule: str | None  # the deciding rule; "sid,smtp" for a conflict between rules
    reason: str
    candidates: tuple[str, ...] = ()  # DNs: the match, or the entries in question
    contact: Person | None = None  # matched users: a target contact to merge as well
    rules: tuple[str, ...] = ()  # the rules matching ran with (plan_directory checks re-finding)


# ---------------------------------------------------------------------------------------- matching


_Key = tuple[str, str, str]  # (rule, kind, comparison key)


def _target_index(target: Sequence[Person]) -> dict[_Key, list[tuple[int, str]]]:
    index: dict[_Key, list[tuple[int, str]]] = defaultdict(list)

    def add(rule: str, t: Person, key: str, i: int, where: str) -> None:
        if not key:
            return
        hits = index[(rule, t.kind, key)]
        if not any(j == i for j, _ in hits):
            hits.append((i, where))

    for i, t in enumerate(target):
        if t.sid:
            add("sid", t, t.sid.strip().upper(), i, "objectSid")
        for h in t.sid_history:
            add("sid", t, h.strip().upper(), i, "sIDHistory")
        if t.legacy_dn:
            add("x500", t, x500_key(t.legacy_dn), i, "legacyExchangeDN")
        for x in t.x500:
            add("x500", t, x500_key(x), i, "X500 addresses")
        mail = normalize_email(t.mail) if t.mail else ""
        for a in t.smtp:
            k = normalize_email(a)
            add("smtp", t, k, i, "mail" if k == mail else "proxyAddresses")
        if t.login:
            add("login", t, t.login.strip().casefold(), i, "login")
        for name, values in t.custom.items():
            for v in values:
                add("custom", t, f"{name.lower()}\x00{v.strip().casefold()}", i, name)
    return index


def _probes(p: Person, rule: str) -> list[tuple[str, str]]:
    """(what the source has, comparison key) for one rule."""
    if rule == "sid":
        sids = [(f"objectSid {p.sid}", p.sid)] if p.sid else []
        return [(w, s.strip().upper()) for w, s in sids + [(f"sIDHistory {h}", h) for h in p.sid_history]]
    if rule == "x500":
        return [
            (f"legacyExchangeDN {x}" if p.legacy_dn and x == p.legacy_dn.strip() else f"X500 address {x}", x500_key(x))
            for x in p.x500
        ]
    if rule == "smtp":
        return [(f"address {a}", normalize_email(a)) for a in p.smtp]
    if rule == "login":
        return [(f"login {p.login}", p.login.strip().casefold())] if p.login and p.login.strip() else []
    return [
        (f"{name} {v}", f"{name.lower()}\x00{v.strip().casefold()}")
        for name, values in sorted(p.custom.items())
        for v in values
        if v.strip()
    ]


def _lookup(
    index: Mapping[_Key, list[tuple[int, str]]], target: Sequence[Person], rule: str, kind: str, p: Person
) -> dict[int, str]:
    """Target positions found by one rule, each with its evidence (first found wins)."""
    found: dict[int, str] = {}
    for what, key in _probes(p, rule):
        for i, where in index.get((rule, kind, key), ()):
            found.setdefault(i, f"{what} found in {where} of {target[i].dn}")
    return found


def _eligible(p: Person, include_contacts: bool, include_groups: bool) -> bool:
    if not p.mail_enabled:
        return False
    return p.kind == "user" or (p.kind == "contact" and include_contacts) or (p.kind == "group" and include_groups)


def _dns(target: Sequence[Person], found: Iterable[int]) -> tuple[str, ...]:
    return tuple(sorted(target[i].dn for i in found))


def _check_rules(rules: Sequence[MatchRule]) -> None:
    unknown = [r for r in rules if r not in MATCH_RULES]
    if unknown:
        raise ValueError(f"unknown match rule(s) {', '.join(map(repr, unknown))}; known: {', '.join(MATCH_RULES)}")
    if len(set(rules)) != len(rules):
        raise ValueError(f"a match rule is listed twice in {list(rules)}")
    if not REFINDING_RULES & set(rules):
        raise ValueError(
            "match rules must include x500, smtp or login: people created by an earlier apply are found "
            "again by those, and would otherwise be created twice"
        )


def match_people(
    source: Sequence[Person],
    target: Sequence[Person],
    rules: Sequence[MatchRule],
    *,
    include_contacts: bool = False,
    include_groups: bool = False,
) -> list[Outcome]:
    """One outcome per eligible source person, in source order (see the module's table).

    The target is indexed once (by SID, X500 key, SMTP key, login, custom value), so the work is
    linear in the number of people and addresses. Raises ValueError for bad ``rules``.
    """
    _check_rules(rules)
    index = _target_index(target)
    outcomes: list[Outcome] = []
    contact_claims: dict[str, list[int]] = defaultdict(list)  # contact DN key -> outcomes hitting it
    for p in source:
        if not _eligible(p, include_contacts, include_groups):
            continue
        if p.kind == "user":
            for i in _contacts_for(p, target, index):
                contact_claims[dn_key(target[i].dn)].append(len(outcomes))
        outcomes.append(replace(_decide(p, target, index, rules), rules=tuple(rules)))
    return _resolve_claims(outcomes, contact_claims)


def _contacts_for(p: Person, target: Sequence[Person], index: Mapping[_Key, list[tuple[int, str]]]) -> dict[int, str]:
    found = _lookup(index, target, "smtp", "contact", p)
    for i, why in _lookup(index, target, "x500", "contact", p).items():
        found.setdefault(i, why)
    return found


def _decide(
    p: Person, target: Sequence[Person], index: Mapping[_Key, list[tuple[int, str]]], rules: Sequence[str]
) -> Outcome:
    found = [(rule, hits) for rule in rules if (hits := _lookup(index, target, rule, p.kind, p))]
    if not found and p.kind == "user":
        # Creating this person would give the target a second entry with its address or login.
        clash = [
            (rule, hits)
            for rule in ("smtp", "x500", "login")
            if rule not in rules and (hits := _lookup(index, target, rule, "user", replace(p, login=_login_of(p))))
        ]
        if clash:
            said = "; ".join(why for _, h in clash for why in h.values())
            dns = _dns(target, {i for _, h in clash for i in h})
            return Outcome(
                p,
                "conflict",
                None,
                ",".join(r for r, _ in clash),
                f"no rule matched, but a new user would clash with the target: {said}; add the rule or resolve by hand",
                dns,
            )
    if not found:
        contacts = _contacts_for(p, target, index) if p.kind == "user" else {}
        if len(contacts) == 1:
            ((i, why),) = contacts.items()
            return Outcome(
                p, "contact_to_merge", target[i], "contact", f"a target contact stands for it: {why}", (target[i].dn,)
            )
        if contacts:
            dns = _dns(target, contacts)
            return Outcome(
                p,
                "ambiguous",
                None,
                "contact",
                f"{len(dns)} target contacts share its addresses: {'; '.join(dns)}",
                dns,
            )
        return Outcome(p, "to_create", None, None, f"no target {p.kind} found by rules {', '.join(rules)}")
    common = set(found[0][1]).intersection(*(set(h) for _, h in found[1:]))
    every = _dns(target, {i for _, h in found for i in h})
    if not common:
        said = "; ".join(f"{rule} says {' or '.join(_dns(target, h))}" for rule, h in found)
        return Outcome(p, "conflict", None, ",".join(r for r, _ in found), f"rules disagree: {said}", every)
    for rule, hits in found:
        if len(hits) > 1:
            dns = _dns(target, hits)
            return Outcome(
                p, "ambiguous", None, rule, f"rule {rule} finds {len(dns)} target entries: {'; '.join(dns)}", dns
            )
    rule, hits = found[0]
    ((i, why),) = hits.items()
    also = [r for r, _ in found[1:]]
    reason = why + (f" (also by {', '.join(also)})" if also else "")
    contact: Person | None = None
    if p.kind == "user":
        contacts = _contacts_for(p, target, index)
        if len(contacts) == 1:
            contact = target[next(iter(contacts))]
        elif contacts:
            listed = "; ".join(_dns(target, contacts))
            reason += f"; {len(contacts)} target contacts share its addresses, none merged: {listed}"
    return Outcome(p, "matched", target[i], rule, reason, (target[i].dn,), contact)


def _resolve_claims(outcomes: list[Outcome], contact_claims: Mapping[str, list[int]]) -> list[Outcome]:
    by_target: dict[str, list[int]] = defaultdict(list)
    for n, o in enumerate(outcomes):
        if o.status == "matched" and o.target is not None:
            by_target[dn_key(o.target.dn)].append(n)
    # Two source users sharing an address or a login (their own, or the one a new user would get)
    # would give the target duplicates, and the next run could not tell them apart. Decided over
    # every source user, whatever its outcome, so that a re-plan decides the same.
    by_new_key: dict[str, list[int]] = defaultdict(list)
    for n, o in enumerate(outcomes):
        if o.source.kind == "user":
            keys = {f"address {k}" for k in o.source.smtp_keys} | {f"X500 address {k}" for k in o.source.x500_keys}
            login = _login_of(o.source)
            if login:
                keys.add(f"login {login.casefold()}")
            for k in keys:
                by_new_key[k].append(n)
    out = list(outcomes)
    for key, claims in sorted(by_new_key.items()):
        if len(claims) > 1:
            dns = tuple(sorted(outcomes[n].source.dn for n in claims))
            for n in claims:
                o = out[n]
                if o.status != "conflict":
                    out[n] = Outcome(
                        o.source,
                        "conflict",
                        None,
                        None,
                        f"{len(dns)} source people share the {key}: {'; '.join(dns)}",
                        dns,
                    )
    for claims in by_target.values():
        if len(claims) > 1:
            dns = tuple(sorted(outcomes[n].source.dn for n in claims))
            for n in claims:
                o = outcomes[n]
                assert o.target is not None
                out[n] = Outcome(
                    o.source,
                    "conflict",
                    None,
                    o.rule,
                    f"{len(dns)} source people match {o.target.dn}: {'; '.join(dns)}",
                    (o.target.dn, *dns),
                )
    # A contact whose addresses belong to several source users is merged into none of them:
    # its addresses would follow one person and the others' mail would reach them.
    for contact_key, claims in contact_claims.items():
        if len(claims) < 2:
            continue
        dns = tuple(sorted(outcomes[n].source.dn for n in claims))
        for n in claims:
            o = out[n]
            if o.status == "contact_to_merge" and o.target is not None:
                out[n] = Outcome(
                    o.source,
                    "conflict",
                    None,
                    "contact",
                    f"contact {o.target.dn} has addresses of {len(dns)} source people: {'; '.join(dns)}",
                    (o.target.dn, *dns),
                )
            elif o.contact is not None and dn_key(o.contact.dn) == contact_key:
                out[n] = replace(
                    o,
                    contact=None,
                    reason=f"{o.reason}; contact {o.contact.dn} also stands for other source people: not merged",
                )
    return out


# ---------------------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class CreateUser:
    """Add one whole user entry (disabled). ``attrs`` is complete: nothing is added later."""

    source: Person
    dn: str
    attrs: dict[str, list[str]] = field(hash=False)
    reason: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MergeContact:
    """Fold a target contact into a user, in this order: keep ``contact_ldif``; add
    ``attrs_to_copy`` and ``addresses`` (on ``address_attribute``) to the user; add the user to
    each of ``groups_to_move`` and remove the contact from them; delete the contact."""

    source: Person
    contact: Person
    user_dn: str
    attrs_to_copy: dict[str, list[str]] = field(hash=False)
    address_attribute: str
    addresses: tuple[str, ...]
    groups_to_move: tuple[str, ...]
    contact_ldif: str
    reason: str


@dataclass(frozen=True, slots=True)
class AddAddresses:
    """Add values to a multi-valued address attribute (AD: proxyAddresses; generic: the alias
    attribute) so that old addresses keep routing."""

    source: Person
    dn: str
    attribute: str
    values: tuple[str, ...]
    reason: str = "keep the old addresses alive"


@dataclass(frozen=True, slots=True)
class SetMailAttributes:
    """Replace single values: the mail attributes template, where the target differs."""

    source: Person
    dn: str
    attrs: dict[str, str] = field(hash=False)
    reason: str = "mail attributes from the template"


@dataclass(frozen=True, slots=True)
class Skip:
    source: Person
    reason: str
    finding: bool  # True: the operator must decide (ambiguous, conflict, name taken)


Action = CreateUser | MergeContact | AddAddresses | SetMailAttributes | Skip


@dataclass(frozen=True, slots=True)
class IdentityRow:
    source_dn: str
    source_login: str | None
    source_mail: str | None
    target_dn: str
    target_login: str | None
    target_mail: str | None
    how: str  # "matched by sid", "created", "created, contact ... merged"
    kind: str = "user"


@dataclass(slots=True)
class IdentityMap:
    rows: list[IdentityRow] = field(default_factory=list)

    def accounts(self) -> list[tuple[str, str]]:
        """(source login, target login) per user having both: the accounts CSV for ``migrate``."""
        return [
            (r.source_login, r.target_login)
            for r in self.rows
            if r.kind == "user" and r.source_login and r.target_login
        ]


@dataclass(slots=True)
class DirectoryPlan:
    actions: list[Action] = field(default_factory=list)
    identity: IdentityMap = field(default_factory=IdentityMap)
    notes: list[str] = field(default_factory=list)

    def of(self, kind: type) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def changes(self) -> list[Action]:
        """Every action that writes (all but skips)."""
        return [a for a in self.actions if not isinstance(a, Skip)]


def _login_of(p: Person) -> str | None:
    if p.login and p.login.strip():
        return p.login.strip()
    first = p.primary_smtp or next(iter(p.smtp), None)
    return first.split("@", 1)[0] if first else None


def _cn_of(p: Person) -> str:
    for attr in ("cn", "displayName"):
        v = p.first(attr)
        if v:
            return v.strip()
    names = " ".join(x for x in (p.first("givenName"), p.first("sn")) if x)
    return names.strip() or _login_of(p) or p.dn


def _placeholders(p: Person, login: str | None) -> dict[str, str]:
    return {
        "login": login or "",
        "mail": (p.mail or "").strip(),
        "primary_smtp": p.primary_smtp or "",
        "given": p.first("givenName") or "",
        "sn": p.first("sn") or "",
    }


def _render(template: Mapping[str, str], values: Mapping[str, str], which: str) -> tuple[dict[str, str], list[str]]:
    out: dict[str, str] = {}
    notes: list[str] = []
    for attr, text in template.items():
        try:
            value = Template(text).substitute(values).strip()
        except KeyError as exc:
            raise ValueError(
                f"{which} {attr}: unknown placeholder ${{{exc.args[0]}}}; use {_PLACEHOLDER_LIST}"
            ) from None
        except ValueError as exc:
            raise ValueError(f"{which} {attr}: {exc} (write $$ for a dollar sign)") from None
        if value:
            out[attr] = value
        else:
            notes.append(f"{attr} not set: {text!r} is empty for this person")
    return out, notes


def _get(p: Person, attr: str) -> tuple[str, ...]:
    if attr.lower() == "mail":
        return (p.mail,) if p.mail else ()
    low = attr.lower()
    return next((v for k, v in p.attrs.items() if k.lower() == low), ())


def _missing_addresses(
    want: Person, have_smtp: Collection[str], have_x500: Collection[str], dialect: Dialect
) -> tuple[list[str], bool]:
    """Values to add so that ``have`` holds every address of ``want``; and whether X500
    addresses had to be dropped (generic dialect)."""
    values: list[str] = []
    dropped = False
    if dialect == "ad":
        values += [as_x500(x) for x in want.x500 if x500_key(x) not in have_x500]
    elif want.x500:
        dropped = True
    for a in want.smtp:
        if normalize_email(a) not in have_smtp:
            values.append(as_secondary_smtp(a) if dialect == "ad" else a)
    return values, dropped


def _ldif_of(c: Person) -> str:
    attrs: dict[str, list[str]] = {"objectClass": list(AD_CONTACT_CLASSES)}
    for k, v in c.attrs.items():
        if v:
            attrs[k] = list(v)
    if c.mail:
        attrs["mail"] = [c.mail]
    if c.proxy_addresses:
        attrs["proxyAddresses"] = list(c.proxy_addresses)
    if c.legacy_dn:
        attrs["legacyExchangeDN"] = [c.legacy_dn]
    comments = "".join(f"# memberOf: {g}\n" for g in c.member_of)
    return comments + entry_to_ldif(c.dn, attrs)


@dataclass(slots=True)
class _Creation:
    outcome: Outcome
    cn: str
    dn: str
    login: str | None
    attrs: dict[str, list[str]]
    manager: str | None = None  # the mapped manager DN
    notes: list[str] = field(default_factory=list)


def plan_directory(
    outcomes: Sequence[Outcome],
    *,
    target_container: str,
    create_template: Mapping[str, str],
    keep_old_addresses: bool = True,
    dialect: Dialect,
    mail_attrs_template: Mapping[str, str],
    lock_marker: Mapping[str, str] | None,
    alias_attribute: str = "mailAlternateAddress",
    target_dns: Collection[str] = (),
) -> DirectoryPlan:
    """The actions for ``outcomes`` (from :func:`match_people`), see the module's table.

    ``create_template`` and ``mail_attrs_template`` map attribute -> one value with placeholders
    ``${login} ${mail} ${primary_smtp} ${given} ${sn}`` (the target login; the source mail,
    primary SMTP address, givenName, sn); ``objectClass`` in ``create_template`` is a space-
    separated list. A value that renders empty is left out, with a note. ``lock_marker``: the
    attributes that disable a generic LDAP account (required for that dialect). ``target_dns``:
    every DN the target holds now, so a new user never takes a name already in use.
    Raises ValueError for a bad template or a missing lock marker.
    """
    if dialect == "generic" and not lock_marker:
        raise ValueError("the generic LDAP dialect needs a lock marker: created users must not be able to log in")
    plan = DirectoryPlan()
    login_attr = "sAMAccountName" if dialect == "ad" else "uid"
    rdn_attr = "CN" if dialect == "ad" else "cn"
    address_attr = "proxyAddresses" if dialect == "ad" else alias_attribute

    taken = {dn_key(d) for d in target_dns}
    for o in outcomes:
        for p in (o.target, o.contact):
            if p is not None:
                taken.add(dn_key(p.dn))

    # 1. Names of the users to create. A CN shared by two of them, or by an entry the target
    #    has, gets the login appended: "John Smith (jsmith2)"; if that is taken too, skip.
    creatable = [o for o in outcomes if o.source.kind == "user" and o.status in ("to_create", "contact_to_merge")]
    # Counted over every source user, whatever its outcome, so that the name a person gets does not
    # change when others were created in between (re-plans give the same names).
    cn_count: dict[str, int] = defaultdict(int)
    for o in outcomes:
        if o.source.kind == "user":
            cn_count[_cn_of(o.source).casefold()] += 1
    creations: list[_Creation] = []
    skips: list[Skip] = []
    for o in creatable:
        cn, login = _cn_of(o.source), _login_of(o.source)
        attrs, notes = _entry(o.source, cn, login, dialect, create_template, mail_attrs_template, lock_marker,
                              keep_old_addresses, login_attr, address_attr)  # fmt: skip
        if o.rules and not _refound(o.source, attrs, o.rules, dialect, login_attr, address_attr):
            skips.append(Skip(o.source, f"not created: rules {', '.join(o.rules)} would not find the new user again "
                                        "(a re-run would create it twice); add the smtp rule", True))  # fmt: skip
            continue
        dn = f"{rdn(rdn_attr, cn)},{target_container}"
        if cn_count[cn.casefold()] > 1 or dn_key(dn) in taken:
            alt = f"{cn} ({login})" if login else cn
            alt_dn = f"{rdn(rdn_attr, alt)},{target_container}"
            if alt_dn == dn or dn_key(alt_dn) in taken:
                why = f"cannot create {dn}: the name is taken (also {alt_dn}); rename or match it"
                skips.append(Skip(o.source, why, True))
                continue
            cn, dn = alt, alt_dn
            attrs["cn"] = [cn]
        taken.add(dn_key(dn))
        creations.append(_Creation(o, cn, dn, login, attrs, notes=notes))

    # 2. Managers: mapped through the identity map, created managers first.
    mapped: dict[str, str] = {}
    for o in outcomes:
        if o.status == "matched" and o.target is not None:
            mapped[dn_key(o.source.dn)] = o.target.dn
    position: dict[str, int] = {}
    for n, c in enumerate(creations):
        mapped[dn_key(c.outcome.source.dn)] = c.dn
        position[c.dn] = n
    depends: dict[int, int] = {}
    for n, c in enumerate(creations):
        manager = c.outcome.source.first("manager")
        if manager is None:
            continue
        c.manager = mapped.get(dn_key(manager))
        if c.manager is None:
            c.notes.append(f"manager {manager} is neither matched nor created: not set")
        elif c.manager in position and position[c.manager] != n:
            depends[n] = position[c.manager]
    order = _managers_first(len(creations), depends, creations)

    # 3. Creations (and their contact merges).
    for n in order:
        c = creations[n]
        o, attrs = c.outcome, c.attrs
        if c.manager:
            attrs["manager"] = [c.manager]
        reason = o.reason if o.status == "to_create" else f"no target user; {o.reason}"
        plan.actions.append(CreateUser(o.source, c.dn, attrs, f"{reason}: created disabled", tuple(c.notes)))
        how = "created"
        if o.status == "contact_to_merge" and o.target is not None:
            plan.actions.append(_merge(o.source, o.target, c.dn, attrs, (), dialect, address_attr))
            how = f"created, contact {o.target.dn} merged"
        login = attrs.get(login_attr, [None])[0]
        mail = attrs.get("mail", [None])[0]
        plan.identity.rows.append(
            IdentityRow(o.source.dn, o.source.login, o.source.primary_smtp, c.dn, login, mail, how)
        )

    # 4. Matched people: only what is missing.
    dropped_x500 = False
    for o in outcomes:
        if o.status != "matched" or o.target is None:
            continue
        actions, target_mail, dropped = _update(o, dialect, mail_attrs_template, keep_old_addresses, address_attr)
        dropped_x500 |= dropped
        plan.actions.extend(actions)
        plan.identity.rows.append(
            IdentityRow(
                o.source.dn,
                o.source.login,
                o.source.primary_smtp,
                o.target.dn,
                o.target.login,
                target_mail,
                f"matched by {o.rule}",
                o.source.kind,
            )
        )
    if dropped_x500:
        plan.notes.append("X500 addresses can't be kept in a generic LDAP directory: they were left out")

    # 5. Skips.
    for o in outcomes:
        if o.status in ("ambiguous", "conflict"):
            plan.actions.append(Skip(o.source, f"{o.status}: {o.reason}", True))
        elif o.status == "to_create" and o.source.kind != "user":
            plan.actions.append(
                Skip(o.source, f"no target {o.source.kind} found; {o.source.kind}s are not created", False)
            )
        elif o.status == "contact_to_merge" and o.source.kind != "user":
            plan.actions.append(Skip(o.source, f"a target contact stands for this {o.source.kind}; not merged", False))
    plan.actions.extend(skips)
    return plan


def _managers_first(count: int, depends: Mapping[int, int], creations: list[_Creation]) -> list[int]:
    order: list[int] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done
    for start in range(count):
        stack: list[tuple[int, bool]] = [(start, False)]
        while stack:
            node, done = stack.pop()
            if done:
                state[node] = 2
                order.append(node)
                continue
            if node in state:
                continue
            state[node] = 1
            stack.append((node, True))
            dep = depends.get(node)
            if dep is None:
                continue
            if dep not in state:
                stack.append((dep, False))
            elif state[dep] == 1:  # a manager cycle: this one is created without its manager
                c = creations[node]
                c.notes.append(f"manager {c.manager} not set: the managers form a cycle")
                c.manager = None
    return order


def _entry(
    p: Person,
    cn: str,
    login: str | None,
    dialect: Dialect,
    create_template: Mapping[str, str],
    mail_template: Mapping[str, str],
    lock_marker: Mapping[str, str] | None,
    keep_old: bool,
    login_attr: str,
    address_attr: str,
) -> tuple[dict[str, list[str]], list[str]]:
    """The whole entry of a user created from ``p`` (but its manager), and notes."""
    attrs: dict[str, list[str]] = {"objectClass": list(AD_USER_CLASSES if dialect == "ad" else GENERIC_USER_CLASSES)}
    for k, vs in p.attrs.items():
        kept = [v for v in vs if v.strip()]
        if kept and k.lower() not in _NOT_COPIED:
            attrs[k] = kept
    attrs["cn"] = [cn]
    notes: list[str] = []
    if login:
        attrs[login_attr] = [login]
    if dialect == "generic" and not any(k.lower() == "sn" for k in attrs):
        attrs["sn"] = [cn]  # inetOrgPerson requires sn
        notes.append("no sn: the cn is used (inetOrgPerson requires sn)")
    if dialect == "ad":
        attrs["userAccountControl"] = [AD_DISABLED_UAC]
    else:
        for k, v in (lock_marker or {}).items():
            attrs[k] = [v]
    values = _placeholders(p, login)
    for which, template in (("create template", create_template), ("mail attributes template", mail_template)):
        rendered, more = _render(template, values, which)
        notes += more
        for k, v in rendered.items():
            attrs[k] = v.split() if k.lower() == "objectclass" else [v]
    if "mail" not in attrs and keep_old and p.primary_smtp:
        attrs["mail"] = [p.primary_smtp]
    mail = attrs.get("mail", [""])[0]
    addresses: list[str] = []
    if dialect == "ad" and mail:
        addresses.append(as_primary_smtp(mail))
    if keep_old:
        extra, _ = _missing_addresses(p, {normalize_email(mail)} if mail else set(), set(), dialect)
        addresses += extra
    if addresses:
        attrs[address_attr] = addresses
    return attrs, notes


def _refound(
    p: Person,
    attrs: Mapping[str, list[str]],
    rules: Sequence[str],
    dialect: Dialect,
    login_attr: str,
    address_attr: str,
) -> bool:
    """Whether ``rules`` would find ``p`` in the entry created for it (as a connector reads it back)."""
    mail = next(iter(attrs.get("mail", ())), None)
    values = attrs.get(address_attr, [])
    proxies = tuple(values) if dialect == "ad" else generic_proxies(mail, values)
    login = next(iter(attrs.get(login_attr, ())), None)
    new = [Person("", "user", login=login, mail=mail, proxy_addresses=proxies)]
    index = _target_index(new)
    return any(_lookup(index, new, rule, "user", p) for rule in rules)


def _address_keys(
    dn: str, attrs: Mapping[str, Sequence[str]], dialect: Dialect, address_attr: str
) -> tuple[frozenset[str], frozenset[str]]:
    """The SMTP and X500 keys an entry we are about to write will hold."""
    mail = next(iter(attrs.get("mail", ())), None)
    values = attrs.get(address_attr, ())
    proxies = tuple(values) if dialect == "ad" else tuple(as_secondary_smtp(v) for v in values)
    p = Person(dn, "user", mail=mail, proxy_addresses=proxies)
    return p.smtp_keys, p.x500_keys


def _merge(
    source: Person,
    contact: Person,
    user_dn: str,
    user_attrs: Mapping[str, Sequence[str]],
    user_groups: Sequence[str],
    dialect: Dialect,
    address_attr: str,
    have: tuple[frozenset[str], frozenset[str]] | None = None,
) -> MergeContact:
    present = {k.lower() for k, v in user_attrs.items() if v}
    copy = {
        k: list(v) for k, v in contact.attrs.items() if v and k.lower() not in present and k.lower() not in _NOT_COPIED
    }
    smtp_keys, x500_keys = have if have is not None else _address_keys(user_dn, user_attrs, dialect, address_attr)
    addresses, _ = _missing_addresses(contact, smtp_keys, x500_keys, dialect)
    groups = {dn_key(g) for g in user_groups}
    move = tuple(g for g in contact.member_of if dn_key(g) not in groups)
    return MergeContact(
        source,
        contact,
        user_dn,
        copy,
        address_attr,
        tuple(addresses),
        move,
        _ldif_of(contact),
        f"contact {contact.dn} stands for the same person: merged into {user_dn}, then deleted",
    )


def _update(
    o: Outcome, dialect: Dialect, mail_template: Mapping[str, str], keep_old: bool, address_attr: str
) -> tuple[list[Action], str | None, bool]:
    assert o.target is not None
    p, t = o.source, o.target
    actions: list[Action] = []
    after = t
    change: dict[str, str] = {}
    if t.kind == "user":
        rendered, _ = _render(mail_template, _placeholders(p, t.login or _login_of(p)), "mail attributes template")
        change = {k: v for k, v in rendered.items() if _get(t, k) != (v,)}
        if "mail" in change:
            after = replace(t, mail=change["mail"])
            if dialect == "generic":  # the mail attribute is the primary address: it goes
                aliases = [q.address for q in map(parse_proxy, t.proxy_addresses) if q.kind == "SMTP" and not q.primary]
                after = replace(after, proxy_addresses=generic_proxies(change["mail"], aliases))
        if change:
            actions.append(
                SetMailAttributes(p, t.dn, change, f"matched by {o.rule}; mail attributes from the template")
            )
    dropped = False
    smtp_keys, x500_keys = set(after.smtp_keys), set(after.x500_keys)
    if keep_old:
        values, dropped = _missing_addresses(p, smtp_keys, x500_keys, dialect)
        # The target's own mail, replaced by the template, stays an address too: mail to it still
        # arrives, and the next run matches as this one did.
        if "mail" in change and t.mail and normalize_email(t.mail) not in smtp_keys:
            old_mail = as_secondary_smtp(t.mail) if dialect == "ad" else t.mail.strip()
            if normalize_email(t.mail) not in {normalize_email(v.split(":", 1)[-1]) for v in values}:
                values.append(old_mail)
        if values:
            actions.insert(
                0,
                AddAddresses(
                    p, t.dn, address_attr, tuple(values), f"matched by {o.rule}; keep the old addresses alive"
                ),
            )
            smtp_keys |= {
                normalize_email(v.split(":", 1)[1] if dialect == "ad" else v)
                for v in values
                if not v.startswith("X500:")
            }
            x500_keys |= {x500_key(v) for v in values if v.startswith("X500:")}
    if o.contact is not None:
        current = {k: list(v) for k, v in t.attrs.items()}
        actions.append(
            _merge(
                p,
                o.contact,
                t.dn,
                current,
                t.member_of,
                dialect,
                address_attr,
                (frozenset(smtp_keys), frozenset(x500_keys)),
            )
        )
    return actions, after.primary_smtp, dropped
