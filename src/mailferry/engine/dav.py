"""The calendar and contact engine: joins one account's DAV stores and the ledger, runs the plan
of each collection (:mod:`mailferry.plan.dav`), writes, then records each fact.

Per account: the source's calendars and address books are listed; each is matched by name to a
target collection (created when missing, with its properties); a collection whose sync token or
CTag is the one recorded after the last complete pass is skipped without reading a member. The
others are planned from their members, the ledger and the target's members; new and changed
items are read in multiget batches, inspected (UID, malformed input), their people's addresses
rewritten through the identity map and, when the target would schedule on import, their
meetings marked ``SCHEDULE-AGENT=CLIENT`` (so nobody is notified); then written with
``If-None-Match: *`` (new) or ``If-Match`` (changed), several at once. Before each write the intent
is recorded (``pending``), after it the fact (``copied`` with the target's ETag, or ``refused``
with a finding), so a run killed at any moment ends, once re-run, as an uninterrupted one: a
pending item whose UID the target already holds is adopted, not written twice. Last, each
collection's sharing is re-created for the mapped principals.

A server that throttles (HTTP 429/503, :class:`~mailferry.errors.Throttled`) while items are read
or written is waited out: every writer to that server pauses for what it asked (``Retry-After``)
or a growing delay, then the same request goes again; only a server that keeps throttling past
:attr:`DavOptions.throttle_retries` fails the account (a temporary failure: run again later).
In a distributed run the ``pace``/``slow_down`` hooks carry the pause to every worker.

Never writes to a source store (it is opened read-only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from mailferry.connectors.base import DavReadStore, DavWriteStore
from mailferry.errors import ExitCode, ItemRefused, MailferryError, Throttled
from mailferry.formats import ical, vcard
from mailferry.formats.ical import BadItem
from mailferry.model.dav import (
    Collection,
    DavItem,
    DavServerInfo,
    FreeBusyAccess,
    Share,
    info_from_dict,
    info_to_dict,
)
from mailferry.plan.dav import (
    CollectionPlan,
    Copy,
    DavPolicy,
    Keep,
    Update,
    collection_target_href,
    place,
    plan_collection,
    resource_name,
    target_names,
)
from mailferry.state.ledger import DavCollectionState, DavItemRecord, Finding, SqliteLedger

KIND_OF_TYPE = {"calendars": "calendar", "contacts": "addressbook"}


@dataclass(frozen=True, slots=True)
class DavConnection:
    """How to reach one account on one DAV server (the connector's endpoint and login)."""

    endpoint: Any
    login: Any
    imap_acl: Any = None  # opens the account's IMAP session on the same server (Cyrus' mailbox ACLs), or None


@dataclass(frozen=True, slots=True)
class DavJob:
    source_user: str
    target_user: str
    source: DavConnection
    target: DavConnection


@dataclass(frozen=True, slots=True)
class DavOptions:
    types: tuple[str, ...] = ("calendars", "contacts")
    scheduling: str = "auto"  # auto | paused | client
    policy: DavPolicy = DavPolicy()
    sharing: bool = True
    batch_items: int = 100
    writers: int = 4  # PUTs in flight per account at most...
    writes_in_flight: int = 16  # ...and all accounts together (the target's max_connections)
    full: bool = False  # look at every collection, even those whose sync token says unchanged
    throttle_retries: int = 8  # a request a throttling server refused is sent again this often...
    throttle_wait_max: float = 120.0  # ...after waiting what it asked, at most this long each time


@dataclass(slots=True)
class DavStats:
    account: str
    target_user: str
    status: str = "ok"
    collections: int = 0
    collections_created: int = 0
    collections_unchanged: int = 0
    copied: int = 0
    updated: int = 0
    matched: int = 0  # already on the target (found by UID)
    removed: int = 0
    refused: int = 0
    bytes: int = 0
    rewritten: int = 0  # items whose ORGANIZER/ATTENDEE addresses were rewritten
    marked: int = 0  # meetings marked SCHEDULE-AGENT=CLIENT
    shares: int = 0
    findings: int = 0
    outstanding: int = 0
    seconds: float = 0.0
    error: str = ""
    exit_code: int = 0
    scheduling: str = ""  # what was done about the target's scheduling: "marked" | "unchanged"

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


StoreOpener = Callable[..., DavWriteStore]  # (connection, readonly, label, known=DavServerInfo | None)


def scheduling_marks(mode: str, target: DavServerInfo) -> bool:
    """Whether imported meetings get SCHEDULE-AGENT=CLIENT: always with ``client``, never with
    ``paused`` (the admin paused the target's scheduling), and with ``auto`` when the target says
    it schedules (RFC 6638 ``calendar-auto-schedule``)."""
    if mode == "client":
        return True
    if mode == "paused":
        return False
    return target.schedules


@dataclass(slots=True)
class _Inspected:
    uid: str
    summary: str
    start: str
    data: bytes
    rewrites: int = 0
    marked: bool = False
    adopt_etag: str | None = None  # the source ETag to record if the target already holds the item


class DavEngine:
    def __init__(
        self,
        ledger: SqliteLedger,
        opts: DavOptions,
        *,
        open_store: StoreOpener,
        addresses: Callable[[str], str | None] = lambda _a: None,
        principals: Callable[[str], str | None] = lambda _p: None,
        note: Callable[[str, str], None] = lambda _a, _t: None,
        progress: Callable[[str, int, int], None] = lambda _a, _planned, _done: None,
        pace: Callable[[str, int, int], None] | None = None,
        slow_down: Callable[[str, float], None] | None = None,
    ) -> None:
        """``progress(account, planned, done)``: items to write found in one collection's plan,
        and items written (or found already there), as they happen (the progress display).
        ``pace(side, items, bytes)``: called before each read from (``side`` "source") or write to
        ("target") a server, waits as long as the cluster's limits ask; ``slow_down(side, s)``:
        that server throttled us, every worker should pause there ``s`` seconds."""
        self.ledger = ledger
        self.opts = opts
        self.open_store = open_store
        self.addresses = addresses
        self.principals = principals
        self.note = note
        self.progress = progress
        # PUTs in flight, all accounts together: an account with much to write uses the slots the
        # others leave (a fixed share per account left the last big accounts writing alone).
        self.write_slots = threading.BoundedSemaphore(max(1, opts.writes_in_flight))
        self.offered: set[str] = set()  # target accounts offered a share in this run: they accept it
        self.offered_lock = threading.Lock()
        self.pace = pace
        self.slow_down = slow_down
        self._paused_until: dict[str, float] = {}  # side -> monotonic time its pause ends
        self._pause_lock = threading.Lock()

    def patiently(self, side: str, nbytes: int, call: Callable[[], Any], account: str) -> Any:
        """``call()``, waiting out a throttling ``side`` ("source" or "target"): after a
        :class:`Throttled` every thread of this engine (and, through ``slow_down``, every worker)
        holds its requests to that server for the time asked (else 1, 2, 4... s), then the same
        request goes again. ``account``: whose request, for the progress notes."""
        attempt = 0
        while True:
            self._wait(side, nbytes)
            try:
                return call()
            except Throttled as e:
                if attempt >= self.opts.throttle_retries:
                    raise Throttled(
                        f"{e.message}; still throttling after {attempt} waits",
                        retry_after=e.retry_after,
                        hint="the server is overloaded: run again later, or lower [*.dav] max_connections",
                    ) from None
                asked = e.retry_after if e.retry_after is not None else float(2**attempt)
                delay = min(max(asked, 0.1), self.opts.throttle_wait_max)
                attempt += 1
                with self._pause_lock:
                    now = time.monotonic()
                    self._paused_until[side] = max(self._paused_until.get(side, 0.0), now + delay)
                if self.slow_down is not None:
                    self.slow_down(side, delay)
                self.note(account, f"the {side} server throttles ({e.message}): every writer waits {delay:g} s")

    def _wait(self, side: str, nbytes: int) -> None:
        with self._pause_lock:
            left = self._paused_until.get(side, 0.0) - time.monotonic()
        if left > 0:
            time.sleep(left)
        if self.pace is not None:
            self.pace(side, 1 if side == "target" else 0, nbytes)

    def kinds(self) -> set[str]:
        return {KIND_OF_TYPE[t] for t in self.opts.types if t in KIND_OF_TYPE}

    def migrate_account(self, job: DavJob, run_id: int) -> DavStats:
        stats = DavStats(job.source_user, job.target_user)
        t0 = time.monotonic()
        run: _DavRun | None = None
        try:
            run = _DavRun(self, job, run_id, stats)
            run.run()
            run.remember()
        except MailferryError as e:
            stats.status = "failed"
            stats.error = str(e)
            stats.exit_code = int(e.exit_code)
            self.ledger.add_finding(
                run_id, Finding(job.source_user, "", None, "account-failed", str(e), {"collection": None})
            )
            stats.findings += 1
        finally:
            if run is not None:
                run.close()
            stats.seconds = round(time.monotonic() - t0, 3)
            stats.outstanding = len(self.ledger.dav_outstanding(job.source_user))
        return stats

    def accept_shares(self, job: DavJob) -> int:
        """After every account's collections are shared: accept, as this target account, the
        shares offered to it (the target's own step; see DavWriteStore.accept_shares)."""
        if not self.opts.sharing:
            return 0
        store = self.open_store(job.target, False, f"{job.target_user} (target)")
        try:
            return store.accept_shares()
        except ItemRefused as e:
            self.note(job.source_user, f"accepting the shares offered to {job.target_user}: {e.message}")
            return 0
        finally:
            store.close()

    def plan_account(self, job: DavJob) -> tuple[list[CollectionPlan], bool]:
        """What a migrate would do, reading only (the ledger is not written): the plans and
        whether meetings would be marked SCHEDULE-AGENT=CLIENT."""
        run = _DavRun(self, job, 0, DavStats(job.source_user, job.target_user), dry_run=True)
        try:
            return run.plans(), run.marks
        finally:
            run.close()


class _DavRun:
    def __init__(self, engine: DavEngine, job: DavJob, run_id: int, stats: DavStats, *, dry_run: bool = False):
        self.e = engine
        self.job = job
        self.account = job.source_user
        self.run_id = run_id
        self.stats = stats
        self.dry_run = dry_run
        self.ledger = engine.ledger
        self._lock = threading.Lock()
        self._told_sharing = False
        self._unsettled: set[str] = set()  # source collections with a conflict or a property not kept
        self.source: DavReadStore = engine.open_store(
            job.source, True, f"{job.source_user} (source)", known=self._known("source")
        )
        self._target: DavWriteStore | None = None
        self._target_info: DavServerInfo | None = None

    @property
    def target(self) -> DavWriteStore:
        """The target store, opened at first use: a pass that finds every source collection as
        the ledger left it never logs in to the target."""
        if self._target is None:
            self._target = self.e.open_store(
                self.job.target, self.dry_run, f"{self.job.target_user} (target)", known=self._known("target")
            )
        return self._target

    @property
    def target_info(self) -> DavServerInfo:
        if self._target_info is None:
            info = self.target.info()
            if self._known("target") is not None:  # kept from an earlier run: ask what it does now
                info = replace(info, dav=self.target.dav_header())
            self._target_info = info
            self.stats.scheduling = "marked" if self.marks else "unchanged"
        return self._target_info

    @property
    def marks(self) -> bool:
        """Whether imported meetings get SCHEDULE-AGENT=CLIENT (see :func:`scheduling_marks`)."""
        return scheduling_marks(self.e.opts.scheduling, self.target_info)

    def _known(self, role: str) -> DavServerInfo | None:
        saved = self.e.ledger.dav_server(self.job.source_user, role)
        return info_from_dict(saved) if saved else None

    def remember(self) -> None:
        """Keep what discovery found for the next pass (after a pass that went through)."""
        if self.dry_run:
            return
        for role, store in (("source", self.source), ("target", self._target)):
            if store is None:
                continue
            info = info_to_dict(store.info())
            if info != self.e.ledger.dav_server(self.job.source_user, role):
                self.e.ledger.save_dav_server(self.job.source_user, role, info)

    def close(self) -> None:
        self.source.close()
        if self._target is not None:
            self._target.close()

    def finding(
        self, collection: str, item_uid: str, kind: str, message: str, details: dict[str, Any], *, notice: bool = False
    ) -> None:
        if not notice:
            with self._lock:
                self.stats.findings += 1
        if not self.dry_run:
            d = {"collection": collection, "item_uid": item_uid or None, **details}
            self.ledger.add_finding(self.run_id, Finding(self.account, collection, None, kind, message, d))

    # -- collections ------------------------------------------------------------------------------

    def _homes(self) -> dict[str, str | None]:
        i = self.target_info
        return {"calendar": i.calendar_home, "addressbook": i.addressbook_home}

    def _pairs(self) -> list[tuple[Collection, Collection | None, str]]:
        """(source collection, the target's of the same kind and name or None, target href)."""
        kinds = self.e.kinds()
        sources = [c for c in self.source.collections() if c.kind in kinds]
        existing = self.target.collections()
        targets = {(c.kind, c.name): c for c in existing}
        homes = self._homes()
        names = target_names(sources, existing, same_home=_same(homes["calendar"], homes["addressbook"]))
        out: list[tuple[Collection, Collection | None, str]] = []
        for c in sorted(sources, key=lambda c: (c.kind, c.name)):
            tname = names[(c.kind, c.name)]
            t = targets.get((c.kind, tname))
            home = homes[c.kind]
            if t is None and home is None:
                self.finding(
                    c.name,
                    "",
                    "collection-refused",
                    f"{self.account}: the target has no {c.kind} home for {self.job.target_user}; "
                    f"{c.kind} {c.name!r} can't be created",
                    {"kind": c.kind},
                )
                continue
            out.append((c, t, t.href if t is not None else collection_target_href(home or "", tname)))
        return out

    def plans(self) -> list[CollectionPlan]:
        out: list[CollectionPlan] = []
        for c, t, href in self._pairs():
            records = self.ledger.dav_items(self.account, c.href)
            members = self.source.members(c)
            target_members = self.target.members(t) if t is not None else {}
            out.append(
                plan_collection(
                    c,
                    href,
                    create=t is None,
                    members=members,
                    records=records,
                    target_members=target_members,
                    policy=self.e.opts.policy,
                )
            )
        return out

    def run(self) -> None:
        self._freebusy()
        unchanged = self._unchanged()
        if unchanged is not None and not unchanged[1]:
            self.stats.collections = self.stats.collections_unchanged = unchanged[0]
            return
        for c, t, href in self._pairs():
            self.stats.collections += 1
            try:
                self._collection(c, t, href)
            except ItemRefused as e:
                self.finding(
                    c.name,
                    "",
                    "collection-refused",
                    f"{self.account}: {c.kind} {c.name!r}: the target refused it: {e.message}",
                    {"kind": c.kind, "status": e.status},
                )

    def _unchanged(self) -> tuple[int, bool] | None:
        """(collections, whether any needs a look): a collection needs none when its sync token
        or CTag is the one recorded after its last complete pass, none of its items is pending
        or refused, and its sharing is the one already re-created. None with ``--full``."""
        if self.e.opts.full:
            return None
        kinds = self.e.kinds()
        sources = [c for c in self.source.collections() if c.kind in kinds]
        states = self.ledger.dav_collections(self.account)
        unsettled = self.ledger.dav_unsettled(self.account)
        if self.e.opts.policy.propagate_deletions:
            unsettled |= self.ledger.dav_gone(self.account)  # deletions to carry out now
        shared = {
            (r["collection"], r["principal"], r["access"])
            for r in self.ledger.dav_shares(self.account)
            if r["state"] == "set"
        }
        for c in sources:
            st = states.get(c.href)
            if st is None or not st.complete or c.href in unsettled or not _same_version(st, c):
                return len(sources), True
            new_shares = c.shares is not None and any((c.href, x.principal, x.access) not in shared for x in c.shares)
            if self.e.opts.sharing and new_shares:
                return len(sources), True
        return len(sources), False

    def _collection(self, c: Collection, t: Collection | None, href: str) -> None:
        state = self.ledger.dav_collections(self.account).get(c.href)
        records = self.ledger.dav_items(self.account, c.href)
        tname = resource_name(href)
        if t is None:
            t = self.target.create_collection(replace(c, href=href, name=tname, sync_token=None, ctag=None))
            self.stats.collections_created += 1
            self._properties_kept(c, t)
        elif _properties_differ(c, t):
            t = self.target.create_collection(replace(c, href=t.href, name=tname, sync_token=None, ctag=None))
            self._properties_kept(c, t)
        propagate = self.e.opts.policy.propagate_deletions
        unsettled = any(r.state != "copied" or (propagate and r.how == "gone") for r in records.values())
        if (
            not self.e.opts.full
            and state is not None
            and state.complete
            and not unsettled
            and state.target_href == t.href
            and _same_version(state, c)
        ):
            self.stats.collections_unchanged += 1
            self._share(c, t)
            return
        members = self._members(c, state, records)
        target_members = self.target.members(t)
        plan = plan_collection(
            c,
            t.href,
            create=False,
            members=members,
            records=records,
            target_members=target_members,
            policy=self.e.opts.policy,
        )
        if not self.dry_run and (work := len(plan.copies) + len(plan.updates)):
            self.e.progress(self.account, work, 0)
        complete = self._execute(plan, t, records, target_members)
        with self._lock:  # a conflict or a property not kept: looked at (and named) again next pass
            complete = complete and c.href not in self._unsettled
        self._share(c, t)  # before the state is saved complete: a kill in between shares again
        self.ledger.save_dav_collection(
            DavCollectionState(self.account, c.href, c.kind, c.name, t.href, c.sync_token, c.ctag, complete),
            self.run_id,
        )

    def _members(
        self, c: Collection, state: DavCollectionState | None, records: dict[str, DavItemRecord]
    ) -> dict[str, str | None]:
        """The source's members now: from the changes since the recorded sync token when the
        server still accepts it (no per-item listing), else a full listing."""
        if not self.e.opts.full and state is not None and state.complete and state.sync_token:
            changes = self.source.changes(c, state.sync_token)
            if changes is not None:
                members: dict[str, str | None] = {h: r.source_etag for h, r in records.items() if r.how != "gone"}
                for h in changes.removed:
                    members.pop(h, None)
                members.update(changes.changed)
                return members
        return self.source.members(c)

    # -- items ------------------------------------------------------------------------------------

    def _execute(
        self,
        plan: CollectionPlan,
        t: Collection,
        records: dict[str, DavItemRecord],
        target_members: dict[str, str | None],
    ) -> bool:
        """Carry out the plan; False when some item could not be read (the collection is then
        not marked complete, so the next pass looks at it again)."""
        c = plan.source
        accounted = {r.target_href for r in records.values()}
        unknown = [h for h in target_members if h not in accounted]
        target_uids: dict[str, str] = {}
        if unknown:  # the target holds items mailferry did not write: know them by UID
            for item in self.target.fetch(t, unknown):
                uid = self._uid_quietly(c.kind, item.data)
                if uid:
                    target_uids.setdefault(uid, item.href)
        taken = set(target_members)
        work: list[Copy | Update] = [*plan.copies, *plan.updates]
        # UIDs the source holds elsewhere in this collection: not those of items gone from it or
        # refused (a re-created item under a new name is not a duplicate of its deleted self)
        listed = {a.source_href for a in plan.actions if not (isinstance(a, Keep) and a.reason.startswith("gone"))}
        seen_uids: dict[str, str] = {
            r.uid: h for h, r in records.items() if r.uid and r.state != "refused" and h in listed
        }
        by_href = {unquote(a.source_href): a for a in work}  # servers spell hrefs' quoting differently
        batch = max(1, self.e.opts.batch_items)
        hrefs = [a.source_href for a in work]
        parts = [hrefs[i : i + batch] for i in range(0, len(hrefs), batch)]
        blind: list[DavItemRecord] = []
        complete = True

        def read(part: list[str]) -> list[DavItem]:
            return self.e.patiently(  # type: ignore[no-any-return]
                "source", 0, lambda: list(self.source.fetch(c, part)), self.account
            )

        with (
            ThreadPoolExecutor(max_workers=max(1, self.e.opts.writers), thread_name_prefix="dav-put") as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="dav-read") as reader,
        ):
            # The next batch is read while this one is written (one batch ahead: memory stays
            # bounded by two batches).
            ahead = reader.submit(read, parts[0]) if parts else None
            for n in range(len(parts)):
                assert ahead is not None
                items = ahead.result()
                ahead = reader.submit(read, parts[n + 1]) if n + 1 < len(parts) else None
                served = {unquote(x.href) for x in items}
                unserved = [by_href[unquote(h)] for h in parts[n] if unquote(h) not in served]
                if unserved:
                    complete = False  # listed but not served: looked at again next pass
                    self._unserved(c, unserved)
                jobs: list[tuple[Copy | Update, _Inspected, str, bool]] = []
                for item in items:
                    action = by_href.get(unquote(item.href))
                    if action is None:
                        continue
                    got = self._inspect(c, item)
                    if got is None:
                        self._refuse_record(c, action, "", records)
                        continue
                    other = seen_uids.get(got.uid)
                    if other is not None and other != item.href:
                        self.finding(
                            c.name,
                            got.uid,
                            "duplicate-uid",
                            f"{self.account}: {c.kind} {c.name!r}: item {got.uid} ({got.summary}) is at two places "
                            f"in the source ({other} and {item.href}); the target keeps one resource per UID: the "
                            "second was not copied",
                            {"source_href": item.href, "other_href": other, "summary": got.summary},
                        )
                        self._refuse_record(c, action, got.uid, records)
                        continue
                    seen_uids[got.uid] = item.href
                    if isinstance(action, Update):
                        jobs.append((action, got, action.target_href, False))
                        continue
                    wanted = action.target_href
                    if action.resolve and wanted in target_members:
                        target_uids.setdefault(self._target_uid(t, wanted, c.kind) or "", wanted)
                    href, there = place(got.uid, wanted, target_uids, taken)
                    taken.add(href)
                    if there and action.resolve and action.source_href in records:
                        got.adopt_etag = records[action.source_href].source_etag
                    jobs.append((action, got, href, there))
                intents = [
                    DavItemRecord(a.source_href, a.etag, g.uid, "pending", "", href, None, g.rewrites)
                    for a, g, href, there in jobs
                    if not there and isinstance(a, Copy)
                ]
                if intents:
                    self.ledger.record_dav_items(self.account, c.href, intents, self.run_id)
                results = list(pool.map(lambda j: self._write_slot(t, c, j, target_members), jobs))
                done = [r for r in results if r is not None]
                if done:
                    self.ledger.record_dav_items(self.account, c.href, done, self.run_id)
                    blind.extend(r for r in done if r.state == "copied" and r.target_etag is None)
        if blind:
            # The target answered a PUT without an ETag (Cyrus, for an item it changes on
            # store): take the version it holds now, so that a later change of that copy by
            # someone else is seen as a conflict instead of overwritten.
            now = self.target.members(t)
            known = [replace(r, target_etag=now[r.target_href]) for r in blind if now.get(r.target_href)]
            if known:
                self.ledger.record_dav_items(self.account, c.href, known, self.run_id)
        gone = [k.source_href for k in plan.actions if isinstance(k, Keep) and k.reason.startswith("gone")]
        # A refused item the source no longer has is no longer outstanding; a copied one is
        # remembered, so that turning propagate_deletions on later finds it without a listing.
        self.ledger.forget_dav_items(self.account, c.href, [h for h in gone if records[h].state == "refused"])
        marked = [
            replace(records[h], how="gone") for h in gone if records[h].state == "copied" and records[h].how != "gone"
        ]
        if marked:
            self.ledger.record_dav_items(self.account, c.href, marked, self.run_id)
        for r in plan.removals:
            try:
                self.target.delete(r.target_href, r.target_etag)
                self.ledger.forget_dav_items(self.account, c.href, [r.source_href])
                self.stats.removed += 1
            except ItemRefused as e:
                if e.status == 412:
                    self.finding(
                        c.name,
                        records[r.source_href].uid,
                        "conflict",
                        f"{self.account}: {c.kind} {c.name!r}: item {records[r.source_href].uid} was deleted on the "
                        "source but changed on the target since mailferry copied it: the target's copy was kept",
                        {"target_href": r.target_href},
                    )
                    continue
                self.finding(
                    c.name,
                    records[r.source_href].uid,
                    "refused",
                    f"{self.account}: {c.kind} {c.name!r}: the target refused to remove {r.target_href}: {e.message}",
                    {"status": e.status, "target_href": r.target_href},
                )
        return complete

    def _properties_kept(self, c: Collection, t: Collection) -> None:
        """A property the target did not take (a PROPPATCH answered 207 with a failed propstat, or
        a value it changed) is named, not taken for done; the items are carried all the same."""
        lost = property_differences(c, t)
        if lost:
            with self._lock:
                self._unsettled.add(c.href)
            self.finding(
                c.name,
                "",
                "properties-refused",
                f"{self.account}: {c.kind} {c.name!r}: the target did not keep {', '.join(lost)} as the source has "
                "them; the items are carried, the properties are set again on the next pass",
                {"kind": c.kind, "properties": lost},
            )

    def _unserved(self, c: Collection, actions: list[Copy | Update]) -> None:
        """Items the source lists but did not serve (a per-item error in the multiget answer, or
        gone in between): named, and looked at again next pass; nothing is recorded as done."""
        for a in actions:
            self.finding(
                c.name,
                a.uid if isinstance(a, Update) else "",
                "unreadable",
                f"{self.account}: {c.kind} {c.name!r}: the source lists {a.source_href} but did not serve it; "
                "it was not copied this pass and is looked at again on the next one",
                {"source_href": a.source_href},
            )

    def _write_slot(
        self,
        t: Collection,
        c: Collection,
        job: tuple[Copy | Update, _Inspected, str, bool],
        target_members: dict[str, str | None],
    ) -> DavItemRecord | None:
        with self.e.write_slots:
            done: DavItemRecord | None = self.e.patiently(
                "target", len(job[1].data), lambda: self._write(t, c, job, target_members), self.account
            )
        if done is not None and done.state == "copied":
            self.e.progress(self.account, 0, 1)
        return done

    def _write(
        self,
        t: Collection,
        c: Collection,
        job: tuple[Copy | Update, _Inspected, str, bool],
        target_members: dict[str, str | None],
    ) -> DavItemRecord | None:
        action, got, href, there = job
        name = unquote(href.rsplit("/", 1)[-1])  # put() quotes it: the href itself is already quoted
        if there:
            with self._lock:
                self.stats.matched += 1
            # Adopted, not written: which version the target holds is not known. Recorded with the
            # version this run intended (the pending row's) or none, so that a source change since
            # is carried by an Update on the next pass rather than taken as done.
            return DavItemRecord(
                action.source_href,
                got.adopt_etag,
                got.uid,
                "copied",
                "found",
                href,
                target_members.get(href),
                got.rewrites,
            )
        etag_if = action.target_etag if isinstance(action, Update) else None
        data = got.data
        how = "updated" if isinstance(action, Update) else "copied"
        try:
            try:
                new_etag = self.target.put(t, name, data, etag=etag_if)
            except ItemRefused as e:
                if c.kind == "addressbook" and e.status in (400, 403, 415, 422) and vcard.is_v21(data):
                    try:
                        data = vcard.to_v30(data)
                    except Exception as bad:  # noqa: BLE001 - a card vobject can't convert is this item's finding
                        raise ItemRefused(
                            f"{e.message}; converting it to vCard 3.0 failed too ({bad})", status=e.status
                        ) from None
                    new_etag = self.target.put(t, name, data, etag=etag_if)
                    self.finding(
                        c.name,
                        got.uid,
                        "converted",
                        f"{self.account}: address book {c.name!r}: vCard {got.uid} ({got.summary}) is vCard 2.1, "
                        f"which the target refused ({e.message}); it was converted to vCard 3.0",
                        {"source_href": action.source_href, "summary": got.summary},
                    )
                    how = "converted"
                elif e.status == 412 and isinstance(action, Copy):
                    uid = self._target_uid(t, href, c.kind)
                    if uid == got.uid:
                        with self._lock:
                            self.stats.matched += 1
                        return DavItemRecord(
                            action.source_href, got.adopt_etag, got.uid, "copied", "found", href, None, got.rewrites
                        )
                    raise
                else:
                    raise
        except ItemRefused as e:
            if isinstance(action, Update) and e.status == 412 and (landed := self._holds(t, href, data)) is not None:
                # the target holds exactly this version: a resend of a PUT that had landed
                with self._lock:
                    self.stats.updated += 1
                return DavItemRecord(
                    action.source_href, action.etag, got.uid, "copied", how, href, landed, got.rewrites
                )
            if isinstance(action, Update) and e.status == 412:
                with self._lock:
                    self._unsettled.add(c.href)
                self.finding(
                    c.name,
                    got.uid,
                    "conflict",
                    f"{self.account}: {c.kind} {c.name!r}: item {got.uid} ({got.summary}) changed on the target since "
                    "mailferry copied it, and on the source too; the target's version was left as it is (named on "
                    "every pass until then): to carry the source's version, delete the target's copy and run again",
                    {"source_href": action.source_href, "target_href": href, "summary": got.summary},
                )
                return None
            self.finding(
                c.name,
                got.uid,
                "refused",
                f"{self.account}: {c.kind} {c.name!r}: the target refused item {got.uid} ({got.summary}"
                f"{', ' + got.start if got.start else ''}): {e.message}",
                {"source_href": action.source_href, "status": e.status, "summary": got.summary, "start": got.start},
            )
            with self._lock:
                self.stats.refused += 1
            # A refused update leaves the older copy where it is: remembered (href and ETag), so that
            # the retry replaces it in place instead of writing a second copy beside it.
            kept = action.target_etag if isinstance(action, Update) else None
            return DavItemRecord(action.source_href, action.etag, got.uid, "refused", "", href, kept, got.rewrites)
        with self._lock:
            if isinstance(action, Update):
                self.stats.updated += 1
            else:
                self.stats.copied += 1
            self.stats.bytes += len(data)
            self.stats.rewritten += 1 if got.rewrites else 0
            self.stats.marked += 1 if got.marked else 0
        return DavItemRecord(action.source_href, action.etag, got.uid, "copied", how, href, new_etag, got.rewrites)

    def _refuse_record(self, c: Collection, action: Copy | Update, uid: str, records: dict[str, DavItemRecord]) -> None:
        with self._lock:
            self.stats.refused += 1
        target = action.target_href
        kept = action.target_etag if isinstance(action, Update) else None  # the older copy stays: see _write
        self.ledger.record_dav_items(
            self.account,
            c.href,
            [DavItemRecord(action.source_href, action.etag, uid, "refused", "", target, kept)],
            self.run_id,
        )

    def _holds(self, t: Collection, href: str, data: bytes) -> str | None:
        """The target's ETag of ``href`` when it holds ``data`` (as the server keeps it: compared
        after normalisation), else None."""
        for item in self.target.fetch(t, [href]):
            try:
                same = item.data == data or not (
                    ical.differences(data, item.data) if t.kind == "calendar" else vcard.differences(data, item.data)
                )
            except BadItem:
                return None
            return (item.etag or "") if same else None
        return None

    def _target_uid(self, t: Collection, href: str, kind: str) -> str | None:
        for item in self.target.fetch(t, [href]):
            return self._uid_quietly(kind, item.data)
        return None

    @staticmethod
    def _uid_quietly(kind: str, data: bytes) -> str | None:
        try:
            return (ical.inspect(data, values=False).uid if kind == "calendar" else vcard.inspect(data).uid) or None
        except BadItem:
            return None

    def _inspect(self, c: Collection, item: DavItem) -> _Inspected | None:
        """Read an item's identity and rewrite its people; None (and a finding) when it is too
        malformed to carry (no UID, not iCalendar/vCard at all)."""
        try:
            if c.kind == "calendar":
                obj = ical.inspect(item.data, values=False)
                got = _Inspected(obj.uid, obj.summary or "", obj.start or "", item.data)
                if obj.problems:  # carried as it is; the target judges, and the admin is told
                    self.finding(
                        c.name,
                        obj.uid,
                        "unusual",
                        f"{self.account}: {c.kind} {c.name!r}: item {obj.uid} ({got.summary}): "
                        f"{'; '.join(obj.problems)}; copied as it is",
                        {"source_href": item.href, "problems": list(obj.problems)},
                        notice=True,
                    )
                if obj.has_attendees or obj.organizer:
                    data, rewrites = ical.rewrite(item.data, self.e.addresses, client_scheduling=self.marks)
                    got.data = data
                    got.rewrites = sum(1 for r in rewrites if not r.property.endswith("SCHEDULE-AGENT"))
                    got.marked = self.marks and obj.has_attendees
                return got
            card = vcard.inspect(item.data)
            return _Inspected(card.uid, card.fn or "", "", item.data)
        except BadItem as e:
            uid = _raw_uid(item.data)
            named = f"item {uid} ({item.href})" if uid else f"item {item.href} (no UID)"
            self.finding(
                c.name,
                uid,
                "malformed",
                f"{self.account}: {c.kind} {c.name!r}: {named} is malformed ({e}); it was not copied: "
                "repair or re-export it on the source, then run again",
                {"source_href": item.href, "reason": str(e)},
            )
            return None

    # -- sharing ----------------------------------------------------------------------------------

    def _sharing_unknown(self, c: Collection) -> None:
        """The source can't tell who the collection is shared with (no mechanism it answers, or
        only as the account itself): once per account, so that the admin knows to look."""
        with self._lock:
            if self._told_sharing:
                return
            self._told_sharing = True
        self.finding(
            c.name,
            "",
            "sharing-unknown",
            f"{self.account}: the source does not tell through this login who the account's calendars and address "
            "books are shared with, so no sharing was re-created for them; with Radicale give the account's own "
            "password reference, or re-create the sharing on the target",
            {"kind": c.kind},
            notice=True,
        )

    def _wanted_freebusy(self) -> tuple[FreeBusyAccess, FreeBusyAccess, list[str]] | None:
        """(who may see the account's free/busy on the source, the same on the target through the
        principal map, the source's principals with no target account); None when the source
        does not tell or calendars are not moved."""
        if not self.e.opts.sharing or "calendar" not in self.e.kinds():
            return None
        source = self.source.freebusy_access()
        if source is None:
            return None  # Radicale: its rights file, which no request shows; the target keeps its own
        mapped = {p: self.e.principals(p) for p in source.principals}
        target = FreeBusyAccess(source.everyone, frozenset(t for t in mapped.values() if t is not None))
        return source, target, sorted(p for p, t in mapped.items() if t is None)

    def _freebusy(self) -> None:
        """Who may see the account's free/busy, as on the source. Every pass reads it from the
        source (one PROPFIND); the target is read, and written, only when that differs from
        what the ledger says was re-created (rows of ``dav_shares`` under :data:`FREEBUSY`)."""
        if self.dry_run:
            return
        wanted = self._wanted_freebusy()
        if wanted is None:
            return
        source, target, unmapped = wanted
        keys = _freebusy_keys(source)
        rows = self.ledger.dav_shares(self.account)
        done = {r["principal"] for r in rows if r["collection"] == FREEBUSY and r["state"] == "set"}
        if keys == done:
            return
        for p in unmapped:
            self.finding(
                FREEBUSY_NAME,
                "",
                "share-unmapped",
                f"{self.account}: {p} may see the account's free/busy on the source, but has no account on the "
                "target in this project: not granted",
                {"principal": p, "access": "freebusy"},
            )
        state = "set"
        have = self.target.freebusy_access()
        if have is None and target.everyone and not target.principals:
            self.finding(
                FREEBUSY_NAME,
                "",
                "freebusy-unknown",
                f"{self.account}: everyone could see the account's free/busy on the source; the target does not "
                "say who may (Radicale: the 'f' permission of its rights file), so check it there",
                {"access": "freebusy"},
                notice=True,
            )
        elif have != target:
            try:
                self.target.set_freebusy_access(target)
            except ItemRefused as e:
                state = "refused"
                self.finding(
                    FREEBUSY_NAME,
                    "",
                    "freebusy-refused",
                    f"{self.account}: on the source {source.describe()} may see the account's free/busy; the target "
                    f"could not be set so ({e.message}); nothing was widened: set it on the target by hand",
                    {"access": "freebusy", "status": e.status, "principals": sorted(target.principals)},
                )
            else:
                self.stats.shares += 1
        for k in sorted(keys - done):
            tp = "*" if k == "*" else self.e.principals(k) or ""
            self.ledger.record_dav_share(self.account, FREEBUSY, k, "freebusy", tp, state, self.run_id)
        if state == "set":  # whom the source no longer lets see it: the target no longer does either
            for k in sorted(done - keys):
                self.ledger.record_dav_share(self.account, FREEBUSY, k, "freebusy", "", "refused", self.run_id)

    def _source_shares(self, c: Collection) -> list[Share] | None:
        """Who the source collection is shared with: as its listing gave them (Cyrus' D:invite,
        Radicale's one map/list a pass), else asked for this collection."""
        return list(c.shares) if c.shares is not None else self.source.shares(c)

    def _share(self, c: Collection, t: Collection) -> None:
        if not self.e.opts.sharing or self.dry_run:
            return
        shares = self._source_shares(c)
        if shares is None:
            self._sharing_unknown(c)
            return
        if not shares:
            return
        done = {
            (s["principal"], s["access"])
            for s in self.ledger.dav_shares(self.account)
            if s["collection"] == c.href and s["state"] == "set"
        }
        for s in shares:
            if (s.principal, s.access) in done:
                continue
            tp = self.e.principals(s.principal)
            if tp is None:
                self.finding(
                    c.name,
                    "",
                    "share-unmapped",
                    f"{self.account}: {c.kind} {c.name!r} is shared with {s.principal} ({s.access}) on the source, "
                    "who has no account on the target in this project: not shared",
                    {"principal": s.principal, "access": s.access},
                )
                continue
            try:
                self.target.set_share(t, Share(tp, s.access))
            except ItemRefused as e:
                self.finding(
                    c.name,
                    "",
                    "share-refused",
                    f"{self.account}: {c.kind} {c.name!r}: the target could not share it with {tp} ({s.access}): "
                    f"{e.message}",
                    {"principal": s.principal, "target_principal": tp, "access": s.access, "status": e.status},
                )
                self.ledger.record_dav_share(self.account, c.href, s.principal, s.access, tp, "refused", self.run_id)
                continue
            self.ledger.record_dav_share(self.account, c.href, s.principal, s.access, tp, "set", self.run_id)
            self.stats.shares += 1
            with self.e.offered_lock:
                self.e.offered.add(tp)


