"""The directory engine: read both directories, plan, and carry the plan out on the target.

Joins the LDAP connector, the pure planner (:mod:`mailferry.plan.directory`) and the ledger.
The source directory is only ever read. On the target, users are created and changed; the only
entries ever deleted are contacts merged into users, and each one's LDIF is in the ledger first.

Preconditions: the plan is checked against what the target says of itself (the container, the
bound account's right to create there, the schema) before anything is written; when one fails,
``apply`` writes nothing (:attr:`ApplyResult.blocked`).

Outcomes: each action ends ``done``, ``refused`` (the server's words are a finding) or ``not
attempted`` (it needs an entry whose creation was refused); the identity map and the accounts
CSV hold only target entries that exist.

Resuming: ``apply`` re-reads both directories and re-plans, so what an earlier apply finished is
found again (the created user carries the source's addresses and login) and not repeated. A
contact merge is a sequence of changes; its intent (with the contact's LDIF and every value it
will add to the user) is recorded before the first one, and the plan finishes it on the next run
(the matched user still has the contact standing for it). Every change is journalled in the
ledger as it is made; ``restore`` undoes a merge from that journal.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mailferry.connectors.imap import Endpoint, Login
from mailferry.connectors.ldap import DirectoryOptions, DirectoryRefused, LdapDirectory, LdapEndpoint
from mailferry.errors import UsageError
from mailferry.formats.ldap_schema import Schema
from mailferry.formats.ldif import LdifError, dn_key, entry_to_ldif, ldif_to_entry
from mailferry.model.directory import Person
from mailferry.plan.directory import (
    SYSTEM_ATTRIBUTES,
    AddAddresses,
    CreateUser,
    DirectoryPlan,
    MergeContact,
    Outcome,
    SetMailAttributes,
    SetManager,
    Skip,
    check_preconditions,
    match_people,
    plan_directory,
)
from mailferry.state.ledger import Finding, SqliteLedger


@dataclass(frozen=True, slots=True)
class DirectorySide:
    endpoint: LdapEndpoint
    bind_dn: str
    password: str  # resolved secret: never shown
    options: DirectoryOptions

    def __repr__(self) -> str:
        return f"DirectorySide({self.endpoint.host}:{self.endpoint.port}, bind_dn={self.bind_dn!r})"


@dataclass(frozen=True, slots=True)
class DirectoryJob:
    source: DirectorySide
    target: DirectorySide
    target_container: str
    rules: tuple[str, ...]
    include_contacts: bool
    include_groups: bool
    keep_old_addresses: bool
    create: dict[str, str]
    mail_attributes: dict[str, str]
    lock: dict[str, str]
    alias_attribute: str
    # Confirm mailboxes: log in to the target IMAP server as each user (admin login).
    imap_endpoint: Endpoint | None = None
    imap_admin: Login | None = None  # user is filled per account
    # The admin's decisions: source DN -> target DN or "create".
    resolutions: Mapping[str, str] = field(default_factory=dict)
    upn_suffix: str = ""  # AD: of created users' userPrincipalName; empty: the target's DNS domain


class DirectoryReporter(Protocol):
    """Progress of ``directory apply``, for the CLI to show (the engine never prints)."""

    def started(self, actions: int) -> None:
        """The plan is made: ``actions`` actions follow (skips included)."""

    def action(self, kind: str, dn: str, outcome: str) -> None:
        """One action ended: ``outcome`` is done, refused, not attempted or skipped."""


class _Silent:
    def started(self, actions: int) -> None:
        pass

    def action(self, kind: str, dn: str, outcome: str) -> None:
        pass


@dataclass(slots=True)
class ApplyResult:
    created: int = 0
    merged: int = 0
    addresses: int = 0
    mail_attributes: int = 0
    managers: int = 0
    skipped: int = 0
    failed: int = 0
    not_attempted: int = 0
    confirmed: int = 0
    not_alive: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    identity: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # each action and its outcome
    preconditions: list[dict[str, Any]] = field(default_factory=list)
    blocked: bool = False  # a precondition failed: nothing was written
    seconds: float = 0.0
    plan_seconds: float = 0.0


def open_directory(side: DirectorySide, *, readonly: bool, label: str) -> LdapDirectory:
    return LdapDirectory(side.endpoint, side.bind_dn, side.password, side.options, readonly=readonly, label=label)


def read_people(job: DirectoryJob, target: LdapDirectory | None = None) -> tuple[list[Person], list[Person], list[str]]:
    """Both directories' people, and the problems met reading them (malformed SIDs, ...).
    ``target``: an open target connection to read through (apply's own), else one is opened."""
    src = open_directory(job.source, readonly=True, label="source directory")
    try:
        sp, sprob = src.people()
    finally:
        src.close()
    tgt = target or open_directory(job.target, readonly=True, label="target directory")
    try:
        tp, tprob = tgt.people()
    finally:
        if target is None:
            tgt.close()
    return sp, tp, sprob + tprob


def kept_contacts(ledger: SqliteLedger) -> set[str]:
    """Contacts ``restore`` put back after a merge (and not merged again since): never merged
    again unless the project file resolves a person to one."""
    kept: set[str] = set()
    for change in ledger.directory_changes():
        if change["kind"] == "restore-contact":
            kept.add(dn_key(change["dn"]))
        elif change["kind"] == "merge-contact":
            kept.discard(dn_key(str(change["detail"].get("contact", ""))))
    return kept


def make_plan(
    job: DirectoryJob,
    source: Sequence[Person],
    target: Sequence[Person],
    tgt: LdapDirectory,
    kept: Collection[str] = (),
) -> tuple[list[Outcome], DirectoryPlan, list[str]]:
    """Match, plan and check the plan's preconditions, reading through ``tgt`` what the target
    says of itself (schema, container, the entries a merge involves). Returns the outcomes, the
    plan and problems (a resolution naming no source person)."""
    dialect = job.target.options.dialect
    outcomes = match_people(
        source,
        target,
        job.rules,  # type: ignore[arg-type]
        include_contacts=job.include_contacts,
        include_groups=job.include_groups,
        dialect=dialect,
        resolutions=job.resolutions,
        target_container=job.target_container,
        kept_contacts=kept,
    )
    known = {dn_key(p.dn) for p in source}
    problems = [
        f"the project file resolves {dn}, which is not among the source's people: ignored"
        for dn in job.resolutions
        if dn_key(dn) not in known
    ]
    merging: list[str] = []
    for o in outcomes:
        if o.status == "contact_to_merge" and o.target is not None and o.source.kind == "user":
            merging.append(o.target.dn)
        elif o.status == "matched" and o.target is not None and o.contact is not None:
            merging += [o.contact.dn, o.target.dn]
    entries = tgt.entries(merging) if merging else {}
    schema: Schema | None = tgt.schema()
    container = tgt.container(job.target_container)
    plan = plan_directory(
        outcomes,
        target_container=job.target_container,
        create_template=job.create,
        keep_old_addresses=job.keep_old_addresses,
        dialect=dialect,
        mail_attrs_template=job.mail_attributes,
        lock_marker=job.lock or None,
        alias_attribute=job.alias_attribute,
        target_dns=[p.dn for p in target],
        entries=entries,
        schema=schema,
        upn_suffix=job.upn_suffix or tgt.dns_domain,
        taken_upns=[p.upn for p in target if p.upn],
    )
    plan.preconditions = check_preconditions(
        plan,
        dialect=dialect,
        target_container=job.target_container,
        container_exists=container.exists,
        child_classes=container.child_classes,
        schema=schema,
        lock_marker=job.lock or None,
        people=target,
    )
    return outcomes, plan, problems


def identity_rows(plan: DirectoryPlan, outcomes: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """The identity map as rows. With ``outcomes`` (action position -> outcome, from an apply):
    only entries that exist (a creation that was not done is left out), and each contact merge
    that was not done said so."""
    created: set[str] | None = None
    merges: dict[str, str] = {}
    if outcomes is not None:
        created = set()
        for n, a in enumerate(plan.actions):
            if isinstance(a, CreateUser) and outcomes.get(n) == "done":
                created.add(dn_key(a.dn))
            elif isinstance(a, MergeContact):
                merges[dn_key(a.contact.dn)] = outcomes.get(n, "not attempted")
    rows: list[dict[str, Any]] = []
    for r in plan.identity.rows:
        if created is not None and r.created and dn_key(r.target_dn) not in created:
            continue
        how = r.how
        merged = merges.get(dn_key(r.contact)) if r.contact else None
        if merged not in (None, "done"):
            how = f"{'created' if r.created else how}; contact {r.contact} not merged ({merged})"
        rows.append(
            {
                "source_dn": r.source_dn,
                "source_login": r.source_login,
                "source_mail": r.source_mail,
                "target_dn": r.target_dn,
                "target_login": r.target_login,
                "target_mail": r.target_mail,
                "how": how,
                "kind": r.kind,
            }
        )
    return rows


def accounts_csv(rows: Sequence[dict[str, Any]], key: str = "login") -> str:
    """The accounts list ``migrate`` reads, users only: source -> target login (``key`` "login":
    sAMAccountName/uid) or primary address (``key`` "mail"), what each IMAP server logs in by."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["source_user", "target_user"])
    for r in rows:
        s, t = r.get(f"source_{key}"), r.get(f"target_{key}")
        if r["kind"] == "user" and s and t:
            w.writerow([s, t])
    return out.getvalue()


def precondition_rows(plan: DirectoryPlan) -> list[dict[str, Any]]:
    return [{"check": p.check, "ok": p.ok, "message": p.message} for p in plan.preconditions]


def jsonable(values: Sequence[str | bytes]) -> list[str | dict[str, str]]:
    """Values for JSON: text as it is, binary values as ``{"base64": ...}``."""
    return [v if isinstance(v, str) else {"base64": base64.b64encode(v).decode("ascii")} for v in values]


def _from_json(values: Sequence[Any]) -> list[str | bytes]:
    return [base64.b64decode(v["base64"]) if isinstance(v, dict) else str(v) for v in values]


class DirectoryApply:
    def __init__(
        self,
        job: DirectoryJob,
        ledger: SqliteLedger,
        run_id: int,
        note: Callable[[str], None] | None = None,
        reporter: DirectoryReporter | None = None,
    ) -> None:
        self.job = job
        self.ledger = ledger
        self.run_id = run_id
        self.note = note or (lambda _t: None)
        self.reporter: DirectoryReporter = reporter or _Silent()
        self.result = ApplyResult()
        self.key = "login"

    def finding(self, kind: str, dn: str, message: str, hint: str = "", source: str = "") -> None:
        self.result.findings.append({"kind": kind, "dn": dn, "message": message, "hint": hint})
        details = {"dn": dn, "hint": hint} if hint else {"dn": dn}
        self.ledger.add_finding(self.run_id, Finding(source or dn, "", None, f"directory-{kind}", message, details))

    def run(self, accounts_path: Path | None, account_key: str = "login") -> ApplyResult:
        t0 = time.monotonic()
        self.key = account_key
        tgt = open_directory(self.job.target, readonly=False, label="target directory")
        try:
            source, target, problems = read_people(self.job, tgt)
            _outcomes, plan, more = make_plan(self.job, source, target, tgt, kept_contacts(self.ledger))
            for text in problems:
                self.finding("directory-read", "", text)
            for text in more:
                self.finding("resolution", "", text)
            self.result.plan_seconds = round(time.monotonic() - t0, 3)
            self.result.preconditions = precondition_rows(plan)
            if plan.blocked:
                # Nothing is written: not the target, not the identity map, not the accounts CSV.
                self.result.blocked = True
                for failed in plan.blocked:
                    self.finding("precondition", self.job.target_container, failed.message, "nothing was written")
                self.result.seconds = round(time.monotonic() - t0, 3)
                return self.result
            # Merges an earlier run began and whose contact is gone by now are done.
            for m in self.ledger.merges("pending"):
                if not tgt.exists(m["contact_dn"]):
                    self.ledger.end_merge(m["contact_dn"])
            outcomes = self._carry_out(tgt, plan)
        finally:
            tgt.close()
        rows = identity_rows(plan, outcomes)
        self.ledger.save_identity(self.run_id, rows)
        self.result.identity = rows
        if self.job.imap_endpoint is not None and self.job.imap_admin is not None:
            self._confirm(rows)
        if accounts_path is not None:
            write_private(accounts_path, accounts_csv(rows, account_key))
        self.result.seconds = round(time.monotonic() - t0, 3)
        return self.result

    def _carry_out(self, tgt: LdapDirectory, plan: DirectoryPlan) -> dict[int, str]:
        """Every action in order; returns action position -> outcome."""
        self.reporter.started(len(plan.actions))
        missing: set[str] = set()  # entries the plan creates that do not exist: refused or not attempted
        outcomes: dict[int, str] = {}
        for n, a in enumerate(plan.actions):
            dn = _dn_of(a)
            needs = _needs(a, missing)
            message = ""
            if needs is not None:
                outcome = "not attempted"
                message = f"{_kind(a)} {dn}: not attempted: {needs} was not created"
                self.result.not_attempted += 1
                self.finding("not-attempted", dn, message, "resolve the refusal above, then apply again",
                             a.source.dn)  # fmt: skip
            else:
                try:
                    self._do(tgt, a)
                    outcome = "skipped" if isinstance(a, Skip) else "done"
                except DirectoryRefused as e:
                    outcome, message = "refused", e.message
                    self.result.failed += 1
                    self.finding("refused", dn, e.message, e.hint, a.source.dn)
            if outcome != "done" and isinstance(a, CreateUser):
                missing.add(dn_key(a.dn))
            outcomes[n] = outcome
            row: dict[str, Any] = {"action": _kind(a), "dn": dn, "source": a.source.dn, "outcome": outcome}
            if message:
                row["message"] = message
            self.result.actions.append(row)
            self.reporter.action(_kind(a), dn, outcome)
        return outcomes

    def _journal(self, kind: str, dn: str, detail: dict[str, Any]) -> None:
        self.ledger.record_directory_change(self.run_id, kind, dn, detail)

    def _do(self, tgt: LdapDirectory, a: Any) -> None:
        if isinstance(a, CreateUser):
            tgt.add(a.dn, a.attrs)
            self._journal("create", a.dn, {"source": a.source.dn, "attributes": sorted(a.attrs)})
            self.result.created += 1
        elif isinstance(a, MergeContact):
            # The intent first: the contact's LDIF (every stored attribute, read for this plan) and
            # what the merge adds to the user, so that it can be finished, and undone (restore).
            self.ledger.begin_merge(self.run_id, a.contact.dn, a.user_dn, a.contact_ldif, a.groups_to_move)
            self._journal(
                "merge-intent",
                a.contact.dn,
                {
                    "user": a.user_dn,
                    "attributes": {k: jsonable(v) for k, v in a.attrs_to_copy.items()},
                    "address_attribute": a.address_attribute,
                    "addresses": list(a.addresses),
                    "user_groups": list(a.groups_to_move),
                    "contact_groups": list(a.contact_groups),
                },
            )
            if a.attrs_to_copy:
                tgt.modify(a.user_dn, {k: ("replace", v) for k, v in a.attrs_to_copy.items()})
            if a.addresses:
                self._add_values(tgt, a.user_dn, a.address_attribute, a.addresses)
            # Every group the contact is still in, not only those the plan moves: after an interrupted
            # merge the user may be a member already (so the plan moves nothing) while the contact
            # still is one too (a server without referential integrity keeps the dangling member).
            for g in dict.fromkeys([*a.groups_to_move, *a.contact.member_of]):
                self._move_member(tgt, g, a.contact.dn, a.user_dn)
            try:
                tgt.delete(a.contact.dn)
            except DirectoryRefused as e:
                if e.code != "noSuchObject":  # gone already: an earlier, interrupted merge got this far
                    raise
            self.ledger.end_merge(a.contact.dn)
            self._journal(
                "merge-contact",
                a.user_dn,
                {"contact": a.contact.dn, "groups": list(a.groups_to_move), "ldif_kept": True,
                 "not_copied": list(a.not_copied)},
            )  # fmt: skip
            self.result.merged += 1
        elif isinstance(a, AddAddresses):
            self._add_values(tgt, a.dn, a.attribute, a.values)
            self._journal("add-addresses", a.dn, {"attribute": a.attribute, "values": list(a.values)})
            self.result.addresses += 1
        elif isinstance(a, SetMailAttributes):
            tgt.modify(a.dn, {k: ("replace", [v]) for k, v in a.attrs.items()})
            self._journal("mail-attributes", a.dn, dict(a.attrs))
            self.result.mail_attributes += 1
        elif isinstance(a, SetManager):
            tgt.modify(a.dn, {"manager": ("replace", [a.manager])})
            self._journal("set-manager", a.dn, {"manager": a.manager})
            self.result.managers += 1
        elif isinstance(a, Skip):
            self.result.skipped += 1
            if a.finding:
                self.finding(
                    "skipped", a.source.dn, f"{a.source.dn}: {a.reason}", "decide by hand; nothing was changed"
                )

    def _add_values(self, tgt: LdapDirectory, dn: str, attr: str, values: Sequence[str]) -> None:
        """Add the values the entry lacks (re-runnable: values already there are not an error).

        One request in the usual case; only when the server says a value is there already (a
        resumed run) is the entry read to add just the missing ones."""
        try:
            tgt.modify(dn, {attr: ("add", list(values))})
            return
        except DirectoryRefused as e:
            if e.code != "attributeOrValueExists":
                raise
        current = tgt.entry(dn) or {}
        have = {
            v.decode("utf-8", "replace").lower() for k, vs in current.items() if k.lower() == attr.lower() for v in vs
        }
        missing = [v for v in values if v.lower() not in have]
        if missing:
            tgt.modify(dn, {attr: ("add", missing)})

    def _move_member(self, tgt: LdapDirectory, group: str, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` among the group's members: one atomic request in the usual
        case; reading the group first only when that is refused (a resumed run)."""
        try:
            tgt.modify_attribute(group, "member", [("add", [new]), ("delete", [old])])
            return
        except DirectoryRefused as e:
            if e.code not in ("attributeOrValueExists", "noSuchAttribute", "unwillingToPerform"):
                raise
        entry = tgt.entry(group) or {}
        members = {dn_key(v.decode("utf-8", "replace")) for k, vs in entry.items() if k.lower() == "member" for v in vs}
        if dn_key(new) not in members:
            tgt.modify(group, {"member": ("add", [new])})
        if dn_key(old) in members:
            tgt.modify(group, {"member": ("delete", [old])})

    def _confirm(self, rows: Sequence[dict[str, Any]]) -> None:
        """Log in to each user's target mailbox with the admin login, one account after another
        (a Cyrus target creates the mailbox at that first login, and several at once can share
        one: see :mod:`mailferry.engine.alive`), and check that no two hold the same mailbox."""
        from mailferry.connectors.wrappers import RetryPolicy
        from mailferry.engine.alive import MailboxGuard, admin_connection, bring_alive
        from mailferry.engine.migrate import Connection

        assert self.job.imap_endpoint is not None and self.job.imap_admin is not None
        admin, endpoint = self.job.imap_admin, self.job.imap_endpoint
        people: list[tuple[str, str]] = []  # (account, target dn)
        for r in rows:
            account = r.get(f"target_{self.key}")
            if r["kind"] == "user" and account:
                people.append((account, r["target_dn"]))
        if not people:
            return
        targets = [
            (a, Connection(endpoint, Login(a, admin.password, admin.admin, admin.method, admin.master_separator)))
            for a, _dn in people
        ]
        guard = MailboxGuard.of(self.ledger, self.run_id, accounts={a for a, _dn in people})
        alive = bring_alive(
            targets, guard, retry=RetryPolicy(attempts=3), admin=admin_connection(targets[0][1]), every=True
        )
        for account, dn in people:
            failed, shared = alive.failed.get(account), guard.blocked(account)
            if failed is not None:
                self.result.not_alive += 1
                self.finding(
                    "mailbox-not-alive",
                    dn,
                    f"{account}: the target IMAP server does not open this mailbox: {failed.message}",
                    "check the mail attributes template and the server's user lookup",
                )
            elif shared is not None:
                self.result.not_alive += 1
                self.finding("mailbox-collision", dn, f"{account}: {shared.message}", shared.hint)
            else:
                self.result.confirmed += 1


def _kind(a: Any) -> str:
    return {
        CreateUser: "create",
        MergeContact: "merge-contact",
        AddAddresses: "add-addresses",
        SetMailAttributes: "mail-attributes",
        SetManager: "set-manager",
        Skip: "skip",
    }[type(a)]


def _needs(a: Any, missing: Collection[str]) -> str | None:
    """The DN of an entry ``a`` needs that does not exist (its creation was not done), if any."""
    if isinstance(a, MergeContact):
        needed = [a.user_dn]
    elif isinstance(a, SetManager):
        needed = [a.dn, a.manager]
    elif isinstance(a, AddAddresses | SetMailAttributes):
        needed = [a.dn]
    else:
        return None
    return next((d for d in needed if dn_key(d) in missing), None)


def _dn_of(a: Any) -> str:
    for name in ("dn", "user_dn"):
        if hasattr(a, name):
            return str(getattr(a, name))
    return str(a.source.dn)


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


@dataclass(slots=True)
class RestoreResult:
    restored: list[dict[str, Any]] = field(default_factory=list)  # contact, user, groups, ldif
    findings: list[dict[str, Any]] = field(default_factory=list)


class DirectoryRestore:
    """Undo contact merges from the ledger: the contact comes back (its LDIF without operational
    attributes), into the groups it was in; the user loses what the merge gave it (the attribute
    values copied, the addresses added, the groups it joined). Restored contacts are never merged
    again unless the project file resolves a person to one. Writes only the target."""

    def __init__(self, job: DirectoryJob, ledger: SqliteLedger, run_id: int) -> None:
        self.job = job
        self.ledger = ledger
        self.run_id = run_id
        self.result = RestoreResult()

    def finding(self, kind: str, dn: str, message: str, hint: str = "") -> None:
        self.result.findings.append({"kind": kind, "dn": dn, "message": message, "hint": hint})
        self.ledger.add_finding(self.run_id, Finding(dn, "", None, f"directory-{kind}", message, {"dn": dn}))

    def run(self, contact: str | None = None) -> RestoreResult:
        merges = self.ledger.merges()
        if contact is not None:
            merges = [m for m in merges if dn_key(m["contact_dn"]) == dn_key(contact)]
            if not merges:
                raise UsageError(
                    f"the ledger has no merge of a contact {contact}",
                    hint="the merged contacts are in the directory-apply reports (merge-contact actions)",
                )
        intents: dict[str, list[dict[str, Any]]] = {}
        for change in self.ledger.directory_changes():
            if change["kind"] == "merge-intent":
                intents.setdefault(dn_key(change["dn"]), []).append(change["detail"])
        tgt = open_directory(self.job.target, readonly=False, label="target directory")
        try:
            schema = tgt.schema()
            for m in merges:
                try:
                    self._restore(tgt, schema, m, intents.get(dn_key(m["contact_dn"]), []))
                except DirectoryRefused as e:
                    self.finding("refused", m["contact_dn"], e.message, e.hint)
                except LdifError as e:
                    self.finding("restore", m["contact_dn"], f"{m['contact_dn']}: the kept LDIF is unreadable: {e}")
        finally:
            tgt.close()
        return self.result

    def _restore(
        self, tgt: LdapDirectory, schema: Schema | None, m: dict[str, Any], intents: list[dict[str, Any]]
    ) -> None:
        contact_dn, user_dn = m["contact_dn"], m["user_dn"]
        if tgt.exists(contact_dn):
            why = "its merge never got to delete it" if m["state"] == "pending" else "it exists again"
            self.finding("restore", contact_dn, f"{contact_dn}: not restored: {why}")
            return
        dn, attrs = ldif_to_entry(m["contact_ldif"])
        entry = {k: v for k, v in attrs.items() if _restorable(k, schema)}
        groups = _ldif_groups(m["contact_ldif"]) + [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            for k, vs in attrs.items()
            if k.lower() == "memberof"
            for v in vs
        ]
        user_groups = [str(g) for g in m["groups"]]
        copied: dict[str, list[str | bytes]] = {}
        addresses: list[str] = []
        address_attr = ""
        for i in intents:
            groups += [str(g) for g in i.get("contact_groups", [])]
            user_groups += [str(g) for g in i.get("user_groups", [])]
            for k, vs in i.get("attributes", {}).items():
                copied.setdefault(k, [])
                copied[k] += [v for v in _from_json(vs) if v not in copied[k]]
            address_attr = i.get("address_attribute") or address_attr
            addresses += [a for a in i.get("addresses", []) if a not in addresses]
        tgt.add(dn, entry)
        for g in dict.fromkeys(groups):
            self._member(tgt, g, "add", dn)
        for g in dict.fromkeys(user_groups):
            self._member(tgt, g, "delete", user_dn)
        for k, vs in copied.items():
            self._remove(tgt, user_dn, k, vs)
        if address_attr and addresses:
            self._remove(tgt, user_dn, address_attr, addresses)
        ldif = "".join(f"# memberOf: {g}\n" for g in dict.fromkeys(groups)) + entry_to_ldif(dn, entry)
        self.ledger.record_directory_change(
            self.run_id,
            "restore-contact",
            dn,
            {"user": user_dn, "groups": list(dict.fromkeys(groups)), "user_left": list(dict.fromkeys(user_groups)),
             "attributes_removed": sorted(copied), "addresses_removed": addresses},
        )  # fmt: skip
        self.result.restored.append(
            {"contact": dn, "user": user_dn, "groups": list(dict.fromkeys(groups)), "ldif": ldif,
             "attributes_removed": sorted(copied), "addresses_removed": addresses}
        )  # fmt: skip

    def _member(self, tgt: LdapDirectory, group: str, op: str, member: str) -> None:
        try:
            tgt.modify(group, {"member": (op, [member])})
        except DirectoryRefused as e:
            # Already a member / no longer one: what the restore wants. A group gone: said.
            if e.code in ("attributeOrValueExists", "noSuchAttribute", "unwillingToPerform"):
                return
            if e.code == "noSuchObject":
                self.finding("restore", group, f"{group}: the group is gone: {member} not {op}ed")
                return
            raise

    def _remove(self, tgt: LdapDirectory, dn: str, attr: str, values: Sequence[str | bytes]) -> None:
        """Remove the values the merge added (one at a time: a value changed since stays)."""
        for v in values:
            try:
                tgt.modify(dn, {attr: ("delete", [v])})
            except DirectoryRefused as e:
                if e.code not in ("noSuchAttribute", "noSuchObject"):
                    raise


def _restorable(attr: str, schema: Schema | None) -> bool:
    """Whether a kept contact attribute is written back: not operational, not the server's own."""
    low = attr.lower()
    if low == "objectclass":
        return True  # AD's schema marks it system-only: the server keeps it, an add must give it
    if low in SYSTEM_ATTRIBUTES:
        return False
    if schema is not None and schema.attribute(attr) is not None:
        return schema.user_attribute(attr)
    return True


def _ldif_groups(ldif: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in ldif.splitlines() if line.startswith("# memberOf:")]
