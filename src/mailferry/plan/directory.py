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

The admin's decisions (``resolutions``, from the project file) come before the rules: a source
person resolved to a target user is ``matched`` (rule ``resolved``), to a target contact
``contact_to_merge``, to ``create`` ``to_create``; a resolution naming nothing the target has is a
``conflict``. A resolved person is found again on later runs by its resolution (a new user by the
login it was given, in the target container), and the claims of others don't undo a resolution;
two people resolved to be created with one login are both ``conflict``. A contact a resolution
names is nobody else's to merge; another person whose addresses it holds is a ``conflict`` (its
addresses would end up on that user), before and after the merge alike. Contacts ``restore``
put back (``kept_contacts``) are never merged by the rules again.

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
                    ``SetMailAttributes`` (template values that differ from the target's),
                    ``MergeContact`` (``Outcome.contact``), ``SetManager`` (the target has no
                    manager: the source's, mapped), each only when there is something to do: a
                    finished person plans nothing
to_create (user)    ``CreateUser``: the whole entry in one add (disabled; names, phones,
                    title, ..., manager mapped when it exists already; mail attributes; old
                    addresses; AD: userPrincipalName, sAMAccountName of at most 20 characters,
                    displayName, givenName and sn, as AD's tools expect), then ``SetManager``
                    when the manager is created by this plan too
contact_to_merge    ``CreateUser`` from the source person, then ``MergeContact``: copy every
                    attribute the contact has, the user lacks and the target schema allows for
                    the user's object classes (each other one named, but operational and system
                    attributes), and its addresses, move its group memberships, delete it (its
                    LDIF kept in the action)
to_create (other)   ``Skip``: contacts and groups are not created (not a finding)
ambiguous/conflict  ``Skip`` with the outcome's reason (a finding: the operator decides)
==================  =====================================================================

A user to create is skipped (a finding) when the configured rules would not find the entry
created for it on a re-run (say rules ``login`` and a person without a login): the next apply would
create it twice. Its DN is ``CN=<cn>,<target_container>`` (cn: the source cn, displayName, given
name + sn, the login; stripped; RFC 4514 escaping); when that cn is shared with another source user
or the DN is taken in the target (``target_dns``), ``CN=<cn> (<login>)``; if that is taken too:
``Skip``. A login comes from sAMAccountName/uid, else the local part of the first SMTP address.

Order: creations first (each with its contact merge); then the updates of matched people; then
every ``SetManager``, once all the entries they name exist (people managing each other are both
linked, nothing is cut); then the skips.

Preconditions (:func:`check_preconditions`): what the target must allow for the plan, each stated
once, checked from what the target says of itself (the container, the bound account's right to
create there, the schema); ``apply`` writes nothing while one fails.

The identity map has a row for every matched and created person (merged contacts included); a
created row stands only once its creation is done (``engine.directory.identity_rows``). The
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
from mailferry.formats.ldap_schema import Schema
from mailferry.formats.ldif import dn_key, entry_to_ldif, parent_dn, rdn
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
    "Precondition",
    "SetMailAttributes",
    "SetManager",
    "Skip",
    "check_preconditions",
    "match_people",
    "new_login",
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
    resolution: str | None = None  # the admin's decision from the project file: a target DN or "create"


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
    dialect: Dialect = "ad",
    resolutions: Mapping[str, str] | None = None,
    target_container: str = "",
    kept_contacts: Collection[str] = (),
) -> list[Outcome]:
    """One outcome per eligible source person, in source order (see the module's table).

    The target is indexed once (by SID, X500 key, SMTP key, login, custom value), so the work is
    linear in the number of people and addresses. ``dialect``: the target's (the login a new user
    would get). ``resolutions``: the admin's decisions, source DN -> target DN or ``"create"``
    (:func:`_resolved`); ``kept_contacts``: DNs of target contacts never to merge (restored ones).
    Raises ValueError for bad ``rules``.
    """
    _check_rules(rules)
    index = _target_index(target)
    decided = {dn_key(k): v for k, v in (resolutions or {}).items()}
    kept = {dn_key(c) for c in kept_contacts}
    # Contacts a resolution names belong to that person: nobody else's rules merge them.
    owners = {dn_key(k): k for k in (resolutions or {})}
    reserved = {dn_key(v): owners[k] for k, v in decided.items() if v.strip().lower() != "create"}
    eligible = [p for p in source if _eligible(p, include_contacts, include_groups)]
    # The admin's decisions first: what they hand to a person is nobody else's.
    resolved: dict[str, Outcome] = {}
    for p in eligible:
        choice = decided.get(dn_key(p.dn))
        if choice is not None:
            excluded = kept | {c for c, owner in reserved.items() if dn_key(owner) != dn_key(p.dn)}
            o = _resolved(p, target, index, choice, dialect, target_container, excluded)
            resolved[dn_key(p.dn)] = replace(o, resolution="create" if choice.strip().lower() == "create" else choice)
    handed = _handed_over(resolved)
    outcomes: list[Outcome] = []
    contact_claims: dict[str, list[int]] = defaultdict(list)  # contact DN key -> outcomes hitting it
    for p in eligible:
        excluded = kept | {c for c, owner in reserved.items() if dn_key(owner) != dn_key(p.dn)}
        if p.kind == "user":
            for i in _contacts_for(p, target, index, excluded):
                contact_claims[dn_key(target[i].dn)].append(len(outcomes))
        decision = resolved.get(dn_key(p.dn))
        if decision is not None:
            o = decision
            # A contact the admin named is this person's: nobody else merges it.
            named = o.target if o.status == "contact_to_merge" else o.contact
            if named is not None and len(outcomes) not in contact_claims[dn_key(named.dn)]:
                contact_claims[dn_key(named.dn)].append(len(outcomes))
        elif p.kind == "user" and (taken := _handed_hits(p, handed)):
            # Its addresses are on a contact the admin gave to someone else (or, merged, on the
            # user created for that person): they would be another user's. The admin decides.
            said = "; ".join(f"{dn} (the project file gives it to {who})" for dn, who in taken)
            dns = tuple(dn for dn, _ in taken)
            o = Outcome(p, "conflict", None, "contact", f"its addresses are on {said}; resolve it too", dns)
        else:
            o = _decide(p, target, index, rules, dialect, excluded, kept)
        outcomes.append(replace(o, rules=tuple(rules)))
    return _resolve_claims(outcomes, contact_claims, dialect)


def _handed_over(resolved: Mapping[str, Outcome]) -> list[tuple[Person, str]]:
    """(entry, source DN) for each contact a resolution hands to a person, and for the user
    created to merge it into (which carries its addresses once merged: the same on every run)."""
    out: list[tuple[Person, str]] = []
    for o in resolved.values():
        if o.resolution is None or o.resolution == "create":
            continue
        if o.status == "contact_to_merge" and o.target is not None:
            out.append((o.target, o.source.dn))
        elif o.status == "matched" and o.target is not None and dn_key(o.target.dn) != dn_key(o.resolution):
            out.append((o.target, o.source.dn))
            if o.contact is not None:
                out.append((o.contact, o.source.dn))
    return out


def _handed_hits(p: Person, handed: Sequence[tuple[Person, str]]) -> list[tuple[str, str]]:
    """(entry DN, source DN) of each handed-over entry holding one of ``p``'s addresses."""
    out: list[tuple[str, str]] = []
    for entry, owner in handed:
        if dn_key(owner) != dn_key(p.dn) and (entry.smtp_keys & p.smtp_keys or entry.x500_keys & p.x500_keys):
            out.append((entry.dn, owner))
    return sorted(out)


def _resolved(
    p: Person,
    target: Sequence[Person],
    index: Mapping[_Key, list[tuple[int, str]]],
    choice: str,
    dialect: Dialect,
    container: str,
    kept: Collection[str],
) -> Outcome:
    """The admin's decision for ``p`` (rule ``resolved``), whatever the rules say.

    ``create``: a new user, no contact merged into it (resolve to the contact for that). The
    user created for it earlier is found again by the login it was given, in
    ``target_container`` (a login is unique in AD; mailferry gave it): ``matched``; a target user
    elsewhere holding that login is a ``conflict`` (the new user could not be created); else
    ``to_create``. A target DN: a user of that DN is ``matched``; a contact (for a user) is
    ``contact_to_merge``, and once its user is created (found as for ``create``) ``matched`` with
    the contact still to merge, if it is there; anything else is a ``conflict`` naming the
    resolution.
    """
    said = "resolved in the project file"
    login = new_login(p, dialect)
    same = [i for i, _ in index.get(("login", "user", login.casefold()), [])] if login and p.kind == "user" else []
    ours = [i for i in same if dn_key(parent_dn(target[i].dn)) == dn_key(container)]
    created = target[ours[0]] if len(ours) == 1 else None  # the user an earlier apply created for p
    if choice.strip().lower() == "create":
        if created is not None:  # no contact is merged into it: to merge one, resolve to the contact
            why = f"{said}: create; created already as {created.dn} (login {login})"
            return Outcome(p, "matched", created, "resolved", why, (created.dn,))
        if same:
            dns = _dns(target, same)
            why = f"{said}: create, but the login {login} is taken by {'; '.join(dns)}"
            return Outcome(p, "conflict", None, "resolved", why, dns)
        return Outcome(p, "to_create", None, "resolved", f"{said}: create")
    key = dn_key(choice)
    hit = next((i for i, t in enumerate(target) if dn_key(t.dn) == key), None)
    if hit is not None and target[hit].kind == p.kind:
        t = target[hit]
        contact = _single_contact(p, target, index, kept) if p.kind == "user" else None
        return Outcome(p, "matched", t, "resolved", f"{said}: {t.dn}", (t.dn,), contact)
    if (hit is None or target[hit].kind == "contact") and created is not None:
        # A contact the admin named, and the user an earlier apply created to merge it into: the
        # merge is finished (or is already done: the contact is gone).
        contact = target[hit] if hit is not None else None
        why = f"{said}: {choice}; the user created for it is {created.dn} (login {login})"
        return Outcome(p, "matched", created, "resolved", why, (created.dn,), contact)
    if hit is None:
        why = f"{said}: {choice}, which is not among the target's people (check the DN and the target bases)"
        return Outcome(p, "conflict", None, "resolved", why, (choice,))
    t = target[hit]
    if t.kind == "contact" and p.kind == "user":  # merged even if restored before: the admin says so
        return Outcome(p, "contact_to_merge", t, "resolved", f"{said}: contact {t.dn}", (t.dn,))
    return Outcome(p, "conflict", None, "resolved", f"{said}: {t.dn}, a {t.kind}, not a {p.kind}", (t.dn,))


def _single_contact(
    p: Person, target: Sequence[Person], index: Mapping[_Key, list[tuple[int, str]]], kept: Collection[str]
) -> Person | None:
    contacts = _contacts_for(p, target, index, kept)
    return target[next(iter(contacts))] if len(contacts) == 1 else None


def _contacts_for(
    p: Person, target: Sequence[Person], index: Mapping[_Key, list[tuple[int, str]]], kept: Collection[str] = ()
) -> dict[int, str]:
    found = _lookup(index, target, "smtp", "contact", p)
    for i, why in _lookup(index, target, "x500", "contact", p).items():
        found.setdefault(i, why)
    return {i: why for i, why in found.items() if dn_key(target[i].dn) not in kept}


def _kept_note(
    p: Person, target: Sequence[Person], index: Mapping[_Key, list[tuple[int, str]]], kept: Collection[str]
) -> str:
    if not kept:
        return ""
    dns = [dn for dn in _dns(target, _contacts_for(p, target, index)) if dn_key(dn) in kept]
    return "".join(f"; contact {dn} was restored after a merge: not merged again" for dn in dns)


def _decide(
    p: Person,
    target: Sequence[Person],
    index: Mapping[_Key, list[tuple[int, str]]],
    rules: Sequence[str],
    dialect: Dialect,
    kept: Collection[str],
    restored: Collection[str],
) -> Outcome:
    found = [(rule, hits) for rule in rules if (hits := _lookup(index, target, rule, p.kind, p))]
    if not found and p.kind == "user":
        # Creating this person would give the target a second entry with its address or login.
        clash = [
            (rule, hits)
            for rule in ("smtp", "x500", "login")
            if rule not in rules
            and (hits := _lookup(index, target, rule, "user", replace(p, login=new_login(p, dialect))))
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
        contacts = _contacts_for(p, target, index, kept) if p.kind == "user" else {}
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
        note = _kept_note(p, target, index, restored) if p.kind == "user" else ""
        return Outcome(p, "to_create", None, None, f"no target {p.kind} found by rules {', '.join(rules)}{note}")
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
        contacts = _contacts_for(p, target, index, kept)
        reason += _kept_note(p, target, index, restored)
        if len(contacts) == 1:
            contact = target[next(iter(contacts))]
        elif contacts:
            listed = "; ".join(_dns(target, contacts))
            reason += f"; {len(contacts)} target contacts share its addresses, none merged: {listed}"
    return Outcome(p, "matched", target[i], rule, reason, (target[i].dn,), contact)


def _creates(o: Outcome) -> bool:
    """Whether the admin's decision makes ``o`` a new user (to create, or created by an earlier
    apply): "create", or a contact to merge into a new user."""
    if o.resolution is None:
        return False
    if o.resolution == "create" or o.status == "contact_to_merge":
        return True
    return o.status == "matched" and o.target is not None and dn_key(o.target.dn) != dn_key(o.resolution)


def _resolve_claims(
    outcomes: list[Outcome], contact_claims: Mapping[str, list[int]], dialect: Dialect
) -> list[Outcome]:
    """Claims several people make on one thing become conflicts; the admin's resolutions stand."""
    # Two source users sharing an address or a login (their own, or the one a new user would get)
    # would give the target duplicates, and the next run could not tell them apart. Decided over
    # every source user, whatever its outcome, so that a re-plan decides the same.
    by_new_key: dict[str, list[int]] = defaultdict(list)
    for n, o in enumerate(outcomes):
        if o.source.kind == "user":
            keys = {f"address {k}" for k in o.source.smtp_keys} | {f"X500 address {k}" for k in o.source.x500_keys}
            login = new_login(o.source, dialect)
            if login:
                keys.add(f"login {login.casefold()}")
            for k in keys:
                by_new_key[k].append(n)
    out = list(outcomes)
    for key, claims in sorted(by_new_key.items()):
        if len(claims) > 1:
            dns = tuple(sorted(outcomes[n].source.dn for n in claims))
            # The admin's decisions stand, but two people resolved to be created can't both have
            # one login (AD refuses the second; a re-run could not tell them apart).
            creating = [n for n in claims if _creates(outcomes[n])]
            clash = key.startswith("login ") and len(creating) > 1
            for n in claims:
                o = out[n]
                if o.status != "conflict" and (o.resolution is None or (clash and n in creating)):
                    out[n] = Outcome(
                        o.source,
                        "conflict",
                        None,
                        None,
                        f"{len(dns)} source people share the {key}: {'; '.join(dns)}",
                        dns,
                    )
    # Two people matched to one target entry. Those in conflict already (above) claim nothing: what
    # they share does not change between runs, while what the rules find for them may (a user
    # created for another of them is found too).
    by_target: dict[str, list[int]] = defaultdict(list)
    for n, o in enumerate(out):
        if o.status == "matched" and o.target is not None:
            by_target[dn_key(o.target.dn)].append(n)
    for claims in by_target.values():
        if len(claims) > 1:
            dns = tuple(sorted(outcomes[n].source.dn for n in claims))
            for n in claims:
                o = outcomes[n]
                assert o.target is not None
                if o.resolution is not None:
                    continue
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
            if o.status == "contact_to_merge" and o.target is not None and o.resolution is None:
                out[n] = Outcome(
                    o.source,
                    "conflict",
                    None,
                    "contact",
                    f"contact {o.target.dn} has addresses of {len(dns)} source people: {'; '.join(dns)}",
                    (o.target.dn, *dns),
                )
            elif (
                o.status == "matched"
                and o.contact is not None
                and dn_key(o.contact.dn) == contact_key
                and (o.resolution is None or dn_key(o.resolution) != contact_key)
            ):
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
    attrs_to_copy: dict[str, list[str | bytes]] = field(hash=False)
    address_attribute: str
    addresses: tuple[str, ...]
    groups_to_move: tuple[str, ...]
    contact_ldif: str
    reason: str
    not_copied: tuple[str, ...] = ()  # "attribute: why", each contact attribute left behind
    contact_groups: tuple[str, ...] = ()  # every group the contact is in (for a restore)


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
class SetManager:
    """Set ``manager`` on an entry that has none, once both it and the manager exist: after every
    creation, so that new people managing each other (a cycle) are both linked."""

    source: Person
    dn: str
    manager: str
    reason: str = "the source's manager, mapped through the identity map"


@dataclass(frozen=True, slots=True)
class Skip:
    source: Person
    reason: str
    finding: bool  # True: the operator must decide (ambiguous, conflict, name taken)


Action = CreateUser | MergeContact | AddAddresses | SetMailAttributes | SetManager | Skip


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
    created: bool = False  # the target entry is this plan's CreateUser (exists only once it is done)
    contact: str | None = None  # a contact this plan merges into the target entry


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


@dataclass(frozen=True, slots=True)
class Precondition:
    """One thing the target must allow before ``apply`` writes anything. ``ok``: True (holds),
    False (fails: apply writes nothing) or None (could not be checked; ``message`` says why)."""

    check: str  # "container", "rights", "object class", "attribute", "lock marker", "schema"
    ok: bool | None
    message: str


@dataclass(slots=True)
class DirectoryPlan:
    actions: list[Action] = field(default_factory=list)
    identity: IdentityMap = field(default_factory=IdentityMap)
    notes: list[str] = field(default_factory=list)
    preconditions: list[Precondition] = field(default_factory=list)

    @property
    def blocked(self) -> list[Precondition]:
        """The preconditions that fail: apply writes nothing while there is one."""
        return [p for p in self.preconditions if p.ok is False]

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


# sAMAccountName: at most 20 characters (the SAM's limit; longer names break NetBIOS logons and
# the target's own tools), none of " / \ [ ] : ; | = , + * ? < > @, not ending with a period.
AD_LOGIN_MAX = 20
_AD_LOGIN_BAD = frozenset('"/\\[]:;|=,+*?<>@')


def new_login(p: Person, dialect: Dialect) -> str:
    """The login a user created for ``p`` gets (sAMAccountName / uid); empty if none.

    The source's login, else the local part of its first SMTP address; for AD without the
    characters AD refuses, cut to 20 characters and with no trailing period or space."""
    login = _login_of(p) or ""
    if dialect == "ad":
        login = "".join(c for c in login if c not in _AD_LOGIN_BAD and c.isprintable())
        login = login[:AD_LOGIN_MAX].rstrip(". ")
    return login


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


def _ldif_of(c: Person, entry: Mapping[str, Sequence[str | bytes]] | None = None) -> str:
    """The contact's LDIF, every group it is in as a ``# memberOf:`` comment first (a generic
    directory has no memberOf to keep them). ``entry``: every attribute as the server stores it."""
    attrs: dict[str, list[str | bytes]]
    if entry:
        attrs = _contact_values(c, entry)  # text where it is UTF-8: an LDIF people can read
    else:
        attrs = {"objectClass": list(AD_CONTACT_CLASSES)}
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
    manager: str | None = None  # the mapped manager DN, set after every creation (SetManager)
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
    entries: Mapping[str, Mapping[str, Sequence[str | bytes]]] | None = None,
    schema: Schema | None = None,
    upn_suffix: str = "",
    taken_upns: Collection[str] = (),
) -> DirectoryPlan:
    """The actions for ``outcomes`` (from :func:`match_people`), see the module's table.

    ``create_template`` and ``mail_attrs_template`` map attribute -> one value with placeholders
    ``${login} ${mail} ${primary_smtp} ${given} ${sn}`` (the target login; the source mail,
    primary SMTP address, givenName, sn); ``objectClass`` in ``create_template`` is a space-
    separated list. A value that renders empty is left out, with a note. ``lock_marker``: the
    attributes that disable a generic LDAP account (required for that dialect). ``target_dns``:
    every DN the target holds now, so a new user never takes a name already in use.
    ``entries``: every stored attribute (``dn_key`` -> attribute -> values) of the contacts to
    merge and of the users they merge into, so a merge copies all the contact knew; ``schema``:
    the target's, to copy only what the user's object classes allow. ``upn_suffix`` (AD): the
    suffix of created users' userPrincipalName; ``taken_upns``: those the target holds already.
    Raises ValueError for a bad template or a missing lock marker.
    """
    if dialect == "generic" and not lock_marker:
        raise ValueError("the generic LDAP dialect needs a lock marker: created users must not be able to log in")
    plan = DirectoryPlan()
    login_attr = "sAMAccountName" if dialect == "ad" else "uid"
    rdn_attr = "CN" if dialect == "ad" else "cn"
    address_attr = "proxyAddresses" if dialect == "ad" else alias_attribute
    entries = entries or {}
    merge_rules = _MergeRules(schema, frozenset(k.lower() for k in (lock_marker or {})), address_attr)

    taken = {dn_key(d) for d in target_dns}
    for o in outcomes:
        for p in (o.target, o.contact):
            if p is not None:
                taken.add(dn_key(p.dn))
    upns = {u.casefold() for u in taken_upns}

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
        cn, login = _cn_of(o.source), new_login(o.source, dialect) or None
        attrs, notes = _entry(o.source, cn, login, dialect, create_template, mail_attrs_template, lock_marker,
                              keep_old_addresses, login_attr, address_attr)  # fmt: skip
        # A person the admin resolved is found again by that resolution, not by the rules.
        if (
            o.rules
            and o.resolution is None
            and not _refound(o.source, attrs, o.rules, dialect, login_attr, address_attr)
        ):
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
        if dialect == "ad" and not any(k.lower() == "userprincipalname" for k in attrs):
            upn, note = _upn(o.source, login, upn_suffix, upns)
            if upn:
                attrs["userPrincipalName"] = [upn]
                upns.add(upn.casefold())
            if note:
                notes.append(note)
        taken.add(dn_key(dn))
        creations.append(_Creation(o, cn, dn, login, attrs, notes=notes))

    # 2. Managers, mapped through the identity map. A manager created by this plan is set after
    #    every creation (SetManager): people managing each other are then both linked.
    mapped: dict[str, str] = {}
    for o in outcomes:
        if o.status == "matched" and o.target is not None:
            mapped[dn_key(o.source.dn)] = o.target.dn
    for c in creations:
        mapped[dn_key(c.outcome.source.dn)] = c.dn
    created_keys = {dn_key(c.dn) for c in creations}
    later: list[SetManager] = []
    for c in creations:
        manager = c.outcome.source.first("manager")
        if manager is None:
            continue
        target_manager = mapped.get(dn_key(manager))
        if target_manager is None:
            c.notes.append(f"manager {manager} is neither matched nor created: not set")
        elif dn_key(target_manager) in created_keys:
            c.manager = target_manager
            c.notes.append(f"manager {target_manager} is created by this plan too: set once both exist")
        else:
            c.attrs["manager"] = [target_manager]

    # 3. Creations (and their contact merges).
    for c in creations:
        o, attrs = c.outcome, c.attrs
        reason = o.reason if o.status == "to_create" else f"no target user; {o.reason}"
        plan.actions.append(CreateUser(o.source, c.dn, attrs, f"{reason}: created disabled", tuple(c.notes)))
        how, contact = "created", None
        if o.status == "contact_to_merge" and o.target is not None:
            plan.actions.append(
                _merge(
                    o.source,
                    o.target,
                    c.dn,
                    attrs,
                    attrs["objectClass"],
                    (),
                    dialect,
                    address_attr,
                    entries.get(dn_key(o.target.dn)),
                    merge_rules,
                )
            )
            how, contact = f"created, contact {o.target.dn} merged", o.target.dn
        login = attrs.get(login_attr, [None])[0]
        mail = attrs.get("mail", [None])[0]
        plan.identity.rows.append(
            IdentityRow(
                o.source.dn,
                o.source.login,
                o.source.primary_smtp,
                c.dn,
                login,
                mail,
                how,
                created=True,
                contact=contact,
            )
        )
        if c.manager is not None:
            later.append(SetManager(o.source, c.dn, c.manager, "the source's manager, created by this plan too"))

    # 4. Matched people: only what is missing.
    dropped_x500 = False
    for o in outcomes:
        if o.status != "matched" or o.target is None:
            continue
        actions, target_mail, dropped = _update(
            o, dialect, mail_attrs_template, keep_old_addresses, address_attr, entries, merge_rules
        )
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
                contact=o.contact.dn
                if o.contact is not None and any(isinstance(a, MergeContact) for a in actions)
                else None,
            )
        )
        manager = o.source.first("manager")
        if o.source.kind == "user" and o.target.kind == "user" and manager and o.target.first("manager") is None:
            target_manager = mapped.get(dn_key(manager))
            if target_manager is not None and dn_key(target_manager) != dn_key(o.target.dn):
                later.append(
                    SetManager(
                        o.source,
                        o.target.dn,
                        target_manager,
                        f"matched by {o.rule}; the target has no manager: the source's",
                    )
                )
    if dropped_x500:
        plan.notes.append("X500 addresses can't be kept in a generic LDAP directory: they were left out")

    # 5. References, now that every entry they name exists.
    plan.actions.extend(later)

    # 6. Skips.
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


