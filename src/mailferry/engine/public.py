"""Public folders: the unit's per-user state, after the unit's own pass.

The public unit itself (Dovecot's public namespace, Cyrus' shared mailboxes, an Exchange-style
"Public Folders" tree) is an ordinary :class:`~mailferry.engine.migrate.AccountJob` with a
:class:`~mailferry.engine.migrate.Scope`: the same engine copies it, with the same ledger rows
(keyed by the unit's name, :data:`PUBLIC_UNIT`), plan, progress, report and verify. What is
particular to it lives here and runs once its folders exist on the target:

- **per-user \\Seen**: Dovecot keeps ``\\Seen`` per user in a public namespace with ``INDEXPVT``,
  Cyrus per user on shared mailboxes (``sharedseen: false``, its default). For each mapped user,
  the user's own ``\\Seen`` on each public folder is read on the source (logged in as that user, or
  for it by the admin) and added for the mapped target user on the target copy, messages matched
  through the unit's ledger rows (source UID -> target UID). Only ``+FLAGS``/``-FLAGS \\Seen``: on
  a public folder the other flags are everyone's. A ``\\Seen`` mailferry set and the source user
  no longer has is taken away again; one the target user set there on their own is left alone.
  Recorded in the ledger's ``settings`` (kind ``seen``, key ``<target user> TAB <target folder>``,
  value ``<target UIDVALIDITY> <target UIDs set>``); a pass with nothing new writes nothing.
- **subscriptions** of each user to public folders, re-created for the mapped target user
  (kind ``subscription``). A subscription is only added, never removed.
- **steps after the folders exist** (:data:`AfterFolders`): what other parts carry per public
  folder (ACLs) gets the unit's job and its folder map, source folder -> target folder.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailferry.connectors.base import ReadStore, WriteStore
from mailferry.connectors.imap import ServerRefused, uid_ranges
from mailferry.connectors.wrappers import retrying
from mailferry.engine.migrate import AccountJob, Engine, open_store
from mailferry.errors import ItemRefused, MailferryError
from mailferry.state.ledger import Finding, SettingRecord

PUBLIC_UNIT = "#public"
"""The public unit's name: its ledger rows, report row and findings carry it (``#`` is in no
account name of the servers mailferry knows)."""

AfterFolders = Callable[[AccountJob, Mapping[str, str], int], None]
"""A step run once the unit's folders exist on the target: (the unit's job, source folder ->
target folder of every folder carried, run id). The ACL step of public folders plugs in here."""


def folder_map(engine: Engine, unit: str) -> dict[str, str]:
    """Source folder -> target folder of every folder the unit has carried (the ledger's folder
    states: the truth of what exists on the target, whatever the rules say now)."""
    return {s.source_folder: s.target_folder for s in engine.ledger.folder_states(unit) if s.target_folder}


@dataclass(slots=True)
class UserState:
    """What the per-user step did for one user."""

    account: str
    target_account: str
    seen_added: int = 0
    seen_removed: int = 0
    subscribed: int = 0
    folders: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(slots=True)
class PerUserReport:
    users: list[UserState] = field(default_factory=list)
    findings: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": [u.as_dict() for u in self.users],
            "seen_added": sum(u.seen_added for u in self.users),
            "seen_removed": sum(u.seen_removed for u in self.users),
            "subscribed": sum(u.subscribed for u in self.users),
            "findings": self.findings,
        }


def _is_seen(flags: Sequence[str]) -> bool:
    return any(f.lower() == "\\seen" for f in flags)


def _uids(text: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        a, _, b = part.partition(":")
        out.update(range(int(a), int(b or a) + 1))
    return out


class _PerUser:
    def __init__(self, engine: Engine, unit: str, run_id: int, report: PerUserReport) -> None:
        self.e = engine
        self.ledger = engine.ledger
        self.unit = unit
        self.run_id = run_id
        self.report = report

    def retry(self, store: ReadStore, fn: Callable[..., Any], *args: Any) -> Any:
        note = self.e.reporter.note
        return retrying(
            store, functools.partial(fn, *args), self.e.options.retry, on_retry=lambda t: note(self.unit, t)
        )

    def finding(self, folder: str, kind: str, message: str, details: dict[str, Any]) -> None:
        self.report.findings += 1
        self.ledger.add_finding(self.run_id, Finding(self.unit, folder, None, kind, message, details))

    def user(self, job: AccountJob, fmap: Mapping[str, str], *, seen: bool, subscriptions: bool) -> UserState:
        state = UserState(job.source_user, job.target_user)
        opts = self.e.options
        src: ReadStore | None = None
        tgt: WriteStore | None = None
        try:
            src = open_store(job.source, readonly=True, label=f"{job.source_user} (source, public)", retry=opts.retry)
            tgt = open_store(job.target, readonly=False, label=f"{job.target_user} (target, public)", retry=opts.retry)
            if subscriptions:
                self._subscriptions(job, src, tgt, fmap, state)
            if seen:
                for source_folder, target_folder in sorted(fmap.items()):
                    self._seen(job, src, tgt, source_folder, target_folder, state)
        except MailferryError as e:
            state.error = str(e)
            self.finding("", "public-user-failed", f"{self.unit}: per-user state of {job.source_user}: {e}", {})
        finally:
            for s in (src, tgt):
                if s is not None:
                    with contextlib.suppress(Exception):
                        s.close()
        return state

    def _subscriptions(
        self, job: AccountJob, src: ReadStore, tgt: WriteStore, fmap: Mapping[str, str], state: UserState
    ) -> None:
        wanted = sorted(fmap[f.name] for f in self.retry(src, src.list_folders) if f.subscribed and f.name in fmap)
        if not wanted:
            return
        have = {f.name for f in self.retry(tgt, tgt.list_folders) if f.subscribed}
        for name in wanted:
            if name in have:
                continue
            self.retry(tgt, tgt.subscribe, name)
            self.ledger.record_setting(
                SettingRecord(self.unit, "subscription", f"{job.target_user}\t{name}", "1", name, "set", self.run_id)
            )
            state.subscribed += 1

    def _seen(
        self,
        job: AccountJob,
        src: ReadStore,
        tgt: WriteStore,
        source_folder: str,
        target_folder: str,
        state: UserState,
    ) -> None:
        fs = self.ledger.folder_state(self.unit, source_folder)
        if fs is None or not fs.uidvalidity:
            return  # not selectable, nothing copied
        to_target = {
            r.uid: r.target_uid
            for r in self.ledger.messages(self.unit, source_folder)
            if r.state == "copied"
            and r.target_uid
            and r.uidvalidity == fs.uidvalidity
            and r.target_folder == target_folder
        }
        key = f"{job.target_user}\t{target_folder}"
        try:
            st = self.retry(src, src.status, source_folder)
            if st.uidvalidity != fs.uidvalidity:
                return  # the unit's next pass re-matches it first
            flags: dict[int, tuple[str, ...]] = self.retry(src, src.flags, source_folder)
        except ServerRefused:
            # The user may not see or read this public folder on the source (Dovecot: "Mailbox
            # doesn't exist" without 'l', Cyrus: no 'r'): there is no \\Seen of theirs to carry.
            return
        want = {to_target[u] for u, fl in flags.items() if _is_seen(fl) and u in to_target}
        before = self.ledger.settings(self.unit, "seen").get(key)
        # The value names the target folder's UIDVALIDITY: UIDs set in an earlier incarnation of
        # the folder say nothing about this one.
        tv = str(fs.target_uidvalidity or 0)
        old_tv, _, old_uids = before.value.partition(" ") if before is not None else ("", "", "")
        was_set = _uids(old_uids) if old_tv == tv else set()
        if not want and not was_set:
            return
        state.folders += 1
        try:
            current = {u for u, fl in self.retry(tgt, tgt.flags, target_folder).items() if _is_seen(fl)}
        except ServerRefused as e:
            self.finding(
                source_folder,
                "public-seen-refused",
                f"{self.unit}: {job.target_user} can't open public folder {target_folder!r} on the target: {e.message}",
                {"user": job.target_user, "target_folder": target_folder},
            )
            return
        add = sorted(want - current)
        # Only what mailferry set and the source user no longer has: the target user's own stays.
        remove = sorted((was_set - want) & current)
        try:
            if add:
                self.retry(tgt, lambda: tgt.add_flags(target_folder, add, ["\\Seen"]))
            if remove:
                self.retry(tgt, lambda: tgt.add_flags(target_folder, remove, ["\\Seen"], remove=True))
        except ItemRefused as e:
            self.finding(
                source_folder,
                "public-seen-refused",
                f"{self.unit}: the target refused \\Seen for {job.target_user} on {target_folder!r}: {e.message}",
                {"user": job.target_user, "target_folder": target_folder},
            )
            return
        state.seen_added += len(add)
        state.seen_removed += len(remove)
        value = f"{tv} {uid_ranges(sorted(want))}"
        if before is None or before.value != value:
            self.ledger.record_setting(SettingRecord(self.unit, "seen", key, value, target_folder, "set", self.run_id))


def carry_per_user(
    engine: Engine,
    unit: str,
    users: Sequence[AccountJob],
    run_id: int,
    *,
    seen: bool = True,
    subscriptions: bool = True,
) -> PerUserReport:
    """Each mapped user's ``\\Seen`` on, and subscriptions to, the unit's public folders, carried
    to the mapped target user (see the module docstring). One user's failure is a finding; the
    other users go on."""
    report = PerUserReport()
    fmap = folder_map(engine, unit)
    if not fmap or not (seen or subscriptions):
        return report
    step = _PerUser(engine, unit, run_id, report)
    for job in users:
        report.users.append(step.user(job, fmap, seen=seen, subscriptions=subscriptions))
    return report


def after_folders(engine: Engine, job: AccountJob, run_id: int, steps: Sequence[AfterFolders]) -> None:
    """Run the steps that need the unit's folders on the target (e.g. their ACLs)."""
    fmap = folder_map(engine, job.source_user)
    for step in steps:
        step(job, fmap, run_id)
