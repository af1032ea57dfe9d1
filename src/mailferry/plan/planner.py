"""The planner: (inventories, ledger, policy) -> an ordered list of actions, each with its reason.

Pure: no I/O, no clock. The plan *is* the dry run: ``mailferry plan`` prints it, ``migrate``
carries it out, and resuming after a crash re-plans from fresh inventories plus the ledger.

Decision table for one source message M in folder F (current source UIDVALIDITY V):

==============================================  ===============================================
ledger / target                                 action
==============================================  ===============================================
record (V, uid) copied                          nothing (flags: SetFlags when they differ)
record pending, target has an unclaimed copy    Adopt  (the append happened before the crash;
                                                SetFlags when that copy's flags differ)
record pending, no unclaimed copy on target     Forget the intent, then as "no record"
record refused                                  as "no record": retried by every pass
record refused, now outside the window          Forget, Skip (excluded by the admin's own rules)
record refused, M gone from the source          Forget (no longer outstanding)
no record, outside the date/size window         Skip   (policy; reported, not a finding)
no record, larger than the target accepts       Skip   (a finding: the target can't take it;
                                                the engine records it refused, outstanding)
no record, target has an unclaimed copy (key)   Adopt  (already there: another tool, earlier run)
no record                                       Copy
record of an older UIDVALIDITY, same key        Rebase (re-matched by identity, never re-copied)
record refused of an older UIDVALIDITY, no key  Forget (that message is gone from the source)
record copied by us, M gone from the source     Delete (only when deletions are opted in)
==============================================  ===============================================

"Unclaimed" target copies are the target messages no ledger record points at; they are matched
by ItemKey as a multiset, so two identical source messages need two target copies.

Refused messages (the target said no: over quota, too big) are *outstanding*: ``source`` must
hold every one of them still on the source, even in an incremental pass (the engine asks the
source for exactly those UIDs), so that each pass tries them again, cheaply, until they land.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mailferry.model.mail import MessageMeta
from mailferry.state.ledger import MessageRecord

# \Recent is session state and can never be set by APPEND or STORE (RFC 3501 2.3.2).
UNSETTABLE = frozenset({"\\recent"})


@dataclass(frozen=True, slots=True)
class Policy:
    since: datetime | None = None
    before: datetime | None = None
    min_size: int | None = None
    max_size: int | None = None
    target_size_limit: int | None = None  # APPENDLIMIT of the target, when it says
    propagate_deletions: bool = False
    sync_flags: bool = True


@dataclass(frozen=True, slots=True)
class Copy:
    meta: MessageMeta
    reason: str = "new on the source"


@dataclass(frozen=True, slots=True)
class Adopt:
    meta: MessageMeta
    target_uid: int
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    meta: MessageMeta
    reason: str
    finding: bool  # True: the operator must hear of it (exit code 1); False: by their own policy


@dataclass(frozen=True, slots=True)
class SetFlags:
    uidvalidity: int
    uid: int
    target_uid: int
    flags: tuple[str, ...]
    reason: str = "flags changed on the source"


@dataclass(frozen=True, slots=True)
class Delete:
    uidvalidity: int
    uid: int
    target_uid: int
    reason: str = "deleted on the source (deletions opted in)"


@dataclass(frozen=True, slots=True)
class Rebase:
    old_uidvalidity: int
    old_uid: int
    new_uid: int
    reason: str = "source UIDVALIDITY changed: re-matched by identity"


@dataclass(frozen=True, slots=True)
class Forget:
    uidvalidity: int
    uid: int
    reason: str = "interrupted append not found on the target: will be copied again"


Action = Copy | Adopt | Skip | SetFlags | Delete | Rebase | Forget


@dataclass(slots=True)
class FolderPlan:
    source_folder: str
    target_folder: str | None
    rule: str
    uidvalidity: int
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, kind: type) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def copies(self) -> list[Copy]:
        return [a for a in self.actions if isinstance(a, Copy)]

    @property
    def bytes_to_copy(self) -> int:
        return sum(a.meta.size for a in self.actions if isinstance(a, Copy))


def storable_flags(flags: Iterable[str], permanent: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split flags into (storable on the target, dropped). ``permanent`` is the target folder's
    PERMANENTFLAGS (None: unknown, assume everything storable); ``\\*`` allows any keyword."""
    keep: list[str] = []
    drop: list[str] = []
    perm = {p.lower() for p in permanent} if permanent is not None else None
    for f in flags:
        low = f.lower()
        if low in UNSETTABLE:
            continue
        if perm is None or low in perm or (not f.startswith("\\") and "\\*" in perm):
            keep.append(f)
        else:
            drop.append(f)
    return tuple(sorted(keep)), tuple(sorted(drop))


def policy_skip(m: MessageMeta, p: Policy) -> Skip | None:
    if p.target_size_limit is not None and m.size > p.target_size_limit:
        return Skip(m, f"larger ({m.size} bytes) than the target accepts (APPENDLIMIT {p.target_size_limit})", True)
    if p.max_size is not None and m.size > p.max_size:
        return Skip(m, f"larger ({m.size} bytes) than messages.max_size ({p.max_size})", False)
    if p.min_size is not None and m.size < p.min_size:
        return Skip(m, f"smaller ({m.size} bytes) than messages.min_size ({p.min_size})", False)
    if p.since is not None and m.internaldate < p.since:
        return Skip(m, f"dated {m.internaldate.isoformat()}, before messages.since", False)
    if p.before is not None and m.internaldate >= p.before:
        return Skip(m, f"dated {m.internaldate.isoformat()}, not before messages.before", False)
    return None