def _upn(p: Person, login: str | None, suffix: str, taken: Collection[str]) -> tuple[str | None, str]:
    """The userPrincipalName of a user created in AD, and a note when it is not the obvious one:
    the source UPN's name part (else the login) at the target's suffix; the login if that is taken."""
    if not suffix:
        return None, "no userPrincipalName: the target's DNS domain is unknown (set upn_suffix)"
    local = p.upn.split("@", 1)[0].strip() if p.upn and "@" in p.upn else ""
    for name in dict.fromkeys(x for x in (local, login or "") if x):
        upn = f"{name}@{suffix}"
        if upn.casefold() not in taken:
            note = "" if name == (local or login) else f"userPrincipalName {local}@{suffix} is taken: {upn} instead"
            return upn, note
    return None, f"no userPrincipalName: {', '.join(f'{n}@{suffix}' for n in (local, login) if n)} taken"


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
    """The whole entry of a user created from ``p`` (but its manager and UPN), and notes."""
    attrs: dict[str, list[str]] = {"objectClass": list(AD_USER_CLASSES if dialect == "ad" else GENERIC_USER_CLASSES)}
    for k, vs in p.attrs.items():
        kept = [v for v in vs if v.strip()]
        if kept and k.lower() not in _NOT_COPIED:
            attrs[k] = kept
    attrs["cn"] = [cn]
    notes: list[str] = []
    if login:
        attrs[login_attr] = [login]
        if login != (_login_of(p) or ""):
            notes.append(f"login {login}: {_login_of(p)} as AD takes it (at most {AD_LOGIN_MAX} characters)")
    if dialect == "generic" and not any(k.lower() == "sn" for k in attrs):
        attrs["sn"] = [cn]  # inetOrgPerson requires sn
        notes.append("no sn: the cn is used (inetOrgPerson requires sn)")
    if dialect == "ad":
        attrs["userAccountControl"] = [AD_DISABLED_UAC]
        notes += _ad_names(attrs, cn)
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


