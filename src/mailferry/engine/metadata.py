"""Folder METADATA (RFC 5464) of one account, carried after its mail (see
:mod:`mailferry.plan.metadata` for the decision table).

Like the permissions (:mod:`mailferry.engine.acl`): the source is read on every pass, the target
contacted only when something is to be written; each SETMETADATA is recorded after the server
said OK. Private entries are the account's own: read and written logged in as the account (or
the admin for it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailferry.connectors.imap import ImapStore, ServerRefused
from mailferry.connectors.wrappers import RetryPolicy
from mailferry.engine.migrate import AccountJob, open_store
from mailferry.plan.acl import Recorded
from mailferry.plan.metadata import ENTRIES, MetadataAction, MetadataSkip, SetMetadata, digest, plan_metadata
from mailferry.state.ledger import Finding, Ledger, SettingRecord
from mailferry.verify.metadata import MetadataDifference, compare_metadata

KIND = "metadata"


@dataclass(slots=True)
class MetadataStats:
    folders: int = 0
    set: int = 0
    removed: int = 0
    refused: int = 0
    findings: int = 0
    note: str = ""
    actions: list[MetadataAction] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "folders": self.folders,
            "set": self.set,
            "removed": self.removed,
            "refused": self.refused,
            "findings": self.findings,
            "note": self.note,
            "changes": [
                {
                    "source_folder": a.source_folder,
                    "target_folder": a.target_folder,
                    "entry": a.entry,
                    "action": "remove" if a.value is None else "set",
                    "reason": a.reason,
                }
                for a in self.actions
                if isinstance(a, SetMetadata)
            ],
        }


class MetadataEngine:
    def __init__(self, ledger: Ledger, *, retry: RetryPolicy | None = None) -> None:
        self.ledger = ledger
        self.retry = retry or RetryPolicy()

    def _read(self, store: ImapStore, folders: list[str]) -> dict[str, dict[str, bytes | None]]:
        out: dict[str, dict[str, bytes | None]] = {}
        for f in folders:
            with contextlib.suppress(ServerRefused):  # a folder it won't show: nothing to carry
                out[f] = store.get_metadata(f, ENTRIES)
        return out

    def _folders(self, account: str, folders: Mapping[str, str | None] | None) -> dict[str, str | None]:
        if folders is not None:
            return dict(folders)
        return {s.source_folder: (s.target_folder or None) for s in self.ledger.folder_states(account)}

    def run(
        self, job: AccountJob, run_id: int, *, folders: Mapping[str, str | None] | None = None, dry_run: bool = False
    ) -> MetadataStats:
        stats = MetadataStats()
        src = open_store(job.source, readonly=True, label=f"{job.source_user} (source)", retry=self.retry)
        tgt: ImapStore | None = None
        try:
            if not src.metadata:
                stats.note = "the source has no METADATA (RFC 5464): nothing to carry"
                return stats
            own = [f.name for f in src.own_folders() if f.selectable]
            stats.folders = len(own)
            values = self._read(src, own)
            fmap = self._folders(job.source_user, folders)
            recorded = {
                k: Recorded(r.value, r.target, r.state) for k, r in self.ledger.settings(job.source_user, KIND).items()
            }
            if not dry_run and not plan_metadata(values, fmap, recorded, target_supported=True):
                return stats  # nothing new: the target is not contacted
            tgt = open_store(job.target, readonly=dry_run, label=f"{job.target_user} (target)", retry=self.retry)
            actions = plan_metadata(values, fmap, recorded, target_supported=tgt.metadata)
            stats.actions = actions
            for a in actions:
                if isinstance(a, MetadataSkip):
                    self._finding(
                        stats, job, run_id, a.source_folder, a.finding or "metadata", a.reason, a.entry, dry_run
                    )
                elif not dry_run:
                    self._set(stats, job, run_id, tgt, a)
            return stats
        finally:
            for s in (src, tgt):
                if s is not None:
                    with contextlib.suppress(Exception):
                        s.close()

    def _set(self, stats: MetadataStats, job: AccountJob, run_id: int, tgt: ImapStore, a: SetMetadata) -> None:
        try:
            tgt.set_metadata(a.target_folder, a.entry, a.value)
        except ServerRefused as e:
            stats.refused += 1
            if a.value is not None:
                self.ledger.record_setting(
                    SettingRecord(job.source_user, KIND, a.key, digest(a.value), a.target, "refused", run_id)
                )
            self._finding(stats, job, run_id, a.source_folder, "metadata-refused", e.message, a.entry, False)
            return
        if a.value is None:
            self.ledger.forget_setting(job.source_user, KIND, a.key)
            stats.removed += 1
        else:
            self.ledger.record_setting(
                SettingRecord(job.source_user, KIND, a.key, digest(a.value), a.target, "set", run_id)
            )
            stats.set += 1

    def _finding(
        self,
        stats: MetadataStats,
        job: AccountJob,
        run_id: int,
        folder: str,
        kind: str,
        why: str,
        entry: str,
        dry: bool,
    ) -> None:
        stats.findings += 1
        if not dry:
            text = f"{job.source_user}: {folder!r}: METADATA {entry} not carried: {why}"
            self.ledger.add_finding(run_id, Finding(job.source_user, folder, None, kind, text, {"entry": entry}))

    def plan(self, job: AccountJob, folders: Mapping[str, str | None]) -> MetadataStats:
        return self.run(job, 0, folders=folders, dry_run=True)

    def verify(self, job: AccountJob) -> tuple[list[MetadataDifference], str]:
        src = open_store(job.source, readonly=True, label=f"{job.source_user} (source)", retry=self.retry)
        tgt: ImapStore | None = None
        try:
            if not src.metadata:
                return [], "the source has no METADATA (RFC 5464)"
            values = self._read(src, [f.name for f in src.own_folders() if f.selectable])
            fmap = self._folders(job.source_user, None)
            tgt = open_store(job.target, readonly=True, label=f"{job.target_user} (target)", retry=self.retry)
            if not tgt.metadata:
                return [], "the target has no METADATA (RFC 5464)"
            have = self._read(tgt, sorted({t for f in values if (t := fmap.get(f)) is not None}))
            return compare_metadata(values, have, fmap), ""
        finally:
            for s in (src, tgt):
                if s is not None:
                    with contextlib.suppress(Exception):
                        s.close()