FREEBUSY = "#freebusy"  # the ledger's pseudo-collection for who may see an account's free/busy
FREEBUSY_NAME = "free/busy"  # how findings and verdicts name it


def _freebusy_keys(access: FreeBusyAccess) -> set[str]:
    """The ledger rows of one free/busy access: ``*`` for everyone, else one per account."""
    return set(access.principals) | ({"*"} if access.everyone else set())


def _raw_uid(data: bytes) -> str:
    """The UID line of an item too malformed to parse, to name it (first one, unfolded)."""
    import re

    text = data.decode("utf-8", "replace").replace("\r\n ", "").replace("\n ", "")
    m = re.search(r"^UID[;:](?:[^:\r\n]*:)?([^\r\n]*)", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.rstrip("/") == b.rstrip("/")


def _same_version(state: DavCollectionState, c: Collection) -> bool:
    if c.sync_token and state.sync_token:
        return c.sync_token == state.sync_token
    if c.ctag and state.ctag:
        return c.ctag == state.ctag
    return False


_PROPS = ("displayname", "description", "color", "order", "components", "transparent")


def _properties_differ(s: Collection, t: Collection) -> bool:
    """True when a property the source sets differs on the target (then it is set again)."""
    return bool(property_differences(s, t))


def property_differences(s: Collection, t: Collection) -> list[str]:
    """The collection properties the source sets that the target lacks or holds otherwise,
    compared as the servers mean them: colours without case or an opaque alpha (``#ff0000`` is
    ``#FF0000FF``), component sets as sets, a target's that takes more (or doesn't say) kept."""
    out = []
    for p in _PROPS:
        v, w = getattr(s, p), getattr(t, p)
        if v in (None, (), ""):
            continue
        if p == "color":
            v, w = _colour(v), _colour(w)
        elif p == "components" and (not w or frozenset(v) <= frozenset(w)):
            continue  # protected once made (RFC 4791 5.2.3): a target taking more (or not saying) is fine
        if v != w:
            out.append(p)
    return out


def _colour(c: str | None) -> str | None:
    if c is None:
        return None
    c = c.strip().upper()
    return c[:7] if len(c) == 9 and c.startswith("#") and c.endswith("FF") else c


def worst_code(stats: Iterable[DavStats]) -> int:
    codes = [s.exit_code or (int(ExitCode.FINDINGS) if s.findings or s.outstanding else 0) for s in stats]
    return max(codes, default=0)


# -- verify ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class CollectionVerdict:
    """One source collection against its target copy. ``discrepancies``: each a dict with
    ``what`` (missing | extra | altered | refused | sharing), the item's UID, summary, start and
    the detail."""

    name: str
    kind: str
    target_href: str | None
    source_items: int = 0
    target_items: int = 0
    discrepancies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.discrepancies

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.name,
            "kind": self.kind,
            "target_href": self.target_href,
            "source_items": self.source_items,
            "target_items": self.target_items,
            "clean": self.clean,
            "discrepancies": self.discrepancies,
        }