def _ad_names(attrs: dict[str, list[str]], cn: str) -> list[str]:
    """displayName, givenName and sn as AD's tools show a person (Users and Computers, the address
    book): from the source when it has them, else from the name. Returns notes."""
    have = {k.lower() for k in attrs}
    notes: list[str] = []
    if "displayname" not in have:
        attrs["displayName"] = [cn]
    if "givenname" in have or "sn" in have:
        return notes
    name = attrs.get("displayName", [cn])[0].strip()
    if name.count(",") == 1:  # "Smith, John"
        last, first = (x.strip() for x in name.split(","))
    else:
        words = name.split()
        first, last = (" ".join(words[:-1]), words[-1]) if len(words) > 1 else ("", "")
    if first and last:
        attrs["givenName"], attrs["sn"] = [first], [last]
        notes.append(f"no givenName or sn: {first!r} and {last!r} from the name {name!r}")
    return notes


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
    dn: str, attrs: Mapping[str, Sequence[str | bytes]], dialect: Dialect, address_attr: str
) -> tuple[frozenset[str], frozenset[str]]:
    """The SMTP and X500 keys an entry we are about to write will hold."""
    mail = next((v for v in attrs.get("mail", ()) if isinstance(v, str)), None)
    values = [v for v in attrs.get(address_attr, ()) if isinstance(v, str)]
    proxies = tuple(values) if dialect == "ad" else tuple(as_secondary_smtp(v) for v in values)
    p = Person(dn, "user", mail=mail, proxy_addresses=proxies)
    return p.smtp_keys, p.x500_keys


