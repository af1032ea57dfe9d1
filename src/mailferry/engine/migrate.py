"""The engine: the only place that joins stores and the ledger.

For each account: list the source, decide per folder whether anything can have changed (the
ledger's per-folder state against STATUS), plan the folders that need work with
:func:`mailferry.plan.planner.plan_folder`, and carry the plan out. Every write to the target is
preceded by a recorded intent (``pending`` rows) and followed by the recorded fact (``copied``
with the target UID from APPENDUID), so a crash at any moment is resolved on the next run by
looking at the target: the intent either landed (adopt it) or not (copy again). Never a guess.

Copying is one pipeline per account: one reader fetches message bodies in batches from the source
(bounded by count and bytes, so memory stays bounded whatever the message sizes) into a small
queue per writer; ``connections_per_account`` writers MULTIAPPEND them to the target in parallel,
each keeping whole folders while there are folders left (:func:`in_lanes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import imaplib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mailferry.connectors.base import ReadStore, WriteStore
from mailferry.connectors.imap import AclRefused, Endpoint, ImapStore, Login
from mailferry.connectors.wrappers import RetryPolicy, retrying
from mailferry.engine.alive import check_folder
from mailferry.errors import ConfigError, ItemRefused, MailboxCollision, MailferryError, TemporaryFailure
from mailferry.formats.folders import FolderMapping, Rules, Side, map_all
from mailferry.model.mail import AppendItem, FolderInfo, FolderStatus, MessageMeta, ServerInfo
from mailferry.plan.keywords import KeywordLimits
from mailferry.plan.planner import (
    Adopt,
    Copy,
    Delete,
    FolderPlan,
    Forget,
    Policy,
    Rebase,
    SetFlags,
    Skip,
    claimed_target_uids,
    plan_folder,
    storable_flags,
)
from mailferry.state.ledger import Finding, FolderState, Ledger, MessageRecord, SettingRecord

if TYPE_CHECKING:
    from mailferry.engine.alive import MailboxGuard


class Reporter(Protocol):
    """Progress goes through this; the engine never prints."""

    def account_started(self, account: str) -> None: ...
    def planned(self, account: str, messages: int, nbytes: int) -> None: ...
    def copied(self, account: str, messages: int, nbytes: int) -> None: ...
    def account_finished(self, account: str, stats: AccountStats) -> None: ...
    def note(self, account: str, text: str) -> None: ...


class NullReporter:
    def account_started(self, account: str) -> None: ...
    def planned(self, account: str, messages: int, nbytes: int) -> None: ...
    def copied(self, account: str, messages: int, nbytes: int) -> None: ...
    def account_finished(self, account: str, stats: AccountStats) -> None: ...
    def note(self, account: str, text: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Connection:
    endpoint: Endpoint
    login: Login


#: Ledger settings kind: a unit's folder created on the target whose set-up (the login's rights,
#: the server's default entries taken away) is not finished yet.
CREATING = "creating"


@dataclass(frozen=True, slots=True)
class Scope:
    """A unit that is not one person's mailbox but the folders of a shared namespace (RFC 2342's
    third group: Dovecot's public namespace, Cyrus' shared mailboxes, an Exchange-style "Public
    Folders" tree). A prefix None is the side's first shared namespace, as NAMESPACE names it.
    ``writer_rights``: where the target keeps ACLs and the unit's login lacks them on a folder
    the unit has just created (a Cyrus admin has only ``l`` and ``a`` of its own), it gives
    itself these rights on that folder, and only there (recorded in the ledger, kind "writer")."""

    source_prefix: str | None = None
    target_prefix: str | None = None
    writer_rights: str = "lrswite"
    #: The ACL step carries the unit's ACLs in this run (``permissions``): a folder the unit
    #: creates on the target then starts without the entries the server gives it on its own.
    carry_acl: bool = False


@dataclass(frozen=True, slots=True)
class AccountJob:
    source_user: str
    target_user: str
    source: Connection
    target: Connection
    exclude_folders: tuple[str, ...] = ()
    scope: Scope | None = None  # None: the account's own mailbox


@dataclass(frozen=True, slots=True)
class Options:
    rules: Rules = Rules()
    policy: Policy = Policy()
    subscriptions: bool = True
    connections_per_account: int = 2
    batch_messages: int = 100
    batch_bytes: int = 8_000_000
    retry: RetryPolicy = RetryPolicy()
    full: bool = False  # ignore the per-folder fast path: look at every folder afresh
    # Message bytes held in memory at once, all accounts together. Enough for each of 8 writers
    # (8 accounts at once) to hold the batch it appends and the next one: with 64 MB the 8-account
    # benchmark's writers waited ~17 s in all for their reader, whose fetch waited for memory
    # other accounts' queued batches held; with 128 MB ~5-8 s (peak RSS 150 -> 195 MB; one
    # account: 120 -> 140 MB).
    inflight_bytes: int = 128_000_000
    # Before each batch written to the target: (messages, bytes), waits as the cluster's rates
    # and pauses say (:mod:`mailferry.distributed.limits`); None: no limit beyond the connections.
    pace: Callable[[int, int], None] | None = None
    # The target failed a write temporarily (throttling, a dropped connection): tell the others.
    throttled: Callable[[], None] | None = None


@dataclass(slots=True)
class AccountStats:
    account: str
    target_user: str
    status: str = "ok"  # ok | failed | skipped
    copied: int = 0
    bytes: int = 0
    matched: int = 0
    skipped: int = 0
    refused: int = 0
    flag_updates: int = 0
    deleted: int = 0
    folders: int = 0
    folders_unchanged: int = 0
    seconds: float = 0.0
    error: str = ""
    exit_code: int = 0
    source_changed: bool = False
    findings: int = 0
    outstanding: int = 0  # messages the target refused, in this pass or earlier ones, still not on it

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def open_store(side: Connection, *, readonly: bool, label: str, retry: RetryPolicy) -> ImapStore:
    """Connect and log in, retrying temporary failures (not auth or TLS verification)."""
    delays = retry.delays()
    for attempt in range(len(delays) + 1):
        try:
            return ImapStore(side.endpoint, side.login, readonly=readonly, label=label)
        except TemporaryFailure:
            if attempt >= len(delays):
                raise
            time.sleep(delays[attempt])
    raise AssertionError("unreachable")


def side_of(info_prefix: str, delimiter: str, folders: Sequence[FolderInfo]) -> Side:
    special: dict[str, str] = {}
    for f in sorted(folders, key=lambda f: f.name):
        if f.special_use and f.special_use not in special:
            special[f.special_use] = f.name
    return Side(prefix=info_prefix, delimiter=delimiter, special=special)


class ByteBudget:
    """Bytes of message bodies in flight (fetched, not yet appended), across all accounts.

    Keeps memory bounded whatever the number of accounts and the message sizes: a batch waits
    until enough earlier ones are written. A single batch larger than the whole budget still goes,
    alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            while self.in_flight > 0 and self.in_flight + n > self.limit:
                self._cond.wait()
            self.in_flight += n

    def release(self, n: int) -> None:
        with self._cond:
            self.in_flight -= n
            self._cond.notify_all()