def verify_dav_account(engine: DavEngine, job: DavJob, *, deep: bool = False) -> list[CollectionVerdict]:
    """Compare every source collection with its target copy through the ledger: each source item
    must be on the target where the ledger says (and, with ``deep``, equal after normalisation
    except the rewrites mailferry makes); nothing the target holds may be unaccounted for; the
    sharing must be the mapped source sharing."""
    run = _VerifyRun(engine, job, 0, DavStats(job.source_user, job.target_user), dry_run=True)
    try:
        return run.verify(deep)
    finally:
        run.close()


class _VerifyRun(_DavRun):
    def verify(self, deep: bool) -> list[CollectionVerdict]:
        out: list[CollectionVerdict] = []
        for c, t, _href in self._pairs():
            v = CollectionVerdict(c.name, c.kind, t.href if t else None)
            out.append(v)
            members = self.source.members(c)
            v.source_items = len(members)
            if t is None:
                v.discrepancies.append(
                    {
                        "what": "missing",
                        "item_uid": None,
                        "detail": f"no {c.kind} {resource_name(_href)!r} on the target",
                    }
                )
                continue
            target_members = self.target.members(t)
            v.target_items = len(target_members)
            records = self.ledger.dav_items(self.account, c.href)
            accounted: set[str] = set()
            pairs: dict[str, str] = {}
            for href in sorted(members):
                r = records.get(href)
                if r is not None:
                    accounted.add(r.target_href)
                if r is None or r.state != "copied" or r.target_href not in target_members:
                    state = (
                        "never copied" if r is None else ("refused by the target" if r.state == "refused" else r.state)
                    )
                    if r is not None and r.state == "copied":
                        state = "gone from the target"
                    v.discrepancies.append(
                        {
                            "what": "refused" if r is not None and r.state == "refused" else "missing",
                            "item_uid": r.uid if r else None,
                            "source_href": href,
                            "detail": state,
                        }
                    )
                elif r.source_etag is not None and members[href] is not None and r.source_etag != members[href]:
                    v.discrepancies.append(
                        {
                            "what": "altered",
                            "item_uid": r.uid,
                            "source_href": href,
                            "detail": "changed on the source since the last pass: run migrate again",
                        }
                    )
                else:
                    pairs[href] = r.target_href
            for r in records.values():
                accounted.add(r.target_href)
            for href in sorted(set(target_members) - accounted):
                v.discrepancies.append(
                    {
                        "what": "extra",
                        "item_uid": None,
                        "target_href": href,
                        "detail": "on the target, not from this source collection",
                    }
                )
            if deep and pairs:
                self._deep_compare(c, t, pairs, v)
            if self.e.opts.sharing:
                self._compare_shares(c, t, v)
        self._compare_freebusy(out)
        return out

    def _compare_freebusy(self, verdicts: list[CollectionVerdict]) -> None:
        """Who may see the account's free/busy on the target against the source (mapped), named on
        the account's first calendar's verdict (free/busy is the account's, not a collection's)."""
        wanted = self._wanted_freebusy()
        where = next((v for v in verdicts if v.kind == "calendar" and v.target_href), None)
        if wanted is None or where is None:
            return
        _source, target, _unmapped = wanted
        have = self.target.freebusy_access()
        if have is None:
            if target.everyone and not target.principals:
                return  # the target does not tell; migrate named it (freebusy-unknown)
            detail = f"on the source {target.describe()} may see the free/busy; the target does not tell who may"
        elif have != target:
            detail = f"on the source {target.describe()} may see the free/busy; on the target {have.describe()}"
        else:
            return
        where.discrepancies.append({"what": "freebusy", "item_uid": None, "detail": detail})

    def _deep_compare(self, c: Collection, t: Collection, pairs: dict[str, str], v: CollectionVerdict) -> None:
        batch = max(1, self.e.opts.batch_items)
        hrefs = sorted(pairs)
        for i in range(0, len(hrefs), batch):
            part = hrefs[i : i + batch]
            source = {x.href: x.data for x in self.source.fetch(c, part)}
            target = {x.href: x.data for x in self.target.fetch(t, [pairs[h] for h in part])}
            for h in part:
                s, d = source.get(h), target.get(pairs[h])
                if s is None:
                    continue  # gone from the source during the run: the shallow pass names it next time
                if d is None:  # listed by the target a moment ago, but not served: not proven there
                    v.discrepancies.append(
                        {
                            "what": "missing",
                            "item_uid": None,
                            "source_href": h,
                            "target_href": pairs[h],
                            "detail": "the target lists it but did not serve it, so it could not be compared",
                        }
                    )
                    continue
                if c.kind == "calendar":
                    try:
                        obj = ical.inspect(s)
                        expected = s
                        rewrites: list[Any] = []
                        if obj.has_attendees or obj.organizer:
                            expected, rewrites = ical.rewrite(s, self.e.addresses, client_scheduling=self.marks)
                        diffs = ical.differences(expected, d)
                        uid, summary, start = obj.uid, obj.summary or "", obj.start or ""
                    except BadItem as e:
                        diffs, uid, summary, start = [f"source item is malformed: {e}"], "", "", ""
                else:
                    try:
                        card = vcard.inspect(s)
                        diffs = vcard.differences(s, d)
                        uid, summary, start = card.uid, card.fn or "", ""
                    except BadItem as e:
                        diffs, uid, summary, start = [f"source item is malformed: {e}"], "", "", ""
                if diffs:
                    v.discrepancies.append(
                        {
                            "what": "altered",
                            "item_uid": uid,
                            "summary": summary,
                            "start": start,
                            "source_href": h,
                            "target_href": pairs[h],
                            "detail": "; ".join(diffs),
                        }
                    )

    def _compare_shares(self, c: Collection, t: Collection, v: CollectionVerdict) -> None:
        source = self._source_shares(c)
        if source is None:
            return
        expected = {(p, s.access) for s in source if (p := self.e.principals(s.principal)) is not None}
        got = self.target.shares(t)
        if got is None:
            if expected:
                v.discrepancies.append(
                    {
                        "what": "sharing",
                        "item_uid": None,
                        "detail": "the target can't tell who the collection is shared with",
                    }
                )
            return
        have = {(s.principal, s.access) for s in got}
        for p, a in sorted(expected - have):
            v.discrepancies.append(
                {
                    "what": "sharing",
                    "item_uid": None,
                    "principal": p,
                    "access": a,
                    "detail": f"shared with {p} ({a}) on the source, not so on the target",
                }
            )
        for p, a in sorted(have - expected):
            v.discrepancies.append(
                {
                    "what": "sharing",
                    "item_uid": None,
                    "principal": p,
                    "access": a,
                    "detail": f"shared with {p} ({a}) on the target, not so on the source",
                }
            )