# A merge carries the contact's addresses itself (as addresses), and the entry's names, classes
# and memberships are the user's own: these are never copied, and not worth naming.
_MERGE_HANDLED = frozenset(
    {"objectclass", "cn", "name", "distinguishedname", "mail", "proxyaddresses", "legacyexchangedn", "member"}
)
# Operational and system attributes as servers return them with "*" (AD marks most of them
# NO-USER-MODIFICATION in its schema; some, like objectCategory, it sets itself all the same).
SYSTEM_ATTRIBUTES = frozenset(
    {
        "objectguid",
        "objectsid",
        "objectcategory",
        "ntsecuritydescriptor",
        "instancetype",
        "whencreated",
        "whenchanged",
        "usncreated",
        "usnchanged",
        "dscorepropagationdata",
        "memberof",
        "samaccounttype",
        "iscriticalsystemobject",
        "replpropertymetadata",
        "showinadvancedviewonly",
        "entryuuid",
        "entrycsn",
        "createtimestamp",
        "modifytimestamp",
        "creatorsname",
        "modifiersname",
        "structuralobjectclass",
        "entrydn",
        "subschemasubentry",
        "hassubordinates",
        "distinguishedname",
        "name",
    }
)
# Contact attributes that would change what the user *is* if copied: named, never copied.
_MERGE_REFUSED = {
    "targetaddress": "the contact's forwarding address: the user's mail must stay in its own mailbox",
    "msexchrecipienttypedetails": "marks a mail contact, not a mailbox",
    "msexchrecipientdisplaytype": "marks a mail contact, not a mailbox",
    "manager": "the user's manager comes from the source directory",
    "useraccountcontrol": "the account's state is the user's own",
}


