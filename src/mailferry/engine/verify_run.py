"""Verification: read both sides of every folder and compare them with the ledger.

Joins stores and ledger (so it lives in the engine); the comparison itself is pure
(:mod:`mailferry.verify.compare`). With ``deep`` every message body is read from both sides and
compared by SHA-256, streamed batch by batch so memory stays bounded.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from mailferry.connectors.base import ReadStore
from mailferry.engine.migrate import AccountJob, AccountRun, AccountStats, Engine
from mailferry.model.mail import MessageMeta
from mailferry.plan.planner import Policy, policy_skip, storable_flags
from mailferry.verify.compare import FolderVerdict, compare_folder


def _excluded(policy: Policy, m: MessageMeta) -> bool:
    s = policy_skip(m, policy)
    return s is not None and not s.finding


def _storable(perm: tuple[str, ...] | None, flags: Sequence[str]) -> tuple[str, ...]:
    return storable_flags(flags, perm)[0]


def _hashes(store: ReadStore, folder: str, metas: Sequence[MessageMeta], batch_bytes: int) -> dict[int, str]:
    """SHA-256 of every message, fetched in batches of at most ``batch_bytes`` (one message may exceed it)."""
    out: dict[int, str] = {}
    batch: list[int] = []
    size = 0

    def flush() -> None:
        for uid, body in store.fetch(folder, batch):
            out[uid] = hashlib.sha256(body).hexdigest()

    for m in metas:
        if batch and size + m.size > batch_bytes:
            flush()
            batch, size = [], 0
        batch.append(m.uid)
        size += m.size
    if batch:
        flush()
    return out


def verify_account(engine: Engine, job: AccountJob, *, deep: bool = False) -> list[FolderVerdict]:
    run = AccountRun(engine, job, 0, AccountStats(job.source_user, job.target_user), dry_run=True)
    try:
        folders = run.source_folders()
        mappings = run.folder_map(folders)
        known = {s.source_folder: s.target_folder for s in engine.ledger.folder_states(job.source_user)}
        by_name = {f.name: f for f in folders}
        src, tgt = run.source_store(), run.target_store()
        verdicts: list[FolderVerdict] = []
        policy = engine.options.policy
        for m in mappings:
            f = by_name[m.source]
            target_folder = known.get(f.name) or m.target
            if target_folder is None or not f.selectable:
                continue
            st = run.retry(src, src.status, f.name)
            smsgs: list[MessageMeta] = run.retry(src, src.inventory, f.name)
            if target_folder in run.target_folders:
                tmsgs: list[MessageMeta] = run.retry(tgt, tgt.inventory, target_folder)
            else:
                tmsgs = []
            # The target is only EXAMINEd here, which tells no PERMANENTFLAGS: a keyword the target
            # could not store (a finding of migrate) shows as a flags difference too.
            perm = None
            sh = th = None
            if deep:
                sh = _hashes(src, f.name, smsgs, engine.options.batch_bytes)
                th = _hashes(tgt, target_folder, tmsgs, engine.options.batch_bytes) if tmsgs else {}
            verdicts.append(
                compare_folder(
                    account=job.source_user,
                    folder=f.name,
                    target_folder=target_folder,
                    uidvalidity=st.uidvalidity,
                    source=smsgs,
                    target=tmsgs,
                    records=engine.ledger.messages(job.source_user, f.name),
                    excluded=functools.partial(_excluded, policy),
                    source_hashes=sh,
                    target_hashes=th,
                    storable=functools.partial(_storable, perm),
                )
            )
        return verdicts
    finally:
        run.close()