class LearnedKeywords:
    """What the target showed of the keywords it stores (:class:`KeywordLimits`), learned once per
    run and shared by every writer of every account: a value replaced under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.limits = KeywordLimits()

    def learn(self, folder: str, stored: Iterable[str] = (), refused: Iterable[str] = ()) -> None:
        with self._lock:
            self.limits = self.limits.learn(folder, stored, refused)


class Engine:
    def __init__(
        self,
        ledger: Ledger,
        options: Options,
        reporter: Reporter | None = None,
        guard: MailboxGuard | None = None,
    ) -> None:
        self.ledger = ledger
        self.options = options
        self.reporter: Reporter = reporter or NullReporter()
        self.budget = ByteBudget(options.inflight_bytes)
        # Who holds which target mailbox: no account writes into a mailbox another one holds.
        self.guard = guard
        # Learned of the target once per run, shared by its accounts: does it tell folder names
        # apart by case (None: not known, or not asked yet).
        self._case_lock = threading.Lock()
        self._case_sensitive: bool | None = None
        self._case_probed = False
        self.keywords = LearnedKeywords()

    def target_case_sensitive(self, probe: Callable[[], bool | None]) -> bool | None:
        """Whether the target tells folder names apart by case, ``probe``-d once per run."""
        with self._case_lock:
            if not self._case_probed:
                self._case_sensitive = probe()
                self._case_probed = True
            return self._case_sensitive

    # -- the account --------------------------------------------------------------------------

    def migrate_account(self, job: AccountJob, run_id: int) -> AccountStats:
        stats = AccountStats(job.source_user, job.target_user)
        t0 = time.monotonic()
        self.reporter.account_started(job.source_user)
        run = AccountRun(self, job, run_id, stats)
        try:
            run.run()
        except MailboxCollision as e:
            stats.status = "failed"
            stats.error = str(e)
            stats.exit_code = int(e.exit_code)
            details = e.as_dict()
            run.finding("", None, "mailbox-collision", stats.error, details)
        except MailferryError as e:
            stats.status = "failed"
            stats.error = e.message + (f" ({e.hint})" if e.hint else "")
            stats.exit_code = int(e.exit_code)
            run.finding("", None, "account-failed", stats.error, {})
        except (OSError, EOFError, imaplib.IMAP4.abort) as e:
            # A connection-level failure that slipped past the connector: still only this account's
            # problem, and a temporary one (the ledger knows what was done; re-run to resume).
            stats.status = "failed"
            stats.error = f"{job.source_user}: connection lost: {type(e).__name__} (run migrate again to resume)"
            stats.exit_code = int(TemporaryFailure.exit_code)
            run.finding("", None, "account-failed", stats.error, {})
        finally:
            run.close()
            stats.outstanding = self.ledger.outstanding_count(job.source_user)
            stats.seconds = round(time.monotonic() - t0, 3)
            self.ledger.record_account_run(run_id, job.source_user, job.target_user, stats.as_dict())
            self.reporter.account_finished(job.source_user, stats)
        return stats

    def refuse_account(self, job: AccountJob, run_id: int, error: MailferryError) -> AccountStats:
        """Record an account held back before its pass (its target mailbox is another account's
        too, or its first login failed): nothing was written for it."""
        stats = AccountStats(job.source_user, job.target_user, status="failed")
        stats.error = str(error)
        stats.exit_code = int(error.exit_code)
        stats.findings = 1
        kind, details = "account-failed", {}
        if isinstance(error, MailboxCollision):
            kind = "mailbox-collision"
            details = error.as_dict()
        self.reporter.account_started(job.source_user)
        self.ledger.add_finding(run_id, Finding(job.source_user, "", None, kind, stats.error, details))
        self.ledger.record_account_run(run_id, job.source_user, job.target_user, stats.as_dict())
        self.reporter.account_finished(job.source_user, stats)
        return stats

    # -- planning only (the dry run) ----------------------------------------------------------

    def plan_account(self, job: AccountJob) -> tuple[list[FolderPlan], list[FolderMapping]]:
        run = AccountRun(self, job, 0, AccountStats(job.source_user, job.target_user), dry_run=True)
        try:
            return run.plan_only()
        finally:
            run.close()


@dataclass(slots=True)
class _FolderJob:
    """One folder's work in this pass: where it goes and what is left to copy."""

    folder: FolderInfo
    mapping: FolderMapping
    status: FolderStatus  # the source STATUS it was planned from
    target_folder: str
    target_after: int  # target UIDNEXT - 1 at planning: interrupted appends can only be above it
    target_validity: int
    metas: list[MessageMeta] = field(default_factory=list)
    perm: tuple[str, ...] | None = None
    uncertain: bool = False
    dropped: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # source UID -> (keyword, why)


@dataclass(slots=True)
class _Inflight:
    """A batch sent to the target whose answer is still to be read."""

    job: _FolderJob
    items: list[tuple[MessageMeta, bytes]]
    appends: list[AppendItem]
    answer: Callable[[], list[int | None]]


