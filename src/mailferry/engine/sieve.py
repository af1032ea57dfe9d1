"""Carry one account's Sieve scripts: read the source over ManageSieve, rewrite each script
(addresses through the address map, ``fileinto`` folders through the account's folder map),
plan (:mod:`mailferry.plan.sieve`), then per script CHECKSCRIPT, PUTSCRIPT, record; SETACTIVE
for the active one, record. Writes, then records: a script put but not recorded (``kill -9``)
is found equal on the target next run and recorded then, without a PUTSCRIPT.

Runs after the account's mail: the folder map is the mail engine's (same rules, same target
listing), so ``fileinto "Lists/Python"`` lands where the mail of that folder went.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailferry.connectors.sieve import NoCheckScript, ScriptRefused, SieveEndpoint, SieveLogin, SieveStore
from mailferry.errors import ExitCode, MailferryError
from mailferry.formats.folders import FolderMapping
from mailferry.formats.sieve import Rewritten, rewrite_script
from mailferry.formats.sieve import requires as _requires
from mailferry.plan.sieve import KIND, SievePlan, SourceScript, compare_scripts, digest, plan_scripts
from mailferry.state.ledger import Finding, Ledger, SettingRecord

ACTIVE_KEY = ""  # the settings row naming the active script (a script name is never empty)


@dataclass(frozen=True, slots=True)
class SieveSide:
    endpoint: SieveEndpoint
    login: SieveLogin


@dataclass(frozen=True, slots=True)
class SieveJob:
    source_user: str
    target_user: str
    source: SieveSide
    target: SieveSide


@dataclass(slots=True)
class SieveStats:
    account: str
    target_user: str
    status: str = "ok"  # ok | failed
    scripts: int = 0
    put: int = 0
    unchanged: int = 0
    refused: int = 0
    activated: int = 0
    findings: int = 0
    error: str = ""
    exit_code: int = 0
    plan: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        code = self.exit_code or (int(ExitCode.FINDINGS) if self.findings else 0)
        out: dict[str, Any] = {
            "status": self.status,
            "scripts": self.scripts,
            "put": self.put,
            "unchanged": self.unchanged,
            "refused": self.refused,
            "activated": self.activated,
            "findings": self.findings,
            "exit_code": code,
        }
        if self.error:
            out["error"] = self.error
        if self.plan:
            out["plan"] = self.plan
        return out


def folder_lookup(mappings: Sequence[FolderMapping], prefix: str) -> Callable[[str], str | None]:
    """A folder name as a script writes it -> the target's name. Scripts name folders as the
    source's IMAP server does (``INBOX.Lists.Python``), or without the personal prefix
    (``Lists.Python``: Dovecot and Cyrus both resolve that inside the account)."""
    by_name = {m.source: m.target for m in mappings}

    def lookup(name: str) -> str | None:
        if name.upper() == "INBOX":
            return "INBOX"
        for candidate in (name, prefix + name):
            if candidate in by_name:
                return by_name[candidate]
        return None

    return lookup


def _read(store: SieveStore) -> tuple[list[SourceScript], dict[str, bytes], str | None]:
    listed = store.list_scripts()
    scripts = [SourceScript(name, store.get(name), active) for name, active in listed]
    return scripts, {s.name: s.content for s in scripts}, next((n for n, a in listed if a), None)


class SieveEngine:
    """Per account: :meth:`run` (migrate, or ``dry_run`` for plan) and :meth:`verify`."""

    def __init__(
        self,
        ledger: Ledger,
        addresses: Callable[[str], str | None],
        open_store: Callable[..., SieveStore] = SieveStore,
    ) -> None:
        self.ledger = ledger
        self.addresses = addresses
        self.open_store = open_store

    def _open(self, side: SieveSide, *, readonly: bool, label: str) -> SieveStore:
        return self.open_store(side.endpoint, side.login, readonly=readonly, label=label)

    def run(
        self, job: SieveJob, folders: Callable[[str], str | None], run_id: int, *, dry_run: bool = False
    ) -> SieveStats:
        stats = SieveStats(job.source_user, job.target_user)
        src = tgt = None
        try:
            src = self._open(job.source, readonly=True, label=f"{job.source_user} (source, ManageSieve)")
            tgt = self._open(job.target, readonly=dry_run, label=f"{job.target_user} (target, ManageSieve)")
            source, _, _ = _read(src)
            _, target, target_active = _read(tgt)
            rewritten = {s.name: rewrite_script(s.content, self.addresses, folders) for s in source}
            rows = self.ledger.settings(job.source_user, KIND)
            recorded = {k: r.value for k, r in rows.items() if r.state == "set" and k}
            was_active = rows[ACTIVE_KEY].value if ACTIVE_KEY in rows else None
            plan = plan_scripts(source, rewritten, target, target_active, recorded, was_active)
            self._carry(job, plan, tgt, run_id, stats, dry_run=dry_run)
        except MailferryError as e:
            stats.status = "failed"
            stats.error = e.message + (f" ({e.hint})" if e.hint else "")
            stats.exit_code = int(e.exit_code)
            self._finding(job, run_id, stats, "", "sieve-failed", stats.error, {}, dry_run=dry_run)
        finally:
            for store in (src, tgt):
                if store is not None:
                    with contextlib.suppress(Exception):
                        store.close()
        return stats

    def _finding(
        self,
        job: SieveJob,
        run_id: int,
        stats: SieveStats,
        script: str,
        kind: str,
        message: str,
        details: dict[str, Any],
        *,
        dry_run: bool,
        notice: bool = False,
    ) -> None:
        if not notice:
            stats.findings += 1
        if not dry_run:
            self.ledger.add_finding(
                run_id,
                Finding(job.source_user, "", None, kind, message, {"script": script, **details} if script else details),
            )

    def _carry(
        self, job: SieveJob, plan: SievePlan, tgt: SieveStore, run_id: int, stats: SieveStats, *, dry_run: bool
    ) -> None:
        who = job.source_user
        on_target: set[str] = set()
        for note in plan.notes:
            self._finding(job, run_id, stats, "", "sieve-kept", f"{who}: {note}", {}, dry_run=dry_run, notice=True)
        for a in plan.scripts:
            stats.scripts += 1
            r: Rewritten = a.rewritten
            row: dict[str, Any] = {"script": a.name, "action": a.action, "reason": a.reason, "diff": a.diff}
            stats.plan.append(row)
            for u in r.unmapped:
                self._finding(
                    job,
                    run_id,
                    stats,
                    a.name,
                    "sieve-folder-unmapped",
                    f"{who}: script {a.name!r} line {u.line}: {u.command} {u.value!r} names no folder of the "
                    "source account: carried as written; check that folder on the target",
                    {"folder": u.value, "line": u.line},
                    dry_run=dry_run,
                )
            if a.action == "kept":
                self._finding(
                    job,
                    run_id,
                    stats,
                    a.name,
                    "sieve-kept",
                    f"{who}: script {a.name!r} {a.reason}",
                    {},
                    dry_run=dry_run,
                    notice=True,
                )
                on_target.add(a.name)
                continue
            if a.action == "unchanged":
                stats.unchanged += 1
                on_target.add(a.name)
                if a.record and not dry_run:
                    self._record(job, a.name, a.digest, "set", run_id)
                continue
            words = self._check(tgt, a.content)
            if words is None and not dry_run:
                try:
                    tgt.put(a.name, a.content)
                except ScriptRefused as e:
                    words = e.words
            if words is not None:
                stats.refused += 1
                row["refused"] = words
                missing = sorted(set(r.requires) - tgt.extensions) if tgt.extensions else []
                self._finding(
                    job,
                    run_id,
                    stats,
                    a.name,
                    "sieve-refused",
                    f"{who}: the target refused script {a.name!r}: {words.strip()} — nothing written for it; "
                    "fix the script on the source (or enable the extension on the target) and run again",
                    {"server": words.strip(), "missing_extensions": missing},
                    dry_run=dry_run,
                )
                if not dry_run:
                    self._record(job, a.name, a.digest, "refused", run_id)
                continue
            stats.put += 1
            on_target.add(a.name)
            if r.error:
                self._finding(
                    job,
                    run_id,
                    stats,
                    a.name,
                    "sieve-not-rewritten",
                    f"{who}: script {a.name!r} was carried as written, without rewriting addresses and folders: "
                    f"mailferry could not read it ({r.error}); check it on the target",
                    {"error": r.error},
                    dry_run=dry_run,
                )
            if not dry_run:
                self._record(job, a.name, a.digest, "set", run_id)  # written, then recorded
        if plan.activate is not None and (plan.activate in on_target or dry_run):
            stats.activated += 1
            stats.plan.append({"script": plan.activate, "action": "activate", "reason": "active on the source"})
            if not dry_run:
                tgt.set_active(plan.activate)
                self._record(job, ACTIVE_KEY, plan.activate, "set", run_id)

    def _check(self, tgt: SieveStore, content: bytes) -> str | None:
        """The target's CHECKSCRIPT answer (None: accepted); without CHECKSCRIPT, PUTSCRIPT's."""
        try:
            return tgt.check(content)
        except NoCheckScript:
            return None

    def _record(self, job: SieveJob, key: str, value: str, state: str, run_id: int) -> None:
        self.ledger.record_setting(SettingRecord(job.source_user, KIND, key, value, job.target_user, state, run_id))

    def check(self, job: SieveJob) -> dict[str, Any]:
        """Both logins, each side's implementation, extensions and scripts, and the extensions
        the source's scripts require that the target lacks (a warning: migrate will report
        those scripts refused, in the target's words)."""
        out: dict[str, Any] = {"problems": [], "warnings": []}
        requires: set[str] = set()
        extensions: dict[str, frozenset[str]] = {}
        for role, side, user in (("source", job.source, job.source_user), ("target", job.target, job.target_user)):
            try:
                st = self._open(side, readonly=True, label=f"{user} ({role}, ManageSieve)")
            except MailferryError as e:
                out[role] = {"ok": False, "error": str(e)}
                out["problems"].append(str(e))
                out.setdefault("exit_code", int(e.exit_code))
                continue
            try:
                scripts = st.list_scripts()
                if role == "source":
                    for name, _ in scripts:
                        requires.update(x.lower() for x in _requires(st.get(name)))
                extensions[role] = st.extensions
                out[role] = {
                    "ok": True,
                    "implementation": st.implementation,
                    "extensions": sorted(st.extensions),
                    "scripts": len(scripts),
                    "active": next((n for n, a in scripts if a), None),
                }
            except MailferryError as e:
                out[role] = {"ok": False, "error": str(e)}
                out["problems"].append(str(e))
                out.setdefault("exit_code", int(e.exit_code))
            finally:
                st.close()
        if "target" in extensions:
            missing = sorted(requires - extensions["target"])
            out["missing_extensions"] = missing
            if missing:
                out["warnings"].append(
                    f"the source's scripts require Sieve extensions the target lacks: {', '.join(missing)}; "
                    "migrate reports each such script refused, with the target's words"
                )
        out.setdefault("exit_code", int(ExitCode.FINDINGS) if out["problems"] or out["warnings"] else 0)
        return out

    def verify(self, job: SieveJob, folders: Callable[[str], str | None]) -> dict[str, Any]:
        """Source scripts after rewriting against the target's, and which one is active."""
        src = tgt = None
        try:
            src = self._open(job.source, readonly=True, label=f"{job.source_user} (source, ManageSieve)")
            tgt = self._open(job.target, readonly=True, label=f"{job.target_user} (target, ManageSieve)")
            source, _, _ = _read(src)
            _, target, target_active = _read(tgt)
        except MailferryError as e:
            return {"clean": False, "error": str(e), "exit_code": int(e.exit_code), "differences": []}
        finally:
            for store in (src, tgt):
                if store is not None:
                    with contextlib.suppress(Exception):
                        store.close()
        rewritten = {s.name: rewrite_script(s.content, self.addresses, folders) for s in source}
        diffs = compare_scripts(source, rewritten, target, target_active)
        return {
            "clean": not diffs,
            "scripts": len(source),
            "exit_code": int(ExitCode.FINDINGS) if diffs else 0,
            "differences": [{"script": d.script, "what": d.what, "message": d.message} for d in diffs],
        }


__all__ = ["SieveEngine", "SieveJob", "SieveSide", "SieveStats", "account_folders", "digest", "folder_lookup"]


def account_folders(engine: Any, job: Any) -> Callable[[str], str | None]:
    """The folder lookup of one account from the mail engine's folder map (``engine``: a
    :class:`mailferry.engine.migrate.Engine`, ``job`` its AccountJob): the same rules and target
    listing that placed the account's mail. Reads only (a dry-run pass)."""
    from mailferry.engine.migrate import AccountRun, AccountStats

    run = AccountRun(engine, job, 0, AccountStats(job.source_user, job.target_user), dry_run=True)
    try:
        mappings = run.folder_map(run.source_folders())
        src = run.source_store()
        info = run.retry(src, src.info)
        return folder_lookup(mappings, info.namespace.prefix)
    finally:
        run.close()