@dataclass(frozen=True, slots=True)
class _MergeRules:
    schema: Schema | None
    lock: frozenset[str]  # the lock marker's attributes (lower case)
    address_attr: str


def _contact_values(contact: Person, entry: Mapping[str, Sequence[str | bytes]] | None) -> dict[str, list[str | bytes]]:
    """The contact's attributes: every stored one when ``entry`` is known (text where it is
    UTF-8, else bytes), else those the connector read."""
    if not entry:
        return {k: list(v) for k, v in contact.attrs.items() if v}
    out: dict[str, list[str | bytes]] = {}
    for k, values in entry.items():
        kept: list[str | bytes] = []
        for v in values:
            if isinstance(v, bytes):
                try:
                    kept.append(v.decode("utf-8"))
                except UnicodeDecodeError:
                    kept.append(v)
            else:
                kept.append(v)
        if kept:
            out[k] = kept
    return out


def _merge(
    source: Person,
    contact: Person,
    user_dn: str,
    user_attrs: Mapping[str, Sequence[str | bytes]],
    user_classes: Sequence[str],
    user_groups: Sequence[str],
    dialect: Dialect,
    address_attr: str,
    contact_entry: Mapping[str, Sequence[str | bytes]] | None,
    rules: _MergeRules,
    have: tuple[frozenset[str], frozenset[str]] | None = None,
) -> MergeContact:
    """Fold ``contact`` into the user: every attribute the contact has, the user lacks and the
    target schema allows for the user's object classes; each one left behind is named (but
    operational and system attributes, and what the merge carries otherwise: names, addresses)."""
    present = {k.lower() for k, v in user_attrs.items() if v}
    allowed = rules.schema.allowed(user_classes) if rules.schema is not None and user_classes else None
    copy: dict[str, list[str | bytes]] = {}
    not_copied: list[str] = []
    for k, values in _contact_values(contact, contact_entry).items():
        low = k.lower()
        if low in present or low in _MERGE_HANDLED or low == rules.address_attr.lower():
            continue
        if low in SYSTEM_ATTRIBUTES:
            continue
        if rules.schema is not None and rules.schema.attribute(k) is not None and not rules.schema.user_attribute(k):
            continue  # operational, or written by the server only
        if low in _MERGE_REFUSED:
            not_copied.append(f"{k}: {_MERGE_REFUSED[low]}")
        elif low in rules.lock:
            not_copied.append(f"{k}: an attribute of the lock marker, the user's own")
        elif rules.schema is not None and rules.schema.attribute(k) is None:
            not_copied.append(f"{k}: the target schema has no such attribute")
        elif allowed is not None and low not in allowed:
            not_copied.append(f"{k}: the target schema does not allow it for a {' '.join(user_classes)} entry")
        else:
            copy[k] = list(values)
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
        _ldif_of(contact, contact_entry),
        f"contact {contact.dn} stands for the same person: merged into {user_dn}, then deleted",
        tuple(not_copied),
        tuple(contact.member_of),
    )


