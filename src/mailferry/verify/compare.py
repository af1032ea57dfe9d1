"""Pure comparison of a source folder with its target folder -> discrepancies, one verdict.

Each source message is looked for on the target first where the ledger says it went (target
UID), then by identity among the target messages no ledger row claims. Outcomes per message:

missing     on the source, not on the target (and not excluded by the admin's policy)
refused     missing, but the ledger knows the target refused it (a known, reported loss)
altered     found, but its identity, size or (``--deep``) SHA-256 of the full bytes differ
date        found, but INTERNALDATE differs (compared as instants: servers may change the offset)
flags       found, but flags differ (beyond what the target can't store)
extra       on the target, neither copied by us nor matching a source message

Messages already on the target before migration that match a source message are fine.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mailferry.model.mail import MessageMeta
from mailferry.plan.planner import UNSETTABLE
from mailferry.state.ledger import MessageRecord

KINDS = ("missing", "refused", "altered", "date", "flags", "extra")
PROBLEMS = frozenset({"missing", "altered", "extra", "date", "flags", "refused"})


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: str
    account: str
    source_folder: str
    target_folder: str
    source_uid: int | None
    target_uid: int | None
    message_id: str
    date: str
    subject: str
    size: int
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class FolderVerdict:
    account: str
    folder: str
    target_folder: str
    source_messages: int
    target_messages: int
    source_bytes: int
    target_bytes: int
    excluded: int
    discrepancies: list[Discrepancy]

    @property
    def clean(self) -> bool:
        return not any(d.kind in PROBLEMS for d in self.discrepancies)


def _flags(fl: Sequence[str], storable: Callable[[Sequence[str]], tuple[str, ...]] | None) -> tuple[str, ...]:
    kept = tuple(sorted(f for f in fl if f.lower() not in UNSETTABLE))
    return storable(kept) if storable else kept


def compare_folder(
    *,
    account: str,
    folder: str,
    target_folder: str,
    uidvalidity: int,
    source: Sequence[MessageMeta],
    target: Sequence[MessageMeta],
    records: Sequence[MessageRecord],
    excluded: Callable[[MessageMeta], bool] = lambda m: False,
    source_hashes: Mapping[int, str] | None = None,
    target_hashes: Mapping[int, str] | None = None,
    storable: Callable[[Sequence[str]], tuple[str, ...]] | None = None,
) -> FolderVerdict:
    by_tuid = {t.uid: t for t in target}
    recs = {r.uid: r for r in records if r.uidvalidity == uidvalidity}
    claimed = {
        r.target_uid
        for r in records
        if r.state == "copied" and r.target_uid is not None and r.target_folder == target_folder
    }
    pool: dict[str, deque[MessageMeta]] = defaultdict(deque)
    for tm in sorted(target, key=lambda x: x.uid):
        if tm.uid not in claimed:
            pool[tm.key].append(tm)
    used: set[int] = set()
    out: list[Discrepancy] = []
    n_excluded = 0

    def disc(kind: str, m: MessageMeta, t: MessageMeta | None, detail: str = "") -> None:
        out.append(
            Discrepancy(
                kind,
                account,
                folder,
                target_folder,
                m.uid,
                t.uid if t else None,
                m.message_id,
                m.date,
                m.subject,
                m.size,
                detail,
            )
        )

    for m in sorted(source, key=lambda m: m.uid):
        r = recs.get(m.uid)
        t: MessageMeta | None = None
        if r is not None and r.state == "copied" and r.target_uid is not None:
            t = by_tuid.get(r.target_uid)
        if t is None:
            q = pool.get(m.key)
            if q:
                t = q.popleft()
        if t is None:
            if excluded(m):
                n_excluded += 1
            elif r is not None and r.state == "refused":
                disc("refused", m, None, "the target refused it during migrate (see the report)")
            else:
                disc("missing", m, None)
            continue
        used.add(t.uid)
        if t.key != m.key or t.size != m.size:
            disc("altered", m, t, f"identity or size differ (source {m.size} bytes, target {t.size} bytes)")
        elif (
            source_hashes is not None
            and target_hashes is not None
            and (source_hashes.get(m.uid) != target_hashes.get(t.uid))
        ):
            disc("altered", m, t, "SHA-256 of the full message differs")
        if m.internaldate.timestamp() != t.internaldate.timestamp():
            disc(
                "date",
                m,
                t,
                f"INTERNALDATE {m.internaldate.isoformat()} on the source, {t.internaldate.isoformat()} on the target",
            )
        sf, tf = _flags(m.flags, storable), _flags(t.flags, None)
        if sf != tf:
            disc(
                "flags",
                m,
                t,
                f"flags {' '.join(sf) or '(none)'} on the source, {' '.join(tf) or '(none)'} on the target",
            )
    for tm in sorted(target, key=lambda x: x.uid):
        if tm.uid not in used and tm.uid not in claimed:
            out.append(
                Discrepancy(
                    "extra", account, folder, target_folder, None, tm.uid, tm.message_id, tm.date, tm.subject, tm.size
                )
            )
    return FolderVerdict(
        account,
        folder,
        target_folder,
        len(source),
        len(target),
        sum(m.size for m in source),
        sum(t.size for t in target),
        n_excluded,
        out,
    )