def plan_folder(
    *,
    source_folder: str,
    target_folder: str | None,
    rule: str,
    uidvalidity: int,
    source: Sequence[MessageMeta],
    records: Sequence[MessageRecord],
    target_unclaimed: Sequence[MessageMeta] = (),
    source_flags: Mapping[int, tuple[str, ...]] | None = None,
    source_uids: set[int] | None = None,
    policy: Policy = Policy(),
) -> FolderPlan:
    """Plan one folder. ``source`` holds the source messages to consider (all, or those above the
    last pass); ``source_flags`` the current flags of messages whose flags may have changed;
    ``source_uids`` every UID the source folder holds now (needed for deletions; None = unknown).
    """
    plan = FolderPlan(source_folder, target_folder, rule, uidvalidity)
    if target_folder is None:
        return plan

    current = {r.uid: r for r in records if r.uidvalidity == uidvalidity}
    stale = [r for r in records if r.uidvalidity != uidvalidity]

    # Unclaimed target copies by key, lowest UID first (deterministic).
    pool: dict[str, deque[int]] = defaultdict(deque)
    target_flags = {t.uid: t.flags for t in target_unclaimed}
    for t in sorted(target_unclaimed, key=lambda t: t.uid):
        pool[t.key].append(t.uid)

    # 1. Source UIDVALIDITY changed: re-match the old records by key, in UID order.
    rebased: set[int] = set()
    if stale:
        old_by_key: dict[str, deque[MessageRecord]] = defaultdict(deque)
        for r in sorted(stale, key=lambda r: (r.uidvalidity, r.uid)):
            if r.state != "pending":
                old_by_key[r.key].append(r)
        for m in source:
            if m.uid in current:
                continue
            olds = old_by_key.get(m.key)
            if olds:
                r = olds.popleft()
                plan.actions.append(Rebase(r.uidvalidity, r.uid, m.uid))
                rebased.add(m.uid)
                current[m.uid] = r
        for r in stale:
            if r.state == "pending":
                plan.actions.append(Forget(r.uidvalidity, r.uid, "interrupted append of a previous UIDVALIDITY"))
            elif r.state == "refused" and r in old_by_key.get(r.key, ()):
                plan.actions.append(Forget(r.uidvalidity, r.uid, "refused earlier, gone from the source since"))

    # 2. Interrupted appends: adopt the copy the target has, or forget the intent.
    forgotten: set[int] = set()
    for uid in sorted(current):
        r = current[uid]
        if r.state != "pending":
            continue
        q = pool.get(r.key)
        if q:
            tuid = q.popleft()
            meta = next((m for m in source if m.uid == uid), None)
            if meta is not None:
                plan.actions.append(Adopt(meta, tuid, "interrupted append found on the target"))
                # It may have landed with fewer flags than the source's (keywords the target
                # refused, added back one by one after the append when the crash came).
                want = _settable(meta.flags)
                if policy.sync_flags and want != _settable(target_flags[tuid]):
                    reason = "the interrupted copy on the target has other flags"
                    plan.actions.append(SetFlags(uidvalidity, uid, tuid, want, reason))
            else:
                plan.actions.append(
                    Adopt(_stub(r), tuid, "interrupted append found on the target (gone from the source since)")
                )
        else:
            plan.actions.append(Forget(r.uidvalidity, r.uid))
            forgotten.add(uid)

    # 3. New messages, and the refused ones again.
    present = {m.uid for m in source}
    for uid in sorted(current):
        r = current[uid]
        if r.state == "refused" and uid not in present:
            plan.actions.append(Forget(r.uidvalidity, uid, "refused earlier, gone from the source since"))
    for m in source:
        refused = m.uid in current and current[m.uid].state == "refused"
        if m.uid in current and m.uid not in forgotten and not refused:
            continue
        skip = policy_skip(m, policy)
        if skip is not None:
            if refused and not skip.finding:
                r = current[m.uid]
                plan.actions.append(Forget(r.uidvalidity, m.uid, "refused earlier, now excluded by the admin's rules"))
            plan.actions.append(skip)
            continue
        q = pool.get(m.key)
        if q:
            tuid = q.popleft()
            plan.actions.append(Adopt(m, tuid, "already on the target (same identity)"))
            want = _settable(m.flags)
            if policy.sync_flags and want != _settable(target_flags[tuid]):
                plan.actions.append(SetFlags(uidvalidity, m.uid, tuid, want, "the copy on the target has other flags"))
        else:
            plan.actions.append(Copy(m))

    # 4. Flags changed on the source.
    if policy.sync_flags and source_flags:
        for uid, flags in sorted(source_flags.items()):
            known = current.get(uid)
            if known is None or known.state != "copied" or known.target_uid is None:
                continue
            want = _settable(flags)
            if want != _settable(known.flags):
                plan.actions.append(SetFlags(uidvalidity, uid, known.target_uid, want))

    # 5. Deletions, opt-in, and only of what mailferry itself appended.
    if policy.propagate_deletions and source_uids is not None:
        for uid in sorted(current):
            r = current[uid]
            if uid not in source_uids and r.state == "copied" and r.how == "copied" and r.target_uid is not None:
                plan.actions.append(Delete(r.uidvalidity, uid, r.target_uid))
    return plan


def _settable(flags: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(f for f in flags if f.lower() not in UNSETTABLE))


def _stub(r: MessageRecord) -> MessageMeta:
    return MessageMeta(uid=r.uid, size=r.size, internaldate=datetime.min, flags=r.flags, key=r.key)


def claimed_target_uids(records: Iterable[MessageRecord], target_folder: str, target_uidvalidity: int) -> set[int]:
    """Target UIDs the ledger already accounts for in one target folder."""
    return {
        r.target_uid
        for r in records
        if r.target_uid is not None
        and r.target_folder == target_folder
        and r.state == "copied"
        and r.target_uidvalidity in (None, target_uidvalidity)
    }
