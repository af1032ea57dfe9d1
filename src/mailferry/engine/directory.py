"""The directory engine: read both directories, plan, and carry the plan out on the target.

Joins the LDAP connector, the pure planner (:mod:`mailferry.plan.directory`) and the ledger.
The source directory is only ever read. On the target, users are created and changed; the only
entries ever deleted are contacts merged into users, and each one's LDIF is in the ledger first.

Resuming: ``apply`` re-reads both directories and re-plans, so what an earlier apply finished is
found again (the created user carries the source's addresses and login) and not repeated. A
contact merge is a sequence of changes; its intent (with the contact's LDIF) is recorded before
the first one, and the plan finishes it on the next run (the matched user still has the contact
standing for it). Every change is journalled in the ledger as it is made.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailferry.connectors.imap import Endpoint, Login
from mailferry.connectors.ldap import DirectoryOptions, DirectoryRefused, LdapDirectory, LdapEndpoint
from mailferry.formats.ldif import dn_key, entry_to_ldif
from mailferry.model.directory import Person
from mailferry.plan.directory import (
    AddAddresses,
    CreateUser,
    DirectoryPlan,
    MergeContact,
    Outcome,
    SetMailAttributes,
    Skip,
    match_people,
    plan_directory,
)
from mailferry.state.ledger import SqliteLedger


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


@dataclass(slots=True)
class ApplyResult:
    created: int = 0
    merged: int = 0
    addresses: int = 0
    mail_attributes: int = 0
    skipped: int = 0
    failed: int = 0
    confirmed: int = 0
    not_alive: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    identity: list[dict[str, Any]] = field(default_factory=list)
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


def make_plan(
    job: DirectoryJob, source: Sequence[Person], target: Sequence[Person]
) -> tuple[list[Outcome], DirectoryPlan]:
    outcomes = match_people(
        source,
        target,
        job.rules,  # type: ignore[arg-type]
        include_contacts=job.include_contacts,
        include_groups=job.include_groups,
    )
    plan = plan_directory(
        outcomes,
        target_container=job.target_container,
        create_template=job.create,
        keep_old_addresses=job.keep_old_addresses,
        dialect=job.target.options.dialect,
        mail_attrs_template=job.mail_attributes,
        lock_marker=job.lock or None,
        alias_attribute=job.alias_attribute,
        target_dns=[p.dn for p in target],
    )
    return outcomes, plan


def identity_rows(plan: DirectoryPlan) -> list[dict[str, Any]]:
    return [
        {
            "source_dn": r.source_dn,
            "source_login": r.source_login,
            "source_mail": r.source_mail,
            "target_dn": r.target_dn,
            "target_login": r.target_login,
            "target_mail": r.target_mail,
            "how": r.how,
            "kind": r.kind,
        }
        for r in plan.identity.rows
    ]


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


class DirectoryApply:
    def __init__(
        self, job: DirectoryJob, ledger: SqliteLedger, run_id: int, note: Callable[[str], None] | None = None
    ) -> None:
        self.job = job
        self.ledger = ledger
        self.run_id = run_id
        self.note = note or (lambda _t: None)
        self.result = ApplyResult()
        self.key = "login"

    def finding(self, kind: str, dn: str, message: str, hint: str = "") -> None:
        self.result.findings.append({"kind": kind, "dn": dn, "message": message, "hint": hint})

    def run(self, accounts_path: Path | None, account_key: str = "login") -> ApplyResult:
        t0 = time.monotonic()
        self.key = account_key
        tgt = open_directory(self.job.target, readonly=False, label="target directory")
        try:
            source, target, problems = read_people(self.job, tgt)
            for p in problems:
                self.finding("directory-read", "", p)
            _outcomes, plan = make_plan(self.job, source, target)
            self.result.plan_seconds = round(time.monotonic() - t0, 3)
            # Merges an earlier run began and whose contact is gone by now are done.
            for m in self.ledger.merges("pending"):
                if not tgt.exists(m["contact_dn"]):
                    self.ledger.end_merge(m["contact_dn"])
            for a in plan.actions:
                try:
                    self._do(tgt, a)
                except DirectoryRefused as e:
                    self.result.failed += 1
                    self.finding("refused", _dn_of(a), e.message, e.hint)
        finally:
            tgt.close()
        rows = identity_rows(plan)
        self.ledger.save_identity(self.run_id, rows)
        self.result.identity = rows
        if self.job.imap_endpoint is not None and self.job.imap_admin is not None:
            self._confirm(rows)
        if accounts_path is not None:
            _write_private(accounts_path, accounts_csv(rows, account_key))
        self.result.seconds = round(time.monotonic() - t0, 3)
        return self.result

    def _journal(self, kind: str, dn: str, detail: dict[str, Any]) -> None:
        self.ledger.record_directory_change(self.run_id, kind, dn, detail)

    def _do(self, tgt: LdapDirectory, a: Any) -> None:
        if isinstance(a, CreateUser):
            tgt.add(a.dn, a.attrs)
            self._journal("create", a.dn, {"source": a.source.dn, "attributes": sorted(a.attrs)})
            self.result.created += 1
        elif isinstance(a, MergeContact):
            # The LDIF kept is the contact as the server stores it, every attribute, read just now.
            raw = tgt.entry(a.contact.dn)
            ldif = entry_to_ldif(a.contact.dn, raw) if raw else a.contact_ldif
            self.ledger.begin_merge(self.run_id, a.contact.dn, a.user_dn, ldif, a.groups_to_move)
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
                {"contact": a.contact.dn, "groups": list(a.groups_to_move), "ldif_kept": True},
            )
            self.result.merged += 1
        elif isinstance(a, AddAddresses):
            self._add_values(tgt, a.dn, a.attribute, a.values)
            self._journal("add-addresses", a.dn, {"attribute": a.attribute, "values": list(a.values)})
            self.result.addresses += 1
        elif isinstance(a, SetMailAttributes):
            tgt.modify(a.dn, {k: ("replace", [v]) for k, v in a.attrs.items()})
            self._journal("mail-attributes", a.dn, dict(a.attrs))
            self.result.mail_attributes += 1
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


def _dn_of(a: Any) -> str:
    for name in ("dn", "user_dn"):
        if hasattr(a, name):
            return str(getattr(a, name))
    return str(a.source.dn)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