class AccountRun:
    """One account's pass. Holds its connections; closed at the end. ``verify`` uses its
    connections and folder mapping too (``source_folders``, ``folder_map``, ``retry``)."""

    def __init__(self, engine: Engine, job: AccountJob, run_id: int, stats: AccountStats, *, dry_run: bool = False):
        self.e = engine
        self.job = job
        self.run_id = run_id
        self.stats = stats
        self.dry_run = dry_run
        self.opts = engine.options
        self.ledger = engine.ledger
        self.account = job.source_user
        self.source: ReadStore | None = None
        self.target: WriteStore | None = None
        self.writers: list[WriteStore | None] = []
        self._writers_lock = threading.Lock()
        self._lock = threading.Lock()
        # What the mapping step learned of the target.
        self.target_folders: set[str] = set()
        self._guarded: set[str] = set()  # target folders whose id this pass has checked
        self.target_limit: int | None = None
        self.unreadable: list[tuple[str, str]] = []  # public folders the unit's login can't read: (name, rights)
        # A folder's source inventory being read in a thread: (folder, above UID, thread, [result]).
        self._ahead: tuple[str, int, threading.Thread, list[Any]] | None = None

    # -- connections --------------------------------------------------------------------------

    def source_store(self) -> ReadStore:
        if self.source is None:
            self.source = open_store(
                self.job.source, readonly=True, label=f"{self.account} (source)", retry=self.opts.retry
            )
        return self.source

    def target_store(self) -> WriteStore:
        if self.target is None:
            store = open_store(
                self.job.target, readonly=self.dry_run, label=f"{self.job.target_user} (target)", retry=self.opts.retry
            )
            self.target = store
            if self.job.scope is None:  # the unit's login has an INBOX, but it is not the unit's
                self._guard_folder(store, "INBOX")
        return self.target

    def _guard_folder(self, store: WriteStore, folder: str, *, created: bool = False) -> None:
        """Refuse (MailboxCollision, exit 78) to go on with a target folder whose server id
        another target account of the project holds (see :mod:`mailferry.engine.alive`)."""
        if self.e.guard is not None and (folder not in self._guarded or created):
            read = functools.partial(self.retry, store, store.mailbox_id)
            check_folder(self.e.guard, self.job.target_user, folder, read, created=created)
            self._guarded.add(folder)  # once a pass (re-plans and dry runs ask again otherwise)

    def _stop_if_blocked(self) -> None:
        """Before every write: stop when the guard has found this account's mailbox shared
        (by this pass or by another account's, running at the same time)."""
        hit = self.e.guard.blocked(self.job.target_user) if self.e.guard is not None else None
        if hit is not None:
            raise hit

    def _writer(self, i: int) -> WriteStore:
        """Writer ``i``'s connection, opened on first use. Under a lock, one slot a writer: two
        writer threads starting together once opened three connections between them (seen on
        the server's side), one more than ``connections_per_account`` allows."""
        with self._writers_lock:
            while len(self.writers) <= i:
                self.writers.append(None)
            store = self.writers[i]
            if store is None:
                store = open_store(
                    self.job.target, readonly=False, label=f"{self.job.target_user} (target)", retry=self.opts.retry
                )
                self.writers[i] = store
            return store

    def close(self) -> None:
        if self._ahead is not None:  # a read-ahead still going ends before its connection closes
            self._ahead[2].join()
        for s in [self.source, self.target, *self.writers]:
            if s is not None:
                with contextlib.suppress(Exception):  # closing a broken connection
                    s.close()

    def retry(self, store: ReadStore, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` with reconnects and backoff (idempotent operations only)."""
        return retrying(
            store,
            functools.partial(fn, *args),
            self.opts.retry,
            on_retry=lambda t: self.e.reporter.note(self.account, t),
        )

    def finding(
        self, folder: str, uid: int | None, kind: str, message: str, details: dict[str, Any], *, notice: bool = False
    ) -> None:
        """Record a finding; a ``notice`` (e.g. a folder renamed visibly) is reported but loses nothing."""
        if not notice:
            with self._lock:  # writers report findings too
                self.stats.findings += 1
        if not self.dry_run:
            self.ledger.add_finding(self.run_id, Finding(self.account, folder, uid, kind, message, details))

    # -- the pass -----------------------------------------------------------------------------

    def source_folders(self) -> list[FolderInfo]:
        """An account's own folders (never public folders nor other people's: those are their
        owners' and the public unit's), or the folders of the unit's shared namespace."""
        src = self.source_store()
        folders: list[FolderInfo]
        if self.job.scope is None:
            folders = self.retry(src, src.own_folders)
        else:
            prefix, _ = self.scope_side(src, self.job.scope.source_prefix, "source")
            listed: list[FolderInfo] = self.retry(src, src.folders_under, prefix)
            # A public folder the unit's login may see but not read (a Cyrus admin sees every
            # shared mailbox; a team folder may be the team's alone) is left out, a finding.
            folders, self.unreadable = [], []
            for f in listed:
                rights = self.retry(src, src.my_rights, f.name) if f.selectable else None
                if rights is not None and "r" not in rights:
                    self.unreadable.append((f.name, rights))
                else:
                    folders.append(f)
        return sorted(folders, key=lambda f: f.name)

    def scope_side(self, store: ReadStore, prefix: str | None, role: str) -> tuple[str, str]:
        """(prefix, delimiter) of the unit's shared namespace on one side: the configured prefix,
        else the side's first shared namespace (RFC 2342 third group)."""
        ns: dict[str, list[tuple[str, str]]] = self.retry(store, store.namespaces)
        return scope_prefix(ns, prefix, role, self.account)

    def _fast_path(self, folders: list[FolderInfo]) -> tuple[dict[str, FolderStatus], set[str] | None]:
        """STATUS of every selectable folder, and the folders a pass must look at: None for all
        of them; else only those with refusals outstanding (empty: the account is done, without
        connecting to the target), when the ledger says nothing else can have changed."""
        src = self.source_store()
        statuses: dict[str, FolderStatus] = {}
        for f in folders:
            if f.selectable:
                statuses[f.name] = self.retry(src, src.status, f.name)
        if self.opts.full:
            return statuses, None
        known = {s.source_folder: s for s in self.ledger.folder_states(self.account)}
        if set(known) != {f.name for f in folders} or self.ledger.has_pending(self.account):
            return statuses, None
        for name, st in statuses.items():
            k = known[name]
            if (k.uidvalidity, k.uidnext, k.messages) != (st.uidvalidity, st.uidnext, st.messages):
                return statuses, None
            if self.opts.policy.sync_flags and st.highestmodseq is not None and k.highestmodseq != st.highestmodseq:
                return statuses, None
            if self.opts.policy.sync_flags and st.highestmodseq is None:
                return statuses, None  # without CONDSTORE flag changes are invisible to STATUS
        # Unchanged but for refusals outstanding: every pass tries those again, and only those folders.
        return statuses, self.ledger.refused_folders(self.account)

    def folder_map(self, folders: list[FolderInfo]) -> list[FolderMapping]:
        src, tgt = self.source_store(), self.target_store()
        sinfo: ServerInfo = self.retry(src, functools.partial(src.info, quota=False))
        tinfo: ServerInfo = self.retry(tgt, functools.partial(tgt.info, quota=False))
        tfolders: list[FolderInfo] = self.retry(tgt, tgt.list_folders)
        self.target_folders = {f.name for f in tfolders}
        s_side = Side(prefix=sinfo.namespace.prefix, delimiter=sinfo.namespace.delimiter)
        t_side = side_of(tinfo.namespace.prefix, tinfo.namespace.delimiter, tfolders)
        roles = True
        scope = self.job.scope
        if scope is not None:
            # A public tree has no special-use roles: "Archive" there is the team's, not a Sent.
            sp, sd = self.scope_side(src, scope.source_prefix, "source")
            tp, td = self.scope_side(tgt, scope.target_prefix, "target")
            s_side, t_side, roles = Side(prefix=sp, delimiter=sd), Side(prefix=tp, delimiter=td), False
        rules = self.opts.rules
        if self.job.exclude_folders:
            rules = Rules(
                include=rules.include,
                exclude=rules.exclude + self.job.exclude_folders,
                rename=rules.rename,
                separator_substitute=rules.separator_substitute,
            )
        self.target_limit = tinfo.appendlimit
        names = [(f.name, f.special_use) for f in folders]

        shared = [] if scope is not None else self._target_shared_prefixes(tgt, t_side.prefix)

        def mapping(case_sensitive: bool | None) -> list[FolderMapping]:
            out = map_all(names, s_side, dataclasses.replace(t_side, case_sensitive=case_sensitive), rules, roles=roles)
            return [_keep_out_of(m, shared) for m in out]

        # Whether the target holds "Archive" apart from "archive" matters only when two folders
        # would land on names differing only in case. Two such names listed on the target settle
        # it; else migrate asks the target with a probe folder (once per run). A dry run (plan,
        # verify) can't create one: it maps as if the target couldn't hold both, with a note.
        listed = {f.name for f in tfolders}
        if len({n.casefold() for n in listed}) < len(listed):
            return mapping(True)
        optimistic = mapping(True)
        targets = {m.target for m in optimistic if m.target is not None}
        if len({t.casefold() for t in targets}) == len(targets):
            return optimistic
        if self.dry_run:
            return mapping(None)
        prefix = t_side.prefix
        return mapping(self.e.target_case_sensitive(lambda: self.retry(tgt, tgt.case_sensitive_names, prefix)))

    def _target_shared_prefixes(self, tgt: WriteStore, personal: str) -> list[str]:
        """The target's other namespaces that a personal folder name could fall into (Dovecot's
        ``Public/`` next to the empty personal prefix): a folder mapped there would be written
        into a public folder or another user's, so it is not copied (a finding)."""
        ns: dict[str, list[tuple[str, str]]] = self.retry(tgt, tgt.namespaces)
        return [p for role in ("other", "shared") for p, _ in ns.get(role) or [] if p and len(p) > len(personal)]

    def plan_only(self) -> tuple[list[FolderPlan], list[FolderMapping]]:
        folders = self.source_folders()
        statuses, _ = self._fast_path(folders)
        mappings = self.folder_map(folders)
        plans: list[FolderPlan] = []
        by_name = {f.name: f for f in folders}
        for m in mappings:
            f = by_name[m.source]
            if not f.selectable or m.target is None:
                plans.append(FolderPlan(m.source, m.target, m.rule, 0, notes=list(m.notes)))
                continue
            plans.append(self._plan_folder(f, m, statuses[f.name])[0])
        return plans, mappings

    def run(self) -> None:
        folders = self.source_folders()
        if not folders:
            where = "in its shared namespace" if self.job.scope is not None else "at all"
            raise MailferryError(
                f"{self.account}: the source lists no folder {where}",
                hint="check the account; mailferry refuses to treat an empty listing as a mailbox",
            )
        for name, rights in self.unreadable:
            who = self.job.source.login.user
            self.finding(
                name,
                None,
                "public-folder-unreadable",
                f"{self.account}: public folder {name!r}: the unit's source login {who!r} may not read it "
                f"(its rights: {rights or 'none'}); not copied (grant it 'lr' on the source, or exclude "
                "the folder in [folders] exclude)",
                {"rights": rights, "login": who},
            )
        statuses, redo = self._fast_path(folders)
        if redo is not None and not redo:
            self.stats.folders = len(folders)
            self.stats.folders_unchanged = len(folders)
            return
        mappings = self.folder_map(folders)
        by_name = {f.name: f for f in folders}
        self._drop_refusals_of_folders_left(mappings, by_name)
        tgt = self.target_store()
        # While the target folders are created (Dovecot: ~7 ms a CREATE, 0.13 s for the benchmark's
        # 18 folders, with nothing else going on) the source connection reads the first folder's
        # inventory, which the pipeline then starts from. Only for an account's own mailbox: a
        # unit's folder set-up asks the source for rights.
        first = next((m for m in mappings if m.target is not None and by_name[m.source].selectable), None)
        creates = any(m.target is not None and m.target not in self.target_folders for m in mappings)
        if first is not None and creates and self.job.scope is None and (redo is None or first.source in redo):
            self._read_ahead(by_name[first.source], statuses[first.source], first)
        # Create every target folder first (parents before children), then subscriptions.
        for m in mappings:
            if m.target is None and m.rule.startswith(SHARED_CLASH):
                self.finding(
                    m.source,
                    None,
                    "folder-in-shared-namespace",
                    f"{self.account}: folder {m.source!r}: {m.rule}; not copied (rename it with a "
                    "[[folders.rename]] rule to carry it)",
                    {"rule": m.rule},
                )
        # A unit's folder whose CREATE was sent but whose ACL set-up was not finished (kill -9 in
        # between): recorded (kind "creating") before the CREATE, forgotten after the set-up.
        scope = self.job.scope
        creating = set(self.ledger.settings(self.account, CREATING)) if scope is not None and scope.carry_acl else set()
        for m in sorted((m for m in mappings if m.target), key=lambda m: (m.target or "").count("/")):
            f = by_name[m.source]
            for note in m.notes:
                self.finding(
                    m.source, None, "folder-name", f"{m.source!r} → {m.target!r}: {note}", {"rule": m.rule}, notice=True
                )
            target_name = m.target or ""
            fresh = target_name in creating
            if m.target not in self.target_folders:
                self._stop_if_blocked()
                if scope is not None and scope.carry_acl:
                    self.ledger.record_setting(
                        SettingRecord(self.account, CREATING, target_name, m.source, target_name, "set", self.run_id)
                    )
                self.retry(tgt, tgt.create_folder, target_name, m.special_use)
                self.target_folders.add(target_name)
                # A new folder's id too (parents that hold no mail included): Cyrus has given a
                # folder created here the id of another account's INBOX.
                self._guard_folder(tgt, target_name, created=True)
                fresh = scope is not None
            if scope is not None and fresh:
                self._may_write(tgt, target_name, scope.writer_rights)
                if scope.carry_acl:
                    self._drop_server_defaults(tgt, m.source, target_name)
                    self.ledger.forget_setting(self.account, CREATING, target_name)
            if self.opts.subscriptions and f.subscribed:
                self.retry(tgt, tgt.subscribe, m.target or "")
        # Plan every folder and do what needs no copying, and copy all folders' messages in one
        # pipeline that interleaves folders (no per-folder start/stop bubbles, and writers append
        # to different folders at once, which the target serves faster than one folder). Folders
        # are planned as the pipeline's reader gets to them: the first copies start after the first
        # folder's plan, not after all of them (the profile: ~1 s of a 10k mailbox's 9 s was the
        # plans' inventory FETCHes while nothing was written).
        jobs: list[_FolderJob] = []
        to_prepare: list[tuple[FolderInfo, FolderMapping, FolderStatus]] = []
        for m in mappings:
            if m.target is None:
                continue
            f = by_name[m.source]
            self.stats.folders += 1
            if redo is not None and f.name not in redo:
                self.stats.folders_unchanged += 1
                continue
            if not f.selectable:
                self._save_noselect(m)
                continue
            to_prepare.append((f, m, statuses[f.name]))

        def prepared() -> Iterator[_FolderJob]:
            for f, m, st in to_prepare:
                job = self._prepare(f, m, st)
                jobs.append(job)
                if job.metas:
                    yield job

        self._copy_many(prepared(), alone=len(to_prepare) <= 1)
        for j in jobs:
            if j.uncertain:
                self._run_folder(j.folder, j.mapping, j.status)  # re-plan: looks at the target
            else:
                self._finish_folder(j)
        self._stop_if_blocked()  # found shared while others wrote: this account fails too

    def _may_write(self, tgt: WriteStore, folder: str, wanted: str) -> None:
        """On a folder the unit has just created: where the target keeps ACLs and this login lacks
        some of ``wanted``, give them to itself, on this folder only, and record it (kind
        "writer") so that the ACL step knows the entry is mailferry's."""
        have: str | None = self.retry(tgt, tgt.my_rights, folder)
        if have is None:
            return
        missing = "".join(r for r in wanted if r not in have)
        if not missing:
            return
        who = tgt.login_identity()
        self.retry(tgt, tgt.set_acl, folder, who, have + missing)
        self.ledger.record_setting(
            SettingRecord(self.account, "writer", f"{folder}\t{who}", have + missing, folder, "set", self.run_id)
        )
        self.e.reporter.note(self.account, f"{folder}: gave the unit's login {who!r} the rights {missing!r} to write")

    def _drop_server_defaults(self, tgt: WriteStore, source_folder: str, folder: str) -> None:
        """On a folder the unit has just created, when the ACL step carries the source's
        entries: take away the entries the server gave it on its own (Cyrus' ``defaultacl``
        gives every new shared mailbox ``anyone lrs``), which would widen access beyond the
        source's. The login's own entry and a global ACL's (``#id``, not settable) stay. A
        source without ACLs (everyone may use its public folders) leaves the server's defaults."""
        src = self.source_store()
        if self.retry(src, src.my_rights, source_folder) is None or tgt.my_rights(folder) is None:
            return
        try:
            acl: dict[str, str] = self.retry(tgt, tgt.get_acl, folder)
        except AclRefused:
            return
        me = tgt.login_identity().lower()
        for who in sorted(acl):
            if who.lower() == me or who.startswith("#"):
                continue
            self.retry(tgt, tgt.set_acl, folder, who, "")
            self.e.reporter.note(
                self.account, f"{folder}: took away the entry {who} {acl[who]!r} the target gave the new folder"
            )

    def _drop_refusals_of_folders_left(self, mappings: list[FolderMapping], by_name: dict[str, FolderInfo]) -> None:
        """Refused messages of a folder the source no longer has, or the admin's rules now
        exclude, are no longer outstanding: they are not source items to carry any more."""
        kept = {m.source for m in mappings if m.target is not None and by_name[m.source].selectable}
        for folder in sorted(self.ledger.refused_folders(self.account) - kept):
            rows = [(r.uidvalidity, r.uid) for r in self.ledger.messages(self.account, folder) if r.state == "refused"]
            self.ledger.forget(self.account, folder, rows)
            self.e.reporter.note(self.account, f"{folder}: gone or excluded; its {len(rows)} refused messages dropped")

    def _save_noselect(self, m: FolderMapping) -> None:
        self.ledger.save_folder_state(FolderState(self.account, m.source, m.target or "", 0, 0, 0, None, None))

    # -- one folder ---------------------------------------------------------------------------

    def _plan_folder(self, f: FolderInfo, m: FolderMapping, st: FolderStatus) -> tuple[FolderPlan, int, int]:
        """The folder's plan, with the target folder's UIDNEXT - 1 and UIDVALIDITY (0: unknown)."""
        src, tgt = self.source_store(), self.target_store()
        target_folder = m.target or ""
        state = self.ledger.folder_state(self.account, f.name)
        records = self.ledger.messages(self.account, f.name)
        pending = [r for r in records if r.state == "pending"]
        incremental = self._incremental(state, st, target_folder)
        after = _above(state, incremental)
        source_msgs = self._take_ahead(f.name, after)
        if source_msgs is None:
            source_msgs = self.retry(src, lambda: src.inventory(f.name, after))
        # Outstanding refusals below that are looked at again, and only they (the planner's contract).
        refused = [
            r.uid for r in records if r.state == "refused" and r.uid <= after and r.uidvalidity == st.uidvalidity
        ]
        if refused:
            again: list[MessageMeta] = self.retry(src, lambda: src.inventory(f.name, uids=refused))
            source_msgs = sorted(again + source_msgs, key=lambda mm: mm.uid)
        flags: dict[int, tuple[str, ...]] | None
        if not incremental:
            flags = {mm.uid: mm.flags for mm in source_msgs}
        elif not self.opts.policy.sync_flags:
            flags = None
        elif src.condstore and state is not None and state.highestmodseq:
            hms = state.highestmodseq
            changed = self.retry(src, lambda: src.changed_flags(f.name, hms))
            flags = {u: fl for u, (fl, _) in changed.items()}
        else:
            flags = self.retry(src, lambda: src.flags(f.name))
        source_uids: set[int] | None = None
        if self.opts.policy.propagate_deletions:
            source_uids = set(self.retry(src, lambda: src.uids(f.name)))

        # The target side: look at it only when matching is needed.
        unclaimed: list[MessageMeta] = []
        exists = target_folder in self.target_folders
        target_after = target_validity = 0
        if exists:
            tstatus: FolderStatus = self.retry(tgt, lambda: tgt.status(target_folder))
            self._guard_folder(tgt, target_folder)
            target_after = tstatus.uidnext - 1
            target_validity = tstatus.uidvalidity
            first_pass = state is None and not records
            # An empty folder (one this pass created, say) has nothing to match: not read.
            if (first_pass or pending or not incremental) and tstatus.messages:
                # An interrupted run's appends can only be above the UIDNEXT it recorded. Selected
                # for writing (but in a dry run), as the copies' PERMANENTFLAGS ask next: one SELECT.
                after_t = min(r.target_after_uid for r in pending) if pending and incremental else 0
                write = not self.dry_run
                tmsgs: list[MessageMeta] = self.retry(tgt, lambda: tgt.inventory(target_folder, after_t, write=write))
                claimed = claimed_target_uids(records, target_folder, tstatus.uidvalidity)
                unclaimed = [t for t in tmsgs if t.uid not in claimed]
        policy = self.opts.policy
        if self.target_limit is not None and policy.target_size_limit is None:
            policy = Policy(
                since=policy.since,
                before=policy.before,
                min_size=policy.min_size,
                max_size=policy.max_size,
                target_size_limit=self.target_limit,
                propagate_deletions=policy.propagate_deletions,
                sync_flags=policy.sync_flags,
            )
        plan = plan_folder(
            source_folder=f.name,
            target_folder=target_folder,
            rule=m.rule,
            uidvalidity=st.uidvalidity,
            source=source_msgs,
            records=records,
            target_unclaimed=unclaimed,
            source_flags=flags,
            source_uids=source_uids,
            policy=policy,
        )
        return plan, target_after, target_validity

    def _incremental(self, state: FolderState | None, st: FolderStatus, target_folder: str) -> bool:
        """Whether the folder's pass looks only above the UIDNEXT its last pass recorded."""
        return (
            not self.opts.full
            and state is not None
            and state.uidvalidity == st.uidvalidity
            and state.target_folder == target_folder
        )  # pending intents are all above the recorded UIDNEXT, so they stay incremental

    def _read_ahead(self, f: FolderInfo, st: FolderStatus, m: FolderMapping) -> None:
        """Read ``f``'s source inventory in a thread, for :meth:`_plan_folder` to take. The
        source connection is the thread's until then (see :meth:`_take_ahead`)."""
        state = self.ledger.folder_state(self.account, f.name)
        after = _above(state, self._incremental(state, st, m.target or ""))
        src = self.source_store()
        got: list[Any] = []

        def read() -> None:
            with contextlib.suppress(Exception):  # else _plan_folder reads it, and says why it can't, itself
                got.append(self.retry(src, lambda: src.inventory(f.name, after)))

        thread = threading.Thread(target=read, name=f"inventory-{self.account}")
        thread.start()
        self._ahead = (f.name, after, thread, got)

    def _take_ahead(self, folder: str, after: int) -> list[MessageMeta] | None:
        """The inventory :meth:`_read_ahead` read, if it is of ``folder`` above ``after``."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        name, above, thread, got = ahead
        thread.join()
        if (name, above) != (folder, after) or not got:
            return None
        metas: list[MessageMeta] = got[0]
        return metas

    def _prepare(self, f: FolderInfo, m: FolderMapping, st: FolderStatus) -> _FolderJob:
        """Plan one folder and carry out all but its copies, which are returned in the job."""
        plan, after, validity = self._plan_folder(f, m, st)
        job = _FolderJob(f, m, st, m.target or "", after, validity)
        job.metas = self._execute(plan, job)
        if job.metas:
            job.perm = self._permanent(job.target_folder)
            self.e.reporter.planned(self.account, len(job.metas), sum(mm.size for mm in job.metas))
        return job

    def _run_folder(self, f: FolderInfo, m: FolderMapping, st: FolderStatus) -> None:
        """One folder alone, re-planned until no append ends uncertain (after dropped connections)."""
        stalls = 0
        while True:
            done_before = self.stats.copied + self.stats.refused + self.stats.matched
            job = self._prepare(f, m, st)
            if job.metas:
                self._copy_many([job], alone=True)
            if not job.uncertain:
                break
            # Some appends ended uncertain (connection lost): re-plan, which looks at the target.
            progressed = self.stats.copied + self.stats.refused + self.stats.matched > done_before
            stalls = 0 if progressed else stalls + 1
            if stalls >= 3:
                raise TemporaryFailure(
                    f"{self.account}: folder {f.name!r}: appends keep failing; nothing was lost or doubled",
                    hint="run migrate again later",
                )
        self._finish_folder(job)

    def _finish_folder(self, job: _FolderJob) -> None:
        """Remember the source state the folder was planned from; see whether it moved meanwhile."""
        f, st = job.folder, job.status
        src = self.source_store()
        self.ledger.save_folder_state(
            FolderState(
                self.account,
                f.name,
                job.target_folder,
                st.uidvalidity,
                st.uidnext,
                st.messages,
                st.highestmodseq,
                job.target_validity or None,
            )
        )
        after: FolderStatus = self.retry(src, lambda: src.status(f.name))
        if (after.uidvalidity, after.uidnext, after.messages) != (st.uidvalidity, st.uidnext, st.messages) or (
            after.highestmodseq != st.highestmodseq and self.opts.policy.sync_flags
        ):
            self.stats.source_changed = True
            self.e.reporter.note(self.account, f"{f.name}: the source changed during the run")

    def _execute(self, plan: FolderPlan, job: _FolderJob) -> list[MessageMeta]:
        """Carry out one folder's plan but for the copies, which it returns."""
        tgt = self.target_store()
        folder, target_folder, validity = job.folder.name, job.target_folder, job.status.uidvalidity
        copies: list[MessageMeta] = []
        for a in plan.actions:
            if isinstance(a, Forget):
                self.ledger.forget(self.account, folder, [(a.uidvalidity, a.uid)])
            elif isinstance(a, Rebase):
                self.ledger.rebase(self.account, folder, [(a.old_uidvalidity, a.old_uid, validity, a.new_uid)])
            elif isinstance(a, Adopt):
                self.ledger.record_copied(
                    self.account,
                    folder,
                    [
                        MessageRecord(
                            validity,
                            a.meta.uid,
                            a.meta.key,
                            a.meta.size,
                            "copied",
                            "found",
                            target_folder,
                            job.target_validity or None,
                            a.target_uid,
                            0,
                            a.meta.flags,
                        )
                    ],
                    self.run_id,
                )
                self.stats.matched += 1
            elif isinstance(a, Skip):
                self.stats.skipped += 1
                if a.finding:  # the target can't take it (APPENDLIMIT): outstanding, like a refusal
                    refused = MessageRecord(
                        validity, a.meta.uid, a.meta.key, a.meta.size, "refused", "", target_folder, None, None,
                        job.target_after, a.meta.flags,
                    )  # fmt: skip
                    self.ledger.record_copied(self.account, folder, [refused], self.run_id)
                    self.finding(
                        folder,
                        a.meta.uid,
                        "skipped",
                        _describe(self.account, folder, a.meta, a.reason),
                        _details(a.meta),
                    )
            elif isinstance(a, Copy):
                copies.append(a.meta)
        flag_changes = [a for a in plan.actions if isinstance(a, SetFlags)]
        if flag_changes:
            self._stop_if_blocked()
            self._set_flags(job, flag_changes)
        deletes = [a for a in plan.actions if isinstance(a, Delete)]
        if deletes:
            self._stop_if_blocked()
            self.retry(tgt, lambda: tgt.expunge_uids(target_folder, [a.target_uid for a in deletes]))
            self.ledger.forget(self.account, folder, [(a.uidvalidity, a.uid) for a in deletes])
            self.stats.deleted += len(deletes)
        return copies

    def _set_flags(self, job: _FolderJob, changes: list[SetFlags]) -> None:
        """Carry flag changes to the target, without the keywords it can't store: those known
        refused are left out; if the target still refuses the change, each message gets the known
        part, then each unknown keyword alone (learning which it refuses). Each keyword dropped is
        a finding for its message."""
        tgt = self.target_store()
        folder, target_folder = job.folder.name, job.target_folder
        perm = self._permanent(target_folder)
        limits = self.e.keywords.limits
        wanted: list[tuple[SetFlags, tuple[str, ...]]] = []
        for a in changes:
            flags = self._storable(job, a.uid, a.flags, perm)
            wanted.append((a, flags))
        try:
            self.retry(tgt, lambda: tgt.store_flags(target_folder, [(a.target_uid, f) for a, f in wanted]))
            self.e.keywords.learn(target_folder, stored=(k for _, f in wanted for k in f))
        except ItemRefused:
            for a, flags in wanted:
                unknown = limits.unknown(target_folder, flags)
                base = tuple(f for f in flags if f not in unknown)
                self.retry(tgt, lambda: tgt.store_flags(target_folder, [(a.target_uid, base)]))  # noqa: B023
                self._add_keywords(tgt, job, a.uid, a.target_uid, base, unknown)
        self.ledger.update_flags(self.account, folder, [(a.uidvalidity, a.uid, a.flags) for a in changes])
        self.stats.flag_updates += len(changes)
        dropped = {a.uid: job.dropped.pop(a.uid) for a in changes if a.uid in job.dropped}
        if dropped:
            src = self.source_store()
            metas = {m.uid: m for m in self.retry(src, lambda: src.inventory(folder, uids=sorted(dropped)))}
            for uid, drops in sorted(dropped.items()):
                self._keywords_dropped(job, metas.get(uid) or _unknown_meta(uid), drops)

    def _storable(
        self, job: _FolderJob, uid: int, flags: Sequence[str], perm: tuple[str, ...] | None
    ) -> tuple[str, ...]:
        """The flags of source message ``uid`` to send to the target: without those its
        PERMANENTFLAGS lack and the keywords it is known to refuse (noted in ``job.dropped``)."""
        keep, not_permanent = storable_flags(flags, perm)
        keep, refused = self.e.keywords.limits.split(job.target_folder, keep)
        drops = [(k, "not in the target folder's PERMANENTFLAGS") for k in not_permanent] + list(refused)
        if drops:
            with self._lock:
                job.dropped.setdefault(uid, []).extend(drops)
        return keep

    def _add_keywords(
        self,
        store: WriteStore,
        job: _FolderJob,
        uid: int,
        target_uid: int,
        base: tuple[str, ...],
        unknown: Sequence[str],
    ) -> None:
        """The target holds message ``target_uid`` with flags ``base``: add each of the ``unknown``
        keywords alone, shortest first, to learn which the target stores and which it refuses."""
        folder = job.target_folder
        have = list(base)
        stored: list[str] = []
        refused: list[tuple[str, str]] = []
        for kw in sorted(unknown, key=lambda k: (len(k.encode()), k)):
            try:
                self.retry(store, lambda: store.store_flags(folder, [(target_uid, (*have, kw))]))  # noqa: B023
            except ItemRefused as e:
                refused.append((kw, f"the target refused it: {_server_words(e.message)}"))
                continue
            have.append(kw)
            stored.append(kw)
        self.e.keywords.learn(folder, stored=[*base, *stored], refused=[k for k, _ in refused])
        if refused:
            with self._lock:
                job.dropped.setdefault(uid, []).extend(refused)

    def _keywords_dropped(self, job: _FolderJob, mm: MessageMeta, drops: list[tuple[str, str]]) -> None:
        """One finding per message, naming each keyword the target didn't store and why."""
        folder = job.folder.name
        names = ", ".join(repr(k) for k, _ in drops)
        why = "; ".join(f"{k!r}: {r}" for k, r in drops)
        self.finding(
            folder,
            mm.uid,
            "keyword-dropped",
            _describe(self.account, folder, mm, f"stored without keyword(s) {names} ({why})"),
            _details(mm)
            | {"keywords": [k for k, _ in drops], "reasons": dict(drops), "target_folder": job.target_folder},
        )

    def _permanent(self, target_folder: str) -> tuple[str, ...] | None:
        tgt = self.target_store()
        perm: tuple[str, ...] | None = self.retry(tgt, tgt.storable, target_folder)
        return perm

    def _batches(self, metas: list[MessageMeta], *, alone: bool) -> Iterator[list[MessageMeta]]:
        """Batches bounded by count and bytes. A folder copied ``alone`` is cut into a few batches
        (of at least 10) even when small, so that fetching the next overlaps with appending the
        previous and every writer has one. With other folders interleaved that overlap is there
        anyway: full batches then, as each APPEND is a transaction on the target (its index, its
        uidlist): 8 accounts of 1,250 messages in 18 folders each sent ~4 APPENDs of ~18
        messages a folder, where one or two do."""
        writers = max(1, self.opts.connections_per_account)
        count = self.opts.batch_messages
        if alone:
            count = min(count, max(10, -(-len(metas) // (2 * writers))))
        batch: list[MessageMeta] = []
        size = 0
        for mm in metas:
            if batch and (len(batch) >= count or size + mm.size > self.opts.batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(mm)
            size += mm.size
        if batch:
            yield batch

    def _copy_many(self, jobs: Iterable[_FolderJob], *, alone: bool) -> None:
        """Copy the jobs' messages: one reader fetches batches (in writers' lanes, see
        :func:`in_lanes`) into a small queue per writer, ``connections_per_account`` writers
        append them. Sets ``job.uncertain`` where an append ended without an answer (the folder
        is then re-planned). ``jobs`` is consumed by the reader thread, lazily; the writers
        log in when the reader starts on the first batch (none when there is nothing to copy)."""
        src = self.source_store()
        nwriters = max(1, self.opts.connections_per_account)
        # Batches waiting per writer: one writer's slow batch (large attachments) does not keep
        # the reader from feeding the other. The reader fills a writer's queue from one folder
        # before it selects the next writer's (runs of 4, see in_lanes: the source's CPU for the
        # 10k mailbox went from 1.60 s to 1.24 s, runs of 1 to 4); a folder copied alone is cut
        # in batches for every writer (_batches), so they go round one at a time. One writer (as
        # with many accounts at once) has one lane, no folder to switch from: two batches waiting
        # are enough, and the memory budget is left to the other accounts' readers.
        run = 1 if alone or nwriters == 1 else 4
        qs: list[queue.Queue[tuple[_FolderJob, list[tuple[MessageMeta, bytes]]] | None]] = [
            queue.Queue(maxsize=max(2, run)) for _ in range(nwriters)
        ]
        errors: list[BaseException] = []
        budget = self.e.budget

        # Set when the reader has a first batch to read (the writers log in meanwhile), or is done.
        reading = threading.Event()
        work: list[bool] = []  # [True] once there is a batch to copy

        def reader() -> None:
            try:
                for lane, job, batch in in_lanes(jobs, nwriters, lambda j: self._batches(j.metas, alone=alone), run):
                    if errors:
                        break
                    if not work:
                        work.append(True)
                        reading.set()
                    folder, uids = job.folder.name, [mm.uid for mm in batch]
                    budget.acquire(sum(mm.size for mm in batch))
                    try:
                        bodies = dict(self.retry(src, lambda: list(src.fetch(folder, uids))))  # noqa: B023
                    except BaseException:
                        budget.release(sum(mm.size for mm in batch))
                        raise
                    items = [(mm, bodies[mm.uid]) for mm in batch if mm.uid in bodies]
                    for mm in batch:
                        if mm.uid not in bodies:
                            self.e.reporter.note(self.account, f"{folder}: UID {mm.uid} vanished from the source")
                    budget.release(sum(mm.size for mm in batch if mm.uid not in bodies))
                    if items:
                        qs[lane].put((job, items))
            except BaseException as e:  # handed to the main thread
                errors.append(e)
            finally:
                reading.set()
                for q in qs:
                    q.put(None)

        def release(items: list[tuple[MessageMeta, bytes]]) -> None:
            budget.release(sum(mm.size for mm, _ in items))

        def writer(i: int) -> None:
            q = qs[i]
            # One APPEND in flight while the next is sent (see _append_send): the target's imap
            # process goes from one batch to the next without waiting for this thread to read
            # the answer, record it in the ledger and send again.
            w: WriteStore | None = None
            inflight: _Inflight | None = None

            def settle() -> None:
                nonlocal inflight
                if inflight is not None:
                    done, inflight = inflight, None
                    assert w is not None  # it sent the batch
                    try:
                        self._append_answer(w, done)
                    finally:
                        release(done.items)

            try:
                reading.wait()
                if work and not errors:  # logs in while the reader reads the first batch
                    w = self._writer(i)
                while True:
                    try:
                        got = q.get_nowait()
                    except queue.Empty:
                        settle()  # nothing to send meanwhile: record what landed first
                        got = q.get()
                    if got is None:
                        break
                    job, items = got
                    started: _Inflight | None = None
                    try:
                        if not errors:
                            assert w is not None  # a batch came, so there was work when no error was
                            started = self._append_send(w, job, items)
                    finally:
                        if started is None:
                            release(items)
                    settle()
                    inflight = started
                settle()
            except BaseException as e:
                errors.append(e)
                with contextlib.suppress(BaseException):
                    settle()
                while (rest := q.get()) is not None:  # drain so the reader never blocks
                    release(rest[1])

        threads = [threading.Thread(target=reader, name=f"read-{self.account}")]
        threads += [
            threading.Thread(target=writer, args=(i,), name=f"write-{self.account}-{i}") for i in range(nwriters)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _append_send(self, w: WriteStore, job: _FolderJob, items: list[tuple[MessageMeta, bytes]]) -> _Inflight | None:
        """Record the batch's intents, then send it. Where the store can pipeline (an IMAP
        server with LITERAL+), the answer is read later, by :meth:`_append_answer` on what this
        returns; else (or when the batch was refused or failed at once) it is done here: None."""
        self._stop_if_blocked()
        folder, target_folder, validity = job.folder.name, job.target_folder, job.status.uidvalidity
        pending = [
            MessageRecord(
                validity, mm.uid, mm.key, mm.size, "pending", "", target_folder, None, None, job.target_after, mm.flags
            )
            for mm, _ in items
        ]
        if self.opts.pace is not None:
            self.opts.pace(len(items), sum(len(body) for _, body in items))
        self.ledger.record_pending(self.account, folder, pending, self.run_id)
        # Most messages of a batch share a few sets of flags: each set's storable part worked out
        # once, unless keywords of it were dropped (recorded for each message, by _storable).
        storable: dict[tuple[str, ...], tuple[str, ...]] = {}
        appends: list[AppendItem] = []
        for mm, body in items:
            flags = storable.get(mm.flags)
            if flags is None:
                flags = self._storable(job, mm.uid, mm.flags, job.perm)
                if mm.uid not in job.dropped:
                    storable[mm.flags] = flags
            appends.append(AppendItem(body, flags, mm.internaldate, mm.uid))
        sent: list[_Inflight] = []

        def send() -> list[int | None] | None:
            answer = w.append_send(target_folder, appends)
            if answer is None:  # the store can't pipeline: the answer now
                return w.append(target_folder, appends)
            sent.append(_Inflight(job, items, appends, answer))
            return None

        self._append_outcome(w, job, items, appends, send)
        return sent[0] if sent else None

    def _append_answer(self, w: WriteStore, sent: _Inflight) -> None:
        """The answer to a batch sent by :meth:`_append_send`."""
        self._append_outcome(w, sent.job, sent.items, sent.appends, sent.answer)

    def _append_outcome(
        self,
        w: WriteStore,
        job: _FolderJob,
        items: list[tuple[MessageMeta, bytes]],
        appends: list[AppendItem],
        call: Callable[[], list[int | None] | None],
    ) -> None:
        """``call()`` appends (or reads an append's answer): the UIDs are recorded; a refusal is
        tried message by message; a temporary failure leaves the batch uncertain. None from
        ``call``: sent, answer to come."""
        try:
            uids = call()
        except ItemRefused:
            self._append_singly(w, job, items)
            return
        except TemporaryFailure as e:
            self._append_uncertain(w, job, e)
            return
        if uids is not None:
            self._appended(job, items, appends, uids)

    def _append_uncertain(self, w: WriteStore, job: _FolderJob, e: TemporaryFailure) -> None:
        # The batch may or may not have landed: leave the intents pending; resolved by re-planning.
        self.e.reporter.note(self.account, f"{job.folder.name}: {e.message}; will check the target and resume")
        if self.opts.throttled is not None:
            self.opts.throttled()
        job.uncertain = True
        with contextlib.suppress(TemporaryFailure):
            w.reconnect()

    def _appended(
        self,
        job: _FolderJob,
        items: list[tuple[MessageMeta, bytes]],
        appends: list[AppendItem],
        uids: list[int | None],
    ) -> None:
        self.e.keywords.learn(job.target_folder, stored=(k for it in appends for k in it.flags))
        self._record(job, list(zip((mm for mm, _ in items), uids, strict=True)))

    def _record(self, job: _FolderJob, landed: list[tuple[MessageMeta, int | None]]) -> None:
        """The fact after the intent: these messages are on the target under these UIDs."""
        tv, after = job.target_validity or None, job.target_after
        self.ledger.record_copied(
            self.account,
            job.folder.name,
            [
                MessageRecord(
                    job.status.uidvalidity,
                    mm.uid,
                    mm.key,
                    mm.size,
                    "copied",
                    "copied",
                    job.target_folder,
                    tv,
                    uid,
                    after,
                    mm.flags,
                )  # fmt: skip
                for mm, uid in landed
            ],
            self.run_id,
        )
        nbytes = sum(mm.size for mm, _ in landed)
        with self._lock:
            self.stats.copied += len(landed)
            self.stats.bytes += nbytes
            dropped = [(mm, job.dropped.pop(mm.uid)) for mm, _ in landed if mm.uid in job.dropped]
        for mm, drops in dropped:
            self._keywords_dropped(job, mm, drops)
        self.e.reporter.copied(self.account, len(landed), nbytes)

    def _append_singly(self, w: WriteStore, job: _FolderJob, items: list[tuple[MessageMeta, bytes]]) -> None:
        """Each message of a refused batch alone, to find the ones the target refuses.

        A message refused while it carries keywords the target has not shown it stores is appended
        again without them; if the target takes it so, they are added back one at a time
        (:meth:`_add_keywords`), so a keyword the target refuses costs only itself, never the
        message. If it refuses the message without them too, the message is what it refuses: one
        more APPEND, only for a message with keywords not yet seen stored.
        """
        folder, target_folder = job.folder.name, job.target_folder
        for mm, body in items:
            with self._lock:
                job.dropped.pop(mm.uid, None)
            # With what the batch's refusal taught, here or in another writer.
            it = AppendItem(body, self._storable(job, mm.uid, mm.flags, job.perm), mm.internaldate, mm.uid)
            try:
                try:
                    uid = w.append(target_folder, [it])[0]
                    self.e.keywords.learn(target_folder, stored=it.flags)
                except ItemRefused as refusal:
                    unknown = self.e.keywords.limits.unknown(target_folder, it.flags)
                    if not unknown:
                        raise
                    base = tuple(f for f in it.flags if f not in unknown)
                    try:
                        uid = w.append(target_folder, [dataclasses.replace(it, flags=base)])[0]
                    except ItemRefused:
                        raise refusal from None
                    if uid is not None:
                        self._add_keywords(w, job, mm.uid, uid, base, unknown)
                    else:  # no APPENDUID to STORE on: which keyword it refuses can't be told
                        why = "the target refused the message with it and took it without (no UIDPLUS to tell more)"
                        with self._lock:
                            job.dropped.setdefault(mm.uid, []).extend((k, why) for k in unknown)
            except ItemRefused as e:
                with self._lock:
                    job.dropped.pop(mm.uid, None)
                    self.stats.refused += 1
                refused = MessageRecord(
                    job.status.uidvalidity, mm.uid, mm.key, mm.size, "refused", "", target_folder, None, None,
                    job.target_after, mm.flags,
                )  # fmt: skip
                self.ledger.record_copied(self.account, folder, [refused], self.run_id)
                self.finding(
                    folder,
                    mm.uid,
                    "refused",
                    _describe(self.account, folder, mm, f"refused by the target: {e.message}"),
                    _details(mm) | {"server": e.message},
                )
                continue
            except TemporaryFailure:
                job.uncertain = True
                with contextlib.suppress(TemporaryFailure):
                    w.reconnect()
                return
            self._record(job, [(mm, uid)])


def _above(state: FolderState | None, incremental: bool) -> int:
    """The UID above which a folder's source is read: its last pass's UIDNEXT - 1 when this pass
    is incremental, else 0 (all of it)."""
    return state.uidnext - 1 if incremental and state is not None else 0


_J = TypeVar("_J")
_B = TypeVar("_B")


def in_lanes(
    jobs: Iterable[_J], writers: int, batches: Callable[[_J], Iterator[_B]], run: int = 1
) -> Iterator[tuple[int, _J, _B]]:
    """Batches of all folders, as (writer, job, batch): each of the ``writers`` has a lane holding
    one folder at a time, and the lanes give up to ``run`` batches each in turn. While folders are
    left, a folder is appended by one writer only: two target connections appending to one folder
    wait for each other's lock on it (Dovecot's uidlist and index; the benchmark's writers sharing
    folders took 1.28 x the time of a copy giving each connection whole folders, 1.21 x once
    they no longer shared). ``jobs`` is taken lazily (it may plan each folder as it comes): a
    lane takes the next folder when its own runs out, so the first batch goes out after one
    folder's plan. When no folder is left for a lane, it shares one still going (a mailbox of
    one big folder, the last large folder): two writers on one folder still beat one. A ``run``
    of batches from one folder is read from the source with one SELECT (the reader's connection
    going from one folder to another costs the source server a SELECT each time: ~5 ms of its
    CPU for a folder of a few thousand messages, measured)."""
    source = iter(jobs)
    lanes: list[tuple[_J, Iterator[_B]] | None] = [None] * writers
    more = True

    def take(i: int) -> tuple[_J, _B] | None:
        """Lane ``i``'s next batch: of its folder, else of the next folder, else of a folder
        another lane holds; None when every folder is done."""
        nonlocal more
        while True:
            if lanes[i] is None and more:
                job = next(source, None)
                more = job is not None
                if job is not None:
                    lanes[i] = (job, batches(job))
            owner = i if lanes[i] is not None else next((k for k in range(writers) if lanes[k] is not None), -1)
            if owner < 0:
                return None
            lane = lanes[owner]
            assert lane is not None
            batch = next(lane[1], None)
            if batch is not None:
                return lane[0], batch
            lanes[owner] = None  # this folder is done: its lane takes the next one

    while True:
        gave = False
        for i in range(writers):
            for _ in range(run):
                got = take(i)
                if got is None:
                    break
                yield i, *got
                gave = True
        if not gave:
            return


def scope_prefix(
    ns: Mapping[str, Sequence[tuple[str, str]]], prefix: str | None, role: str, unit: str
) -> tuple[str, str]:
    """(prefix, delimiter) of a unit's shared namespace on one side, from its NAMESPACE answer:
    the configured ``prefix`` (its delimiter: the longest shared namespace it lies in), else the
    first shared namespace. ConfigError where there is none, or where the configured prefix lies
    in no shared namespace or in a personal or other users' one inside it (Cyrus' ``INBOX/``)."""
    shared = list(ns.get("shared") or [])
    if prefix is None:
        if not shared:
            raise ConfigError(
                [f"{unit}: the {role} server shows no shared namespace (NAMESPACE third group)"],
                hint=f"set [public] {role}_prefix, or leave 'public' out of [project] items",
            )
        p, d = shared[0]
        return p, d or "/"
    inside = sorted((x for x in shared if prefix.startswith(x[0])), key=lambda x: -len(x[0]))
    # Never into a personal or other users' namespace: the unit would write into someone's mailbox.
    mine = [p for role in ("personal", "other") for p, _ in ns.get(role) or [] if prefix.startswith(p)]
    if not inside or any(len(p) > len(inside[0][0]) or (p == inside[0][0] == "") for p in mine):
        known = ", ".join(repr(p) for p, _ in shared) or "none"
        raise ConfigError(
            [f"{unit}: [public] {role}_prefix {prefix!r} is not in the {role} server's shared namespace ({known})"],
            hint="public folders go only into a shared namespace, never into a user's own mailbox",
        )
    return prefix, inside[0][1] or "/"


SHARED_CLASH = "lands in the target's shared namespace"


def _keep_out_of(m: FolderMapping, shared: Sequence[str]) -> FolderMapping:
    """A personal folder whose target name falls under one of the target's ``shared`` namespace
    prefixes is not copied: it would be written into a public or another user's folder."""
    # The namespace's root too (Dovecot's "Public" for "Public/"): CREATE there is not personal.
    hit = next((p for p in shared if m.target is not None and (m.target.startswith(p) or m.target == p[:-1])), None)
    if hit is None:
        return m
    return FolderMapping(m.source, None, f"{SHARED_CLASH} {hit!r} as {m.target!r}", m.notes)


def _server_words(message: str) -> str:
    """The server's own words at the end of one of our messages ("label: APPEND x: words")."""
    return message.rsplit(": ", 1)[-1]


def _unknown_meta(uid: int) -> MessageMeta:
    """A message gone from the source since it was planned: only its UID is known."""
    return MessageMeta(uid=uid, size=0, internaldate=datetime.min, flags=(), key="")


def _describe(account: str, folder: str, m: MessageMeta, what: str) -> str:
    subj = m.subject[:80]
    return (
        f"{account}: folder {folder!r}, UID {m.uid}, Message-ID {m.message_id or '(none)'}, "
        f"subject {subj!r}, {m.size} bytes: {what}"
    )


def _details(m: MessageMeta) -> dict[str, Any]:
    return {
        "uid": m.uid,
        "message_id": m.message_id,
        "subject": m.subject,
        "date": m.date,
        "size": m.size,
    }