def _update(
    o: Outcome,
    dialect: Dialect,
    mail_template: Mapping[str, str],
    keep_old: bool,
    address_attr: str,
    entries: Mapping[str, Mapping[str, Sequence[str | bytes]]],
    merge_rules: _MergeRules,
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
        # What the user holds once the changes above are made: its stored entry when read, the
        # attributes the connector read, the mail attributes just set.
        current: dict[str, list[str | bytes]] = {k: list(v) for k, v in t.attrs.items()}
        for k, v in (entries.get(dn_key(t.dn)) or {}).items():
            current.setdefault(k, list(v))
        current.update({k: [v] for k, v in change.items()})
        actions.append(
            _merge(
                p,
                o.contact,
                t.dn,
                current,
                t.object_classes,
                t.member_of,
                dialect,
                address_attr,
                entries.get(dn_key(o.contact.dn)),
                merge_rules,
                (frozenset(smtp_keys), frozenset(x500_keys)),
            )
        )
    return actions, after.primary_smtp, dropped


# ------------------------------------------------------------------------------- preconditions


def check_preconditions(
    plan: DirectoryPlan,
    *,
    dialect: Dialect,
    target_container: str,
    container_exists: bool,
    child_classes: Collection[str] | None,
    schema: Schema | None,
    lock_marker: Mapping[str, str] | None,
    people: Sequence[Person] = (),
) -> list[Precondition]:
    """Everything the target must allow for ``plan`` that can be known before writing, each
    stated once (a missing container is one problem, not one refusal per user to create).

    ``container_exists`` and ``child_classes`` are what the server says of ``target_container``
    (``child_classes``: AD's allowedChildClassesEffective for the bound account; None where the
    server does not say). ``schema``: the target's (None: could not be read). ``people``: the
    target's entries, for the object classes of the entries the plan changes.
    """
    out: list[Precondition] = []
    creates = [a for a in plan.actions if isinstance(a, CreateUser)]
    classes_of = {dn_key(p.dn): tuple(p.object_classes) for p in people}
    for a in creates:
        classes_of[dn_key(a.dn)] = tuple(a.attrs.get("objectClass", ()))

    # The container.
    if not container_exists:
        out.append(
            Precondition(
                "container",
                False,
                f"target_container {target_container} does not exist in the "
                "target directory: create it or correct target_container",
            )
        )
    else:
        out.append(Precondition("container", True, f"target_container {target_container} exists"))
        if creates:
            structural = _structural(creates[0].attrs.get("objectClass", []), schema, dialect)
            if child_classes is None:
                out.append(
                    Precondition(
                        "rights",
                        None,
                        f"whether the bind account may create {structural} entries "
                        f"in {target_container}: not checked (the server does not "
                        "publish allowedChildClassesEffective)",
                    )
                )
            elif structural.lower() in {c.lower() for c in child_classes}:
                out.append(
                    Precondition(
                        "rights", True, f"the bind account may create {structural} entries in {target_container}"
                    )
                )
            else:
                out.append(
                    Precondition(
                        "rights",
                        False,
                        f"the bind account may not create {structural} entries in "
                        f"{target_container} (not in its allowedChildClassesEffective "
                        "there): give it the right, or bind as another account",
                    )
                )
    changed = {dn_key(d) for a in plan.actions for d in _changed_dns(a)} - {dn_key(a.dn) for a in creates}
    deletes = len(plan.of(MergeContact))
    if changed or deletes:
        out.append(
            Precondition(
                "rights",
                None,
                f"rights to change {len(changed)} existing entries and delete "
                f"{deletes} merged contacts: not checked before apply (the server "
                "decides per entry; a refusal names the entry)",
            )
        )

    # The schema.
    lock = {k.lower(): k for k in (lock_marker or {})} if dialect == "generic" else {}
    if schema is None:
        out.append(
            Precondition(
                "schema",
                None,
                "the target's schema could not be read: the attributes and object "
                "classes the plan writes were not checked",
            )
        )
        return out
    unknown_classes: dict[str, int] = defaultdict(int)
    for a in creates:
        for c in a.attrs.get("objectClass", []):
            if schema.object_class(c) is None:
                unknown_classes[c] += 1
    for c, n in sorted(unknown_classes.items()):
        out.append(
            Precondition(
                "object class", False, f"object class {c} (of {n} users to create): the target schema has no such class"
            )
        )
    unknown: dict[str, list[str]] = defaultdict(list)
    system: dict[str, list[str]] = defaultdict(list)
    refused: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    allowed_cache: dict[tuple[str, ...], frozenset[str]] = {}
    for action in plan.actions:
        for dn, attr, what in _writes(action):
            if attr.lower() in lock:
                continue
            definition = schema.attribute(attr)
            if definition is None:
                unknown[attr].append(what)
                continue
            if not schema.user_attribute(attr):
                system[attr].append(what)
                continue
            classes = classes_of.get(dn_key(dn), ())
            if not classes or any(schema.object_class(c) is None for c in classes):
                continue  # unknown classes are reported above; an entry read without classes: not checked
            if classes not in allowed_cache:
                allowed_cache[classes] = schema.allowed(classes)
            if attr.lower() not in allowed_cache[classes]:
                refused[(attr, classes)].append(what)
    for attr, whats in sorted(unknown.items()):
        out.append(
            Precondition(
                "attribute",
                False,
                f"attribute {attr} ({_count(whats)}): the target schema has no "
                "such attribute; remove it from the templates or extend the "
                "schema",
            )
        )
    for attr, whats in sorted(system.items()):
        out.append(
            Precondition(
                "attribute",
                False,
                f"attribute {attr} ({_count(whats)}): the target schema lets only the server write it",
            )
        )
    for (attr, classes), whats in sorted(refused.items()):
        out.append(
            Precondition(
                "attribute",
                False,
                f"attribute {attr} ({_count(whats)}): the target schema does not "
                f"allow it for object classes {' '.join(classes)}",
            )
        )
    if not (unknown_classes or unknown or system or refused):
        out.append(
            Precondition(
                "schema",
                True,
                "the target schema has every attribute and object class the plan writes, allowed where it writes them",
            )
        )
    # The lock marker (generic): what keeps a created user from logging in.
    create_classes = tuple(creates[0].attrs.get("objectClass", ())) if creates else tuple(GENERIC_USER_CLASSES)
    for low, attr in sorted(lock.items()):
        definition = schema.attribute(attr)
        if definition is None:
            out.append(
                Precondition(
                    "lock marker",
                    False,
                    f"lock marker {attr}: the target schema has no such "
                    "attribute (pwdAccountLockedTime needs the ppolicy "
                    "overlay); created users could not be locked",
                )
            )
        elif definition.usage != "userApplications":
            out.append(
                Precondition(
                    "lock marker",
                    True,
                    f"lock marker {attr}: an operational attribute the bind "
                    "account must be allowed to write (not checked)",
                )
            )
        elif definition.no_user_modification:
            out.append(
                Precondition(
                    "lock marker", False, f"lock marker {attr}: the target schema lets only the server write it"
                )
            )
        elif low not in schema.allowed(create_classes):
            out.append(
                Precondition(
                    "lock marker",
                    False,
                    f"lock marker {attr}: not allowed for object classes "
                    f"{' '.join(create_classes)}; add a class that allows it "
                    "to [directory.create] objectClass",
                )
            )
        else:
            out.append(Precondition("lock marker", True, f"lock marker {attr} is allowed for created users"))
    return out


def _count(whats: Sequence[str]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for w in whats:
        counts[w] += 1
    return ", ".join(f"{n} {w}" for w, n in sorted(counts.items()))


def _structural(classes: Sequence[str], schema: Schema | None, dialect: Dialect) -> str:
    """The structural class of an entry of ``classes``: the one no other listed class derives from."""
    if schema is not None:
        known = [c for c in classes if (oc := schema.object_class(c)) is not None and oc.kind == "STRUCTURAL"]
        supers = {  # names of the classes some known class derives from
            n.lower() for c in known for oc in schema.chain(_sup(schema, c)) for n in oc.names
        }
        for c in reversed(known):
            if c.lower() not in supers:
                return c
    return "user" if dialect == "ad" else "inetOrgPerson"


def _sup(schema: Schema, name: str) -> tuple[str, ...]:
    c = schema.object_class(name)
    return c.sup if c is not None else ()


def _changed_dns(a: Action) -> list[str]:
    if isinstance(a, MergeContact):
        return [a.user_dn, *a.groups_to_move]
    if isinstance(a, AddAddresses | SetMailAttributes | SetManager):
        return [a.dn]
    return []


def _writes(a: Action) -> list[tuple[str, str, str]]:
    """(entry DN, attribute, what) for every attribute an action writes."""
    if isinstance(a, CreateUser):
        return [(a.dn, k, "users to create") for k in a.attrs if k.lower() != "objectclass"]
    if isinstance(a, AddAddresses):
        return [(a.dn, a.attribute, "address additions")]
    if isinstance(a, SetMailAttributes):
        return [(a.dn, k, "mail attribute changes") for k in a.attrs]
    if isinstance(a, SetManager):
        return [(a.dn, "manager", "manager changes")]
    if isinstance(a, MergeContact):
        out = [(a.user_dn, k, "contact merges") for k in a.attrs_to_copy]
        if a.addresses:
            out.append((a.user_dn, a.address_attribute, "contact merges"))
        return out
    return []
