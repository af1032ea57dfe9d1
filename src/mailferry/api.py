"""The use cases: check, plan, migrate, verify, report. The CLI (and later a web console) call these.

Each takes a loaded :class:`~mailferry.config.model.Project` and returns plain data (dicts and
lists, JSON-ready) plus an exit code; none of them prints. Secrets are resolved here, just
before connecting, and never leave the :class:`~mailferry.connectors.imap.Login` objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailferry.config.model import AccountConfig, Project, PublicConfig, ServerConfig
from mailferry.connectors.imap import Endpoint, ImapStore, Login, server_greeting
from mailferry.connectors.wrappers import RetryPolicy
from mailferry.engine.alive import AliveReport, MailboxGuard, admin_connection, bring_alive, check_folder
from mailferry.engine.migrate import (
    AccountJob,
    AccountStats,
    Connection,
    Engine,
    Options,
    Reporter,
    Scope,
    scope_prefix,
)
from mailferry.engine.pacing import Pacing
from mailferry.engine.public import PUBLIC_UNIT, AfterFolders, after_folders, carry_per_user
from mailferry.engine.verify_run import verify_account
from mailferry.errors import ExitCode, MailferryError, UsageError
from mailferry.formats.folders import Rules
from mailferry.model.mail import Namespace
from mailferry.plan.keywords import COMMON_LIMIT as COMMON_KEYWORD_LIMIT
from mailferry.plan.planner import Adopt, Delete, Forget, Policy, Rebase, SetFlags, Skip
from mailferry.state.ledger import Finding, SqliteLedger

# The worse outcome wins when accounts end differently.
_SEVERITY = [
    ExitCode.OK,
    ExitCode.FINDINGS,
    ExitCode.SOURCE_CHANGED,
    ExitCode.TEMPFAIL,
    ExitCode.AUTH,
    ExitCode.CONFIG,
    ExitCode.INTERNAL,
]


def worst(codes: Sequence[int]) -> int:
    rank = {int(c): i for i, c in enumerate(_SEVERITY)}
    return max(codes, key=lambda c: rank.get(c, len(_SEVERITY)), default=0)


@dataclass(frozen=True, slots=True)
class Result:
    data: dict[str, Any]
    exit_code: int


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _endpoint(s: ServerConfig) -> Endpoint:
    return Endpoint(
        host=s.host,
        port=s.port,
        security=s.security,
        verify_certificates=s.verify_certificates,
        ca_file=str(s.ca_file) if s.ca_file else None,
        timeout=s.timeout,
    )


def _login(project: Project, server: ServerConfig, user: str, ref: Any) -> Login:
    if ref is not None:
        return Login(user=user, password=ref.resolve(project.base_dir))
    if server.admin is None:  # the loader refuses such a project; defensive
        raise MailferryError(f"{user}: no password reference and no admin login", hint="fix the project file")
    return Login(
        user=user,
        password=server.admin.password.resolve(project.base_dir),
        admin=server.admin.user,
        method=server.admin.method,
        master_separator=server.admin.master_separator,
    )


def select_accounts(project: Project, names: Sequence[str] | None) -> list[AccountConfig]:
    if not project.accounts:
        raise UsageError(
            "the project has no accounts yet",
            hint="write the accounts CSV, or run 'mailferry directory apply' to write it from the directories",
        )
    if not names:
        return list(project.accounts)
    by = {a.source_user: a for a in project.accounts}
    unknown = [n for n in names if n not in by]
    if unknown:
        raise UsageError(
            f"unknown account(s): {', '.join(unknown)}", hint="use source user names from the accounts CSV"
        )
    return [by[n] for n in names]


def jobs(project: Project, accounts: Sequence[AccountConfig]) -> list[AccountJob]:
    src, tgt = _endpoint(project.source), _endpoint(project.target)
    return [
        AccountJob(
            source_user=a.source_user,
            target_user=a.target_user,
            source=Connection(src, _login(project, project.source, a.source_user, a.source_password)),
            target=Connection(tgt, _login(project, project.target, a.target_user, a.target_password)),
            exclude_folders=a.exclude_folders,
        )
        for a in accounts
    ]


def public_job(project: Project) -> AccountJob | None:
    """The public folders' unit (:data:`PUBLIC_UNIT`) when the project moves them."""
    if "public" not in project.items:
        return None
    pc = project.public or PublicConfig()

    def login(server: ServerConfig, user: str | None, ref: Any) -> Login:
        if user is not None:
            return _login(project, server, user, ref)
        if server.admin is None:  # the loader refuses such a project; defensive
            raise MailferryError("public folders: no login", hint="set [public] source_user/target_user")
        return Login(user=server.admin.user, password=server.admin.password.resolve(project.base_dir))

    return AccountJob(
        source_user=PUBLIC_UNIT,
        target_user=PUBLIC_UNIT,
        source=Connection(_endpoint(project.source), login(project.source, pc.source_user, pc.source_password)),
        target=Connection(_endpoint(project.target), login(project.target, pc.target_user, pc.target_password)),
        scope=Scope(pc.source_prefix, pc.target_prefix),
    )


def _split_public(project: Project, names: Sequence[str] | None) -> tuple[list[AccountConfig], bool]:
    """The accounts a command names, and whether it covers the public unit too (no names, or
    "#public" among them)."""
    rest = [n for n in names or () if n != PUBLIC_UNIT]
    with_public = not names or PUBLIC_UNIT in names
    if names and not rest:
        return [], with_public
    return select_accounts(project, rest or None), with_public


def options(project: Project, *, full: bool = False, accounts_at_once: int = 1) -> Options:
    """Engine options. With several accounts at once, they share ``connections_per_account``
    writers (at least one each): the benchmark showed 8 accounts x 2 writers slower than 8 x 1,
    the target server's per-APPEND work being what everyone waits on."""
    f, m, p = project.folders, project.messages, project.performance
    writers = max(1, p.connections_per_account // max(1, accounts_at_once))

    def day(d: Any) -> datetime | None:
        return datetime(d.year, d.month, d.day, tzinfo=UTC) if d else None

    return Options(
        rules=Rules(
            include=f.include,
            exclude=f.exclude,
            rename=tuple((r.pattern, r.replacement) for r in f.renames),
            separator_substitute=f.separator_substitute,
        ),
        policy=Policy(
            since=day(m.since),
            before=day(m.before),
            min_size=m.min_size,
            max_size=m.max_size,
            propagate_deletions=m.propagate_deletions,
            sync_flags=m.sync_flags,
        ),
        subscriptions=f.subscriptions,
        connections_per_account=writers,
        batch_messages=p.batch_messages,
        batch_bytes=p.batch_bytes,
        retry=RetryPolicy(attempts=max(1, p.retries)),
        full=full,
    )


@contextlib.contextmanager
def _ledger_for_reading(project: Project) -> Iterator[SqliteLedger]:
    ledger = open_ledger(project, readonly=True)
    try:
        yield ledger
    finally:
        ledger.close()


def open_ledger(project: Project, *, readonly: bool = False) -> SqliteLedger:
    """The project's ledger: its SQLite file, or the PostgreSQL database of ``[project] ledger``."""
    if project.ledger_url is not None:
        from mailferry.state.pgledger import PostgresLedger

        password = project.ledger_password.resolve(project.base_dir) if project.ledger_password else None
        return PostgresLedger(project.ledger_url, password, readonly=readonly, label=_ledger_label(project))
    return SqliteLedger(project.ledger_path, readonly=readonly)


def _ledger_label(project: Project) -> str:
    """The PostgreSQL ledger as messages name it: its URL without user or password."""
    from urllib.parse import urlsplit

    parts = urlsplit(project.ledger_url or "")
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 5432}{parts.path}"


def ledger_exists(project: Project) -> bool:
    """Whether the project has a ledger yet (a PostgreSQL one always has)."""
    return project.ledger_url is not None or project.ledger_path.exists()


def parallel_accounts(project: Project) -> int:
    """Accounts at once, so that no server gets more than its ``max_connections``: each account
    holds one source connection and ``connections_per_account`` + 1 target connections."""
    p = project.performance
    per_account_target = p.connections_per_account + 1
    return max(
        1,
        min(
            p.accounts_in_parallel, project.source.max_connections, project.target.max_connections // per_account_target
        ),
    )


def _parallel(n: int, fn: Callable[[AccountJob], Any], items: Sequence[AccountJob]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="account") as pool:
        return list(pool.map(fn, items))


def _guard(
    project: Project,
    ledger: SqliteLedger,
    run_id: int = 0,
    *,
    record: bool = True,
    only: Sequence[AccountJob] | None = None,
) -> MailboxGuard:
    """The mailbox guard of the project's target accounts (all of them, not only those of this
    run: a collision recorded for one blocks the other in a run of only one). ``only``: the
    jobs of a pass over a few accounts (a distributed task's): the guard reads the ledger's rows
    of the ids they hold and looks up any other id as it meets it, not the whole organization's
    (600,000 rows at 30,000 accounts, in every task)."""
    accounts = {a.target_user for a in project.accounts} | {PUBLIC_UNIT}
    narrow = None
    if only is not None and len(only) * 4 < len(accounts):
        narrow = {j.target_user for j in only} | {PUBLIC_UNIT}
    return MailboxGuard.of(ledger, run_id, record=record, accounts=accounts, only=narrow)


def _bring_alive(
    project: Project, js: Sequence[AccountJob], guard: MailboxGuard, *, create: bool = True
) -> AliveReport:
    """Before any parallel login to the target: each account the guard doesn't know logs in
    alone, one after another, and the ids of its folders are settled (:mod:`mailferry.engine.alive`).
    ``create``: False for the commands that write nothing."""
    from mailferry.state.ledger import alive_lock

    if not js:
        return AliveReport()
    with alive_lock(project.ledger_path):
        return bring_alive(
            [(j.target_user, j.target) for j in js],
            guard,
            retry=RetryPolicy(attempts=max(1, project.performance.retries)),
            admin=admin_connection(js[0].target),
            create=create,
        )


def _held_back(job: AccountJob, guard: MailboxGuard, alive: AliveReport) -> MailferryError | None:
    """Why this account must not run (its target mailbox is shared, its first login failed, or
    it has no mailbox yet and this command creates none)."""
    if job.target_user in alive.missing:
        return MailferryError(
            f"{job.target_user} (target): no mailbox yet",
            hint="'mailferry migrate' creates it (the admin, one account at a time); nothing was created now",
        )
    return guard.blocked(job.target_user) or alive.failed.get(job.target_user)


def _target_risks(alive: AliveReport) -> list[str]:
    out: list[str] = []
    if alive.server == "Cyrus IMAP" or alive.autocreated:
        seen = f" ({len(alive.autocreated)} accounts of this project so far)" if alive.autocreated else ""
        out.append(
            f"the target ({alive.server or 'this server'}) creates an account's mailbox at its first login{seen}, "
            "and several accounts can end up in one mailbox (seen with Cyrus IMAP 3.6): mailferry creates missing "
            "mailboxes through the admin's one connection, brings accounts alive one at a time before any parallel "
            "work, and refuses to write into a mailbox whose id another account holds"
        )
    if alive.no_ids:
        out.append(
            "the target names no mailbox id (neither RFC 8474 OBJECTID nor X-GUID): mailferry can't prove that "
            "no two accounts share one mailbox"
        )
    return out


# -- check --------------------------------------------------------------------------------------

CAPS_THAT_MATTER = (
    "UIDPLUS",
    "MULTIAPPEND",
    "LITERAL+",
    "CONDSTORE",
    "QRESYNC",
    "SPECIAL-USE",
    "NAMESPACE",
    "UTF8=ACCEPT",
    "QUOTA",
    "APPENDLIMIT",
    "ACL",  # folder permissions (item type "permissions") are carried where both sides have it
    "METADATA",  # folder comments (item type "metadata") likewise
)


def _caps(caps: frozenset[str]) -> dict[str, bool]:
    return {c: any(x == c or x.startswith(c + "=") for x in caps) for c in CAPS_THAT_MATTER}


def check(project: Project, names: Sequence[str] | None = None) -> Result:
    # Imported here: migrate, the command run again and again, doesn't pay for the blockers.
    from mailferry.engine import readiness
    from mailferry.engine.blockers import folder_tally
    from mailferry.model.readiness import READINESS_AREAS, status_of, summary, verdict
    from mailferry.model.readiness import exit_code as readiness_exit_code
    from mailferry.verify.blockers import size_threshold

    accs, with_public = _split_public(project, names)
    js = jobs(project, accs)
    pj = public_job(project) if with_public else None
    ledger = open_ledger(project, readonly=True)
    try:
        guard = _guard(project, ledger, record=False)
    finally:
        ledger.close()
    if "mail" not in project.items:
        js = []  # a project of calendars and contacts only: the IMAP servers are left alone
    alive = _bring_alive(project, js, guard, create=False)
    if not alive.server and js:
        alive.server = ImapStore.product(server_greeting(js[0].target.endpoint))
    js += [pj] if pj is not None else []
    seen: dict[str, dict[str, Any]] = {}  # what the blockers area needs of each account, read once

    def one(job: AccountJob) -> dict[str, Any]:
        out: dict[str, Any] = {
            "account": job.source_user,
            "target_account": job.target_user,
            "problems": [],
            "warnings": [],
        }
        # The target first: its APPENDLIMIT says which message sizes the source side must name.
        for role, conn, readonly in (("target", job.target, False), ("source", job.source, True)):
            if role == "target" and job.target_user in alive.missing:
                out[role] = {"ok": False, "error": f"{job.target_user} has no mailbox yet on the target"}
                out["warnings"].append(
                    f"{job.target_user} has no mailbox yet on the target: migrate creates it (the admin, one account "
                    "at a time)"
                )
                continue
            held = _held_back(job, guard, alive) if role == "target" else None
            if held is not None:
                out[role] = {"ok": False, "error": str(held)}
                out["problems"].append(str(held))
                out.setdefault("exit_code", int(held.exit_code))
                continue
            try:
                st = ImapStore(conn.endpoint, conn.login, readonly=readonly, label=f"{job.source_user} ({role})")
            except MailferryError as e:
                out[role] = {"ok": False, "error": str(e)}
                out["problems"].append(str(e))
                out.setdefault("exit_code", int(e.exit_code))
                continue
            try:
                if role == "target" and job.scope is None:
                    check_folder(guard, job.target_user, "INBOX", st.mailbox_id)
                info = st.info()
                folders = st.own_folders()  # what migrate copies for the account: not public folders
                if job.scope is not None:  # the public unit: its shared namespace
                    wanted = job.scope.source_prefix if role == "source" else job.scope.target_prefix
                    prefix, delim = scope_prefix(st.namespaces(), wanted, role, job.source_user)
                    info.namespace = Namespace(prefix, delim)
                    folders = st.folders_under(prefix)
                side: dict[str, Any] = {
                    "ok": True,
                    "tls": conn.endpoint.security,
                    "capabilities": _caps(info.capabilities),
                    "namespace": {"prefix": info.namespace.prefix, "separator": info.namespace.delimiter},
                    "folders": len(folders),
                    "appendlimit": info.appendlimit,
                    "quota_used_kb": info.quota_used_kb,
                    "quota_limit_kb": info.quota_limit_kb,
                }
                if role == "source":
                    # Per folder what the blockers judge: messages, bytes, the sizes over the
                    # target's limit or [messages] max_size, the keywords; the account's totals.
                    threshold = size_threshold(out.get("target", {}).get("appendlimit"), project.messages.max_size)
                    by_folder = {f.name: folder_tally(st, f.name, threshold) for f in folders if f.selectable}
                    side.update(
                        messages=sum(x.messages for x in by_folder.values()),
                        bytes=sum(x.bytes for x in by_folder.values()),
                    )
                    out["_sizes"] = [x for t in by_folder.values() for x in t.large]
                    out["_by_folder"] = by_folder
                    out["_keywords"] = set().union(*(t.keywords for t in by_folder.values()))
                elif job.scope is None:
                    side["permanent_flags"] = list(st.storable("INBOX") or ())
                out[role] = side
            except MailferryError as e:
                out[role] = {"ok": False, "error": str(e)}
                out["problems"].append(str(e))
                out.setdefault("exit_code", int(e.exit_code))
            finally:
                st.close()
        s, t = out.get("source", {}), out.get("target", {})
        if s.get("ok") and t.get("ok"):
            limit = t.get("appendlimit")
            if limit:
                over = [x for x in out["_sizes"] if x > limit]
                if over:
                    out["warnings"].append(f"{len(over)} messages are larger than the target's APPENDLIMIT {limit}")
            if t.get("quota_limit_kb") is not None:
                free_kb = t["quota_limit_kb"] - (t.get("quota_used_kb") or 0)
                if s["bytes"] / 1024 > free_kb:
                    out["warnings"].append(
                        f"the source holds {s['bytes'] // 1024} KiB, the target quota leaves {free_kb} KiB"
                    )
            perm = {p.lower() for p in t.get("permanent_flags", [])}
            if perm and "\\*" not in perm:
                lost = sorted(k for k in out["_keywords"] if k.lower() not in perm)
                if lost:
                    out["warnings"].append(f"keywords the target can't store: {', '.join(lost)}")
            else:  # any keyword, as far as the target says: but a length limit is not announced
                long = sorted(k for k in out["_keywords"] if len(k.encode()) > COMMON_KEYWORD_LIMIT)
                if long:
                    out["warnings"].append(
                        f"keywords longer than {COMMON_KEYWORD_LIMIT} bytes, which the target may refuse (Dovecot "
                        f"does by default): {', '.join(long)}; migrate keeps those messages without the keywords "
                        "the target refuses and names each"
                    )
            for cap in ("UIDPLUS", "MULTIAPPEND"):
                if not t["capabilities"][cap]:
                    out["warnings"].append(f"the target lacks {cap}: slower and less exact bookkeeping")
        out.pop("_sizes", None)
        out.pop("_keywords", None)
        seen[job.source_user] = {"by_folder": out.pop("_by_folder", None), "source": s, "target": t}
        out["ready"] = not out["problems"]
        out.setdefault("exit_code", int(ExitCode.FINDINGS) if out["problems"] or out["warnings"] else 0)
        return out

    rows = _parallel(project.performance.accounts_in_parallel, one, js) or [
        _no_mail(a, ready=True, problems=[], warnings=[], source={"skipped": _NO_MAIL}, target={"skipped": _NO_MAIL})
        for a in accs
    ]
    _attach(rows, _dav_rows(project, accs, _dav_check))
    if "filters" in project.items:
        with _ledger_for_reading(project) as ro:
            _attach_filters(rows, _sieve(project, ro, accs, "check"))
    org = readiness.org_checks(project, accs, readiness.Context(seen=seen))
    for r in rows:  # an account is ready only when every part it moves is (its DAV and ManageSieve logins too)
        if r.get("ready") and any(r.get(part, {}).get("problems") for part in ("calendars", "filters")):
            r["ready"] = False
        mine = [c for c in org if c.account == r["account"]]
        r["blockers"] = [c.as_dict() for c in mine]
        if any(c.status == "blocked" for c in mine):
            r["ready"] = False
        warned = r["warnings"] or any(r.get(part, {}).get("warnings") for part in ("calendars", "filters"))
        r["verdict"] = verdict(
            ["blocked" if not r["ready"] else "warning" if warned else "ok"] + [c.status for c in mine]
        )
        if r["ready"]:  # warnings alone don't hold a migration back: exit code 0 (they are in the report)
            r["exit_code"] = 0
        elif not r["exit_code"]:
            r["exit_code"] = readiness_exit_code(mine)
    code = worst([r["exit_code"] for r in rows] + [readiness_exit_code([c for c in org if not c.account])])
    target = alive.as_dict()
    target["collisions"] = [c.as_dict() for c in guard.collisions]
    target["risks"] = _target_risks(alive)
    areas = summary(org, READINESS_AREAS)
    overall = verdict([status_of(areas["verdict"])] + [status_of(r["verdict"]) for r in rows])
    data = {"command": "check", "verdict": overall, "areas": areas["areas"], "accounts": rows, "target": target}
    data["exit_code"] = code
    return Result(data, code)


# -- plan ---------------------------------------------------------------------------------------


def plan(project: Project, names: Sequence[str] | None = None) -> Result:
    accs, with_public = _split_public(project, names)
    ledger = open_ledger(project, readonly=True)
    try:
        guard = _guard(project, ledger, record=False)
        js = jobs(project, accs) if "mail" in project.items else []
        alive = _bring_alive(project, js, guard, create=False)
        pj = public_job(project) if with_public else None
        js += [pj] if pj is not None else []
        engine = Engine(ledger, options(project), guard=guard)
        settings = _settings_engines(project, ledger, project.items)

        def one(job: AccountJob) -> dict[str, Any]:
            held = _held_back(job, guard, alive)
            if held is not None:
                return _error_row(job, held)
            try:
                plans, _ = engine.plan_account(job)
            except MailferryError as e:
                return _error_row(job, e)
            folders = []
            for p in plans:
                skips = [
                    {
                        "source_uid": a.meta.uid,
                        "message_id": a.meta.message_id,
                        "subject": a.meta.subject,
                        "size": a.meta.size,
                        "reason": a.reason,
                        "finding": a.finding,
                    }
                    for a in p.actions
                    if isinstance(a, Skip)
                ]
                folders.append(
                    {
                        "source_folder": p.source_folder,
                        "target_folder": p.target_folder,
                        "rule": p.rule,
                        "notes": p.notes,
                        "copy": len(p.copies),
                        "bytes": p.bytes_to_copy,
                        "already_on_target": sum(1 for a in p.actions if isinstance(a, Adopt)),
                        "flag_updates": sum(1 for a in p.actions if isinstance(a, SetFlags)),
                        "deletions": sum(1 for a in p.actions if isinstance(a, Delete)),
                        "rematch": sum(1 for a in p.actions if isinstance(a, Rebase)),
                        "interrupted_to_recopy": sum(1 for a in p.actions if isinstance(a, Forget)),
                        "skips": skips,
                    }
                )
            findings = any(isinstance(a, Skip) and a.finding for p in plans for a in p.actions)
            row: dict[str, Any] = {
                "account": job.source_user,
                "target_account": job.target_user,
                "exit_code": int(ExitCode.FINDINGS) if findings else 0,
                "messages": sum(f["copy"] for f in folders),
                "bytes": sum(f["bytes"] for f in folders),
                "folders": folders,
            }
            mapped = {p.source_folder: p.target_folder for p in plans}
            for kind, eng in _folder_settings(settings, job).items():
                row[kind] = _settings_row(job, functools.partial(eng.plan, job, mapped))
                row["exit_code"] = worst([row["exit_code"], row[kind]["exit_code"]])
            return row

        rows = _parallel(project.performance.accounts_in_parallel, one, js) or [
            _no_mail(a, messages=0, bytes=0, folders=[]) for a in accs
        ]
    finally:
        ledger.close()
    _attach(rows, _dav_rows(project, accs, _dav_plan))
    if "filters" in project.items:
        with _ledger_for_reading(project) as ro:
            _attach_filters(rows, _sieve(project, ro, accs, "plan"))
    code = worst([r["exit_code"] for r in rows])
    data = {"command": "plan", "accounts": rows, "copy": sum(r.get("messages", 0) for r in rows), "exit_code": code}
    return Result(data, code)


# -- migrate ------------------------------------------------------------------------------------


def migrate(
    project: Project,
    names: Sequence[str] | None = None,
    *,
    reporter: Reporter | None = None,
    full: bool = False,
    only: Sequence[str] | None = None,
    after_public: Sequence[AfterFolders] = (),
    distributed: bool = False,
) -> Result:
    """Mail, then the public folders' unit, then calendars and contacts, of each account
    (``only`` narrows to some item types). ``after_public``: steps that need the public folders
    on the target (their ACLs), run after the unit's pass. ``distributed``: each account is a
    task for the project's Celery workers (:mod:`mailferry.distributed`), this process follows."""
    accs, with_public = _split_public(project, names)
    types = _types(project, only)
    # The secrets, before any change: a missing one fails here.
    jobs(project, accs)
    if _dav_types(project, types):
        _dav_jobs(project, accs)
    if "filters" in types:
        _sieve_jobs(project, accs)
    ledger = open_ledger(project)
    try:
        ledger.acquire("migrate")
        run_id = ledger.start_run("migrate", _now())
        t0 = time.monotonic()
        if distributed:
            from mailferry.distributed.batch import run_batch

            rows, alive = run_batch(
                project, ledger, run_id, accs, with_public, types=types, full=full, reporter=reporter
            )
        else:
            rows, alive = migrate_units(
                project, ledger, run_id, names, reporter=reporter, full=full, types=types, after_public=after_public
            )
        summary = _migrate_summary(project, ledger, run_id, types, rows, alive, time.monotonic() - t0)
        code = summary["exit_code"]
        ledger.finish_run(run_id, _now(), code, {k: v for k, v in summary.items() if k != "findings"})
        _write_report(project, f"migrate-{run_id}", summary)
        return Result(summary, code)
    finally:
        ledger.close()


def migrate_units(
    project: Project,
    ledger: SqliteLedger,
    run_id: int,
    names: Sequence[str] | None,
    *,
    reporter: Reporter | None = None,
    full: bool = False,
    types: Sequence[str],
    after_public: Sequence[AfterFolders] = (),
    pacing: Pacing | None = None,
    sharing: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One pass of run ``run_id`` over the named accounts (and the public unit, see
    :func:`_split_public`): each account's row, as ``migrate --json`` shows it, and what bringing
    the target accounts alive found. The unit a local run and a distributed worker's task both
    run; the caller holds the run lock (or the account's lock) and finishes the run. ``sharing``:
    how many accounts run at once beside these ones (a worker's other tasks), who share the
    ``connections_per_account`` writers as a local run's accounts do. ``pacing``: the cluster's
    limits (a distributed worker's), see :mod:`mailferry.engine.pacing`."""
    accs, with_public = _split_public(project, names)
    types = tuple(types)
    js = jobs(project, accs)
    pj = public_job(project) if with_public and "public" in types else None
    if pj is not None and pj.scope is not None and "permissions" in types:
        pj = dataclasses.replace(pj, scope=dataclasses.replace(pj.scope, carry_acl=True))
    pc = project.public or PublicConfig()
    # The accounts whose \Seen on, and subscriptions to, public folders are carried: this run's,
    # or every account's in a run of the public unit alone.
    users = js if js or pj is None else jobs(project, project.accounts)
    dav_types = _dav_types(project, types)
    guard = _guard(project, ledger, run_id, only=users if pj is None else None)
    # One at a time, before any parallel login; also what Cyrus needs before its DAV answers
    # for an account. A project that moves no mail leaves the IMAP servers alone.
    alive = _bring_alive(project, users if "mail" in project.items or pj is not None else [], guard)
    held = {j.source_user: h for j in users if (h := _held_back(j, guard, alive)) is not None}
    runnable = [j for j in js if j.source_user not in held]
    at_once = max(1, min(parallel_accounts(project), len(runnable)))
    opts = options(project, full=full, accounts_at_once=sharing or at_once)
    if pacing is not None:
        opts = dataclasses.replace(opts, pace=pacing.pace_mail, throttled=pacing.mail_throttled)
    engine = Engine(ledger, opts, reporter, guard=guard)
    if "mail" in types:
        done = {s.account: s for s in _parallel(at_once, lambda j: engine.migrate_account(j, run_id), runnable)}
    else:
        done = {j.source_user: AccountStats(j.source_user, j.target_user, status="skipped") for j in runnable}
    for j in js:
        if j.source_user in held:
            done[j.source_user] = engine.refuse_account(j, run_id, held[j.source_user])
    stats: list[AccountStats] = [done[j.source_user] for j in js]
    # Folder settings (ACLs, METADATA) of each account whose mail pass did not fail.
    settings: dict[str, dict[str, dict[str, Any]]] = {}
    carry = [j for j in runnable if done[j.source_user].status != "failed"]
    for kind, eng in _settings_engines(project, ledger, types).items():

        def carry_one(j: AccountJob, e: Any = eng) -> dict[str, Any]:
            return _settings_row(j, functools.partial(e.run, j, run_id))

        got = _parallel(at_once, carry_one, carry)
        settings[kind] = {j.source_user: r for j, r in zip(carry, got, strict=True)}
    public_row: dict[str, Any] | None = None
    if pj is not None:
        ps = engine.migrate_account(pj, run_id)
        stats.append(ps)
        public_row = _account_row(ps)
        if ps.status == "ok":
            public_settings: dict[str, dict[str, Any]] = {}
            steps = list(after_public)
            for kind, eng in _settings_engines(project, ledger, types).items():
                if kind == "permissions":  # the public folders' ACLs, translated like an account's

                    def acl_step(job: AccountJob, fmap: Mapping[str, str], rid: int, e: Any = eng) -> None:
                        public_settings["permissions"] = _settings_row(
                            job, functools.partial(e.run, job, rid, folders=fmap)
                        )

                    steps.append(acl_step)
            after_folders(engine, pj, run_id, steps)
            for kind, row in public_settings.items():
                public_row[kind] = row
                public_row["exit_code"] = worst([public_row["exit_code"], row["exit_code"]])
            per_user = carry_per_user(
                engine,
                PUBLIC_UNIT,
                [j for j in users if j.source_user not in held],
                run_id,
                seen=pc.per_user_seen,
                subscriptions=pc.subscriptions and project.folders.subscriptions,
            )
            public_row["public"] = per_user.as_dict()
            if per_user.findings:
                public_row["exit_code"] = worst([public_row["exit_code"], int(ExitCode.FINDINGS)])
    dav: dict[str, dict[str, Any]] = {}
    if dav_types:
        with pacing.dav_connections() if pacing is not None else contextlib.nullcontext():
            dav = _dav_migrate(
                project,
                ledger,
                run_id,
                dav_types,
                accs,
                full=full,
                reporter=reporter,
                skip=held,
                pacing=pacing,
                sharing=sharing,
            )
    rows = [public_row if s.account == PUBLIC_UNIT and public_row is not None else _account_row(s) for s in stats]
    rows = [r | ({"calendars": dav[r["account"]]} if r["account"] in dav else {}) for r in rows]
    for r in rows:
        if "calendars" in r:
            r["exit_code"] = worst([r["exit_code"], dav_exit_code(r["calendars"])])
        for kind, per in settings.items():
            if r["account"] in per:
                r[kind] = per[r["account"]]
                r["exit_code"] = worst([r["exit_code"], r[kind]["exit_code"]])
    if "filters" in types:  # after mail: scripts name the folders the mail went to
        # Not for an account held back or whose mail pass failed (a shared target mailbox,
        # a lost connection): its folders may not be there, its target may be another's.
        failed = {s.account for s in stats if s.status == "failed"}
        _attach_filters(
            rows, _sieve(project, ledger, [a for a in accs if a.source_user not in failed], "migrate", run_id)
        )
    return rows, alive.as_dict()


def bring_targets_alive(project: Project, ledger: SqliteLedger, run_id: int, names: Sequence[str]) -> dict[str, Any]:
    """What :func:`migrate_units` does first, for all of a distributed run's accounts at once
    in the admin's process: each target account the guard doesn't know logs in alone."""
    accs, with_public = _split_public(project, names)
    js = jobs(project, accs)
    pj = public_job(project) if with_public and "public" in project.items else None
    users = js if js or pj is None else jobs(project, project.accounts)
    guard = _guard(project, ledger, run_id)
    return _bring_alive(project, users if "mail" in project.items or pj is not None else [], guard).as_dict()


def _migrate_summary(
    project: Project,
    ledger: SqliteLedger,
    run_id: int,
    types: Sequence[str],
    rows: list[dict[str, Any]],
    alive: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """``migrate --json`` of a run from its accounts' rows (a local pass's or the workers')."""
    code = worst([r["exit_code"] for r in rows])
    summary: dict[str, Any] = {
        "command": "migrate",
        "run": run_id,
        "items": list(types),
        "seconds": round(seconds, 3),
        **{k: sum(int(r.get(k, 0) or 0) for r in rows) for k in _COUNTERS},
        "accounts": rows,
        "target": alive,
        "findings": [_finding(f) for f in ledger.findings(run_id)],
        "exit_code": code,
    }
    accounts = [r for r in rows if r["account"] != PUBLIC_UNIT]
    for kind in ("permissions", "metadata"):
        per = [r[kind] for r in accounts if isinstance(r.get(kind), dict)]
        if kind in types:
            gone = "deleted" if kind == "permissions" else "removed"
            summary[kind] = {k: sum(int(p.get(k, 0)) for p in per) for k in ("set", gone, "refused", "findings")}
    if _dav_types(project, types):
        dav = [r["calendars"] for r in rows if isinstance(r.get("calendars"), dict)]
        summary["calendars"] = {
            k: sum(int(d.get(k, 0)) for d in dav)
            for k in ("copied", "updated", "matched", "removed", "refused", "rewritten", "marked", "shares")
        }
    return summary


_COUNTERS = ("copied", "bytes", "matched", "skipped", "refused", "flag_updates", "deleted")


def ledger_export(project: Project, to: Path) -> Result:
    """The project's ledger copied into a new SQLite file ``to``."""
    if to.exists():
        raise UsageError(f"--to: {to} exists already", hint="name a new file")
    src = open_ledger(project, readonly=True)
    try:
        dst = SqliteLedger(to)
        try:
            counts = dst.load(src.dump())
        finally:
            dst.close()
    finally:
        src.close()
    return Result({"command": "ledger export", "to": str(to), "rows": counts, "exit_code": 0}, 0)


def ledger_import(project: Project, source: Path) -> Result:
    """A SQLite ledger file copied into the project's (empty) ledger, under the run lock."""
    if not source.exists():
        raise UsageError(f"--from: no file {source}", hint="name the SQLite ledger to import")
    src = SqliteLedger(source, readonly=True)
    dst = open_ledger(project)
    try:
        dst.acquire("ledger import")
        counts = dst.load(src.dump())
    finally:
        dst.close()
        src.close()
    return Result({"command": "ledger import", "from": str(source), "rows": counts, "exit_code": 0}, 0)


def _types(project: Project, only: Sequence[str] | None) -> tuple[str, ...]:
    """The item types of this run: the project's, narrowed by ``--only``."""
    if not only:
        return project.items
    from mailferry.model.items import ITEM_TYPES

    unknown = [t for t in only if t not in ITEM_TYPES]
    if unknown:
        raise UsageError(f"--only: unknown item type {unknown[0]!r}", hint=f"use {', '.join(ITEM_TYPES)}")
    missing = [t for t in only if t not in project.items]
    if missing:
        raise UsageError(
            f"--only {', '.join(missing)}: the project does not move {', '.join(missing)}",
            hint="see [project] items and the [source.dav]/[target.dav] tables",
        )
    return tuple(t for t in project.items if t in only)


def account_exit_code(s: AccountStats) -> int:
    """One account's own outcome by the exit-code table: its error, else source changed, else
    findings, else clean."""
    if s.exit_code:
        return s.exit_code
    if s.source_changed:
        return int(ExitCode.SOURCE_CHANGED)
    # Clean only when nothing the target refused is left (outstanding refusals from earlier runs too).
    return int(ExitCode.FINDINGS) if s.findings or s.outstanding else 0


def _account_row(s: AccountStats) -> dict[str, Any]:
    row = s.as_dict()
    row["target_account"] = row.pop("target_user")
    row["exit_code"] = account_exit_code(s)
    return row


def _error_row(job: AccountJob, e: MailferryError) -> dict[str, Any]:
    return {
        "account": job.source_user,
        "target_account": job.target_user,
        "error": str(e),
        "exit_code": int(e.exit_code),
    }


def _outstanding(o: dict[str, Any]) -> dict[str, Any]:
    """A refused message the target still lacks, in the contract's names."""
    d = o.get("details") or {}
    return {
        "run": o["run"],
        "account": o["account"],
        "kind": o["kind"],
        "source_folder": o["folder"],
        "source_uid": o["uid"],
        "uidvalidity": o["uidvalidity"],
        "message_id": d.get("message_id"),
        "size": o["size"],
        "target_folder": o["target_folder"],
        "message": o["message"],
        "details": d,
    }


def _finding(f: Any) -> dict[str, Any]:
    """A finding as every --json output shows it (see the README's "JSON output")."""
    d = f.details or {}
    return {
        "run": f.run,
        "account": f.account,
        "kind": f.kind,
        "source_folder": f.folder or None,
        "source_uid": f.uid,
        "message_id": d.get("message_id"),
        "message": f.message,
        "details": d,
    }


def _write_report(project: Project, name: str, data: dict[str, Any]) -> None:
    import json
    import os

    project.reports_dir.mkdir(parents=True, exist_ok=True)
    path = project.reports_dir / f"{name}.json"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)


# -- verify -------------------------------------------------------------------------------------


def verify(project: Project, names: Sequence[str] | None = None, *, deep: bool = False) -> Result:
    accs, with_public = _split_public(project, names)
    ledger = open_ledger(project, readonly=True)
    try:
        guard = _guard(project, ledger, record=False)
        js = jobs(project, accs) if "mail" in project.items else []
        alive = _bring_alive(project, js, guard, create=False)
        pj = public_job(project) if with_public else None
        js += [pj] if pj is not None else []
        engine = Engine(ledger, options(project), guard=guard)
        settings = _settings_engines(project, ledger, project.items)

        def one(job: AccountJob) -> dict[str, Any]:
            held = _held_back(job, guard, alive)
            if held is not None:
                return _error_row(job, held) | {"clean": False}
            try:
                verdicts = verify_account(engine, job, deep=deep)
            except MailferryError as e:
                return _error_row(job, e) | {"clean": False}
            clean = all(v.clean for v in verdicts)
            extra = {kind: _settings_verify_row(eng, job) for kind, eng in _folder_settings(settings, job).items()}
            clean = clean and all(bool(x["clean"]) for x in extra.values())
            return extra | {
                "account": job.source_user,
                "target_account": job.target_user,
                "clean": clean,
                "exit_code": 0 if clean else int(ExitCode.FINDINGS),
                "folders": [
                    {
                        "source_folder": v.folder,
                        "target_folder": v.target_folder,
                        "source_messages": v.source_messages,
                        "target_messages": v.target_messages,
                        "source_bytes": v.source_bytes,
                        "target_bytes": v.target_bytes,
                        "excluded": v.excluded,
                        "clean": v.clean,
                        "discrepancies": [d.as_dict() for d in v.discrepancies],
                    }
                    for v in verdicts
                ],
            }

        rows = _parallel(project.performance.accounts_in_parallel, one, js) or [
            _no_mail(a, clean=True, folders=[]) for a in accs
        ]
    finally:
        ledger.close()
    _attach(rows, _dav_rows(project, accs, _dav_verify(deep)))
    for r in rows:
        if "calendars" in r:
            r["clean"] = r["clean"] and bool(r["calendars"].get("clean"))
    if "filters" in project.items:
        with _ledger_for_reading(project) as ro:
            _attach_filters(rows, _sieve(project, ro, accs, "verify"))
    code = worst([r["exit_code"] for r in rows])
    data = {
        "command": "verify",
        "deep": deep,
        "clean": all(r["clean"] for r in rows),
        "accounts": rows,
        "exit_code": code,
    }
    _write_report(project, "verify-deep" if deep else "verify", data)
    return Result(data, code)


# -- folder settings: permissions (IMAP ACL) and METADATA -------------------------------------------


def _settings_engines(project: Project, ledger: SqliteLedger, types: Sequence[str]) -> dict[str, Any]:
    """The engines of the folder settings among ``types``, by item type. ACL users through the
    project's accounts, then the directory's identity map (as calendar sharing does); groups
    keep their names unless ``[permissions.groups]`` renames them."""
    from mailferry.engine.acl import AclEngine
    from mailferry.engine.metadata import MetadataEngine
    from mailferry.plan.principals import principal_map

    out: dict[str, Any] = {}
    retry = options(project).retry
    if "permissions" in types:
        principals = principal_map([(a.source_user, a.target_user) for a in project.accounts], ledger.identity())
        groups = dict(project.acl_groups)
        out["permissions"] = AclEngine(ledger, principals=principals, groups=lambda g: groups.get(g, g), retry=retry)
    if "metadata" in types:
        out["metadata"] = MetadataEngine(ledger, retry=retry)
    return out


def _folder_settings(settings: dict[str, Any], job: AccountJob) -> dict[str, Any]:
    """The folder settings a job plans and verifies: all of an account's; of the public unit
    (a job with a scope) its ACLs only (as migrate carries them, see ``after_public``)."""
    return settings if job.scope is None else {k: v for k, v in settings.items() if k == "permissions"}


def _settings_row(job: AccountJob, fn: Callable[[], Any]) -> dict[str, Any]:
    """One account's part for a folder setting: what was (or would be) done, or its error."""
    from mailferry.engine.acl import AclStats, acl_actions

    try:
        stats = fn()
    except MailferryError as e:
        return {"error": str(e), "exit_code": int(e.exit_code)}
    row: dict[str, Any] = stats.as_dict()
    if isinstance(stats, AclStats):
        row |= acl_actions(stats.actions)
    return row | {"exit_code": int(ExitCode.FINDINGS) if stats.findings else 0}


def _settings_verify_row(engine: Any, job: AccountJob) -> dict[str, Any]:
    try:
        diffs, note = engine.verify(job)
    except MailferryError as e:
        return {"clean": False, "error": str(e), "differences": []}
    return {"clean": not diffs, "note": note, "differences": [d.as_dict() for d in diffs]}


# -- report -------------------------------------------------------------------------------------


def report(project: Project, run: int | None = None) -> Result:
    empty = {
        "command": "report",
        "runs": [],
        "accounts": [],
        "findings": [],
        "outstanding": [],
        "ledger": {},
        "exit_code": 0,
    }
    if not ledger_exists(project):
        return Result(empty, 0)
    ledger = open_ledger(project, readonly=True)
    try:
        runs = [{"run": r.pop("id"), **r} for r in ledger.runs() if run is None or r["id"] == run]
        per_account = [
            {"run": a.pop("run_id"), "account": a.pop("account"), "target_account": a.pop("target_user"), **a}
            for a in ledger.account_runs(run)
        ]
        findings = [_finding(f) for f in ledger.findings(run)]
        # Not per run: what the target refused and still lacks, each once, with the run that last
        # tried it; a message leaves this list when a later pass copies it.
        outstanding = [_outstanding(o) for o in ledger.outstanding()]
        return Result(
            empty
            | {
                "runs": runs,
                "accounts": per_account,
                "findings": findings,
                "outstanding": outstanding,
                "ledger": ledger.counts(),
                "calendars_outstanding": ledger.dav_outstanding(),
                "calendars_ledger": ledger.dav_counts(),
                "approvals": ledger.approvals(),
            },
            0,
        )
    finally:
        ledger.close()


# -- directory ----------------------------------------------------------------------------------


def _directory(project: Project) -> Any:
    if project.directory is None:
        raise UsageError("the project has no [directory] section", hint="add one: see 'mailferry init' and the README")
    return project.directory


def directory_job(project: Project, *, confirm: bool = True) -> Any:
    from mailferry.connectors.ldap import DEFAULT_ATTRIBUTES, DirectoryOptions, LdapEndpoint
    from mailferry.engine.directory import DirectoryJob, DirectorySide

    d = _directory(project)

    def side(s: Any, lock: Mapping[str, str]) -> DirectorySide:
        return DirectorySide(
            endpoint=LdapEndpoint(
                host=s.host,
                port=s.port,
                security=s.security,
                verify_certificates=s.verify_certificates,
                ca_file=str(s.ca_file) if s.ca_file else None,
                tls_server_name=s.tls_server_name,
                timeout=s.timeout,
            ),
            bind_dn=s.bind_dn,
            password=s.password.resolve(project.base_dir),
            options=DirectoryOptions(
                dialect=s.dialect,
                bases=s.bases,
                filter=s.filter,
                page_size=s.page_size,
                attributes=dict(s.attributes),
                custom_attribute=d.custom_attribute,
                lock=lock,
            ),
        )

    t_attrs = {**DEFAULT_ATTRIBUTES[d.target.dialect], **dict(d.target.attributes)}
    imap_endpoint = imap_admin = None
    if confirm and d.confirm_mailboxes and project.target.admin is not None:
        imap_endpoint = _endpoint(project.target)
        imap_admin = _login(project, project.target, "", None)
    return DirectoryJob(
        source=side(d.source, {}),
        target=side(d.target, dict(d.lock)),
        target_container=d.target_container,
        rules=d.rules,
        include_contacts=d.include_contacts,
        include_groups=d.include_groups,
        keep_old_addresses=d.keep_old_addresses,
        create=dict(d.create),
        mail_attributes=dict(d.mail_attributes),
        lock=dict(d.lock),
        alias_attribute=t_attrs.get("alias", "mailAlternateAddress"),
        imap_endpoint=imap_endpoint,
        imap_admin=imap_admin,
        resolutions=dict(d.resolve),
        upn_suffix=d.upn_suffix,
    )


def directory_discover(project: Project) -> Result:
    from mailferry.engine.directory import open_directory

    job = directory_job(project, confirm=False)
    out: dict[str, Any] = {}
    for role, s in (("source", job.source), ("target", job.target)):
        conn = open_directory(s, readonly=True, label=f"{role} directory")
        try:
            out[role] = {
                "naming_context": conn.naming_context,
                "containers": [
                    {"dn": c.dn, "users": c.users, "contacts": c.contacts, "groups": c.groups}
                    for c in conn.containers()
                    if c.users or c.contacts or c.groups or c.dn.lower().startswith("ou=")
                ],
            }
        finally:
            conn.close()
    return Result({"command": "directory discover", **out, "exit_code": 0}, 0)


def _outcome_row(o: Any) -> dict[str, Any]:
    return {
        "source": o.source.dn,
        "kind": o.source.kind,
        "login": o.source.login,
        "mail": o.source.primary_smtp,
        "status": o.status,
        "rule": o.rule,
        "target": o.target.dn if o.target is not None else None,
        "contact": o.contact.dn if o.contact is not None else None,
        "reason": o.reason,
        "candidates": list(o.candidates),
    }


def _action_row(a: Any) -> dict[str, Any]:
    from mailferry.engine.directory import jsonable
    from mailferry.plan.directory import AddAddresses, CreateUser, MergeContact, SetMailAttributes, SetManager

    if isinstance(a, CreateUser):
        return {
            "action": "create",
            "dn": a.dn,
            "source": a.source.dn,
            "reason": a.reason,
            "attributes": a.attrs,
            "notes": list(a.notes),
        }
    if isinstance(a, MergeContact):
        return {
            "action": "merge-contact",
            "dn": a.user_dn,
            "contact": a.contact.dn,
            "source": a.source.dn,
            "reason": a.reason,
            "groups": list(a.groups_to_move),
            "copy": {k: jsonable(v) for k, v in a.attrs_to_copy.items()},
            "not_copied": list(a.not_copied),
            "addresses": list(a.addresses),
        }
    if isinstance(a, AddAddresses):
        return {
            "action": "add-addresses",
            "dn": a.dn,
            "source": a.source.dn,
            "attribute": a.attribute,
            "values": list(a.values),
            "reason": a.reason,
        }
    if isinstance(a, SetMailAttributes):
        return {
            "action": "mail-attributes",
            "dn": a.dn,
            "source": a.source.dn,
            "attributes": a.attrs,
            "reason": a.reason,
        }
    if isinstance(a, SetManager):
        return {"action": "set-manager", "dn": a.dn, "source": a.source.dn, "manager": a.manager, "reason": a.reason}
    return {"action": "skip", "source": a.source.dn, "reason": a.reason, "finding": a.finding}


OUTCOMES = ("matched", "to_create", "contact_to_merge", "ambiguous", "conflict")


def directory_plan(project: Project, outcomes: Sequence[str] | None = None) -> Result:
    """What ``directory apply`` would do, and whether the target allows it (preconditions).

    ``outcomes``: list only the people of these outcomes and their actions (the counts stay
    whole). Exit code 78 when a precondition fails (apply would write nothing), 1 with ambiguous
    or conflicting people or read problems."""
    from mailferry.engine.directory import kept_contacts, make_plan, open_directory, precondition_rows, read_people

    unknown = [o for o in outcomes or () if o not in OUTCOMES]
    if unknown:
        raise UsageError(f"unknown outcome(s) {', '.join(unknown)}", hint=f"use {', '.join(OUTCOMES)}")
    job = directory_job(project, confirm=False)
    ledger = open_ledger(project, readonly=True)
    try:
        kept = kept_contacts(ledger)
    finally:
        ledger.close()
    t0 = time.monotonic()
    tgt = open_directory(job.target, readonly=True, label="target directory")
    try:
        source, target, problems = read_people(job, tgt)
        t1 = time.monotonic()
        found, plan, more = make_plan(job, source, target, tgt, kept)
    finally:
        tgt.close()
    t2 = time.monotonic()
    rows = [_outcome_row(o) for o in found]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    shown = [r for r in rows if not outcomes or r["status"] in outcomes]
    listed = {r["source"] for r in shown}
    actions = [_action_row(a) for a in plan.actions]
    data = {
        "counts": counts,
        "preconditions": precondition_rows(plan),
        "people": shown,
        "actions": [a for a in actions if not outcomes or a["source"] in listed],
        "notes": plan.notes,
        "problems": problems + more,
        "source_people": len(source),
        "target_people": len(target),
        "read_seconds": round(t1 - t0, 3),
        "plan_seconds": round(t2 - t1, 3),
    }
    if outcomes:
        data["outcome_filter"] = list(outcomes)
    if plan.blocked:
        code = int(ExitCode.CONFIG)
    else:
        findings = problems or more or any(r["status"] in ("ambiguous", "conflict") for r in rows)
        code = int(ExitCode.FINDINGS) if findings else 0
    return Result({"command": "directory plan", **data, "exit_code": code}, code)


def directory_apply(project: Project, reporter: Any = None) -> Result:
    """Carry the plan out; ``reporter`` (an ``engine.directory.DirectoryReporter``) sees progress.
    Exit code 78 when a precondition fails (nothing is written), 1 with findings."""
    from mailferry.engine.directory import DirectoryApply

    d = _directory(project)
    job = directory_job(project)
    ledger = open_ledger(project)
    try:
        ledger.acquire("directory apply")
        run_id = ledger.start_run("directory apply", _now())
        result = DirectoryApply(job, ledger, run_id, reporter=reporter).run(d.accounts_csv, d.account_key)
        data = {
            "run": run_id,
            "blocked": result.blocked,
            "preconditions": result.preconditions,
            "created": result.created,
            "merged": result.merged,
            "addresses_added": result.addresses,
            "mail_attributes_set": result.mail_attributes,
            "managers_set": result.managers,
            "skipped": result.skipped,
            "failed": result.failed,
            "not_attempted": result.not_attempted,
            "mailboxes_confirmed": result.confirmed,
            "mailboxes_not_alive": result.not_alive,
            "findings": [{"run": run_id, **f} for f in result.findings],
            "actions": result.actions,
            "identity": result.identity,
            "accounts_csv": str(d.accounts_csv) if d.accounts_csv and not result.blocked else None,
            "seconds": result.seconds,
            "plan_seconds": result.plan_seconds,
        }
        code = int(ExitCode.FINDINGS) if result.findings else 0
        if result.blocked:  # the target can't take this plan as configured: a config-type problem
            code = int(ExitCode.CONFIG)
        summary = {k: v for k, v in data.items() if k not in ("identity", "findings", "actions", "preconditions")}
        ledger.finish_run(run_id, _now(), code, summary)
        _write_report(project, f"directory-apply-{run_id}", data)
        return Result({"command": "directory apply", **data, "exit_code": code}, code)
    finally:
        ledger.close()


def directory_prepare(project: Project, *, apply: bool = False) -> Result:
    """What the target directory lacks for the directory plan (containers, schema, rights), as LDIF;
    with ``apply``, what mailferry may add is added, then the target is looked at again. Exit code
    0 when nothing is left to add, 78 when something is (for the admin, or until ``--apply``)."""
    from mailferry.engine import prepare

    result = prepare.run(directory_job(project, confirm=False), apply=apply, project_path=str(project.path))
    data = {"command": "directory prepare", "applied": apply, **prepare.rows(result, str(project.path))}
    refused = any(o.state == "refused" for o in result.outcomes)
    code = int(ExitCode.CONFIG) if data["remaining"] or refused else 0
    data["checks"] = [c.as_dict() for c in prepare.checks(result.remaining, str(project.path))]
    data["exit_code"] = code
    return Result(data, code)


def directory_restore(project: Project, contact: str | None = None) -> Result:
    """Put merged contacts back from the ledger (all, or ``contact``), undoing what each merge
    gave its user. The restored entries' LDIF is also written beside the report."""
    from mailferry.engine.directory import DirectoryRestore, write_private

    job = directory_job(project, confirm=False)
    ledger = open_ledger(project)
    try:
        ledger.acquire("directory restore")
        run_id = ledger.start_run("directory restore", _now())
        result = DirectoryRestore(job, ledger, run_id).run(contact)
        ldif_path = None
        if result.restored:
            project.reports_dir.mkdir(parents=True, exist_ok=True)
            ldif_path = project.reports_dir / f"directory-restore-{run_id}.ldif"
            write_private(ldif_path, "".join(r["ldif"] for r in result.restored))
        data = {
            "command": "directory restore",
            "run": run_id,
            "restored": [{k: v for k, v in r.items() if k != "ldif"} for r in result.restored],
            "findings": [{"run": run_id, **f} for f in result.findings],
            "ldif": str(ldif_path) if ldif_path else None,
        }
        code = int(ExitCode.FINDINGS) if result.findings else 0
        ledger.finish_run(run_id, _now(), code, {"restored": len(result.restored), "findings": len(result.findings)})
        data["exit_code"] = code
        _write_report(project, f"directory-restore-{run_id}", data)
        return Result(data, code)
    finally:
        ledger.close()


# -- mail filters: Sieve scripts (composed into plan, migrate and verify) ------------------------


def _sieve_jobs(project: Project, accounts: Sequence[AccountConfig]) -> list[Any]:
    """One job per account; the IMAP logins (own password or admin) resolved here."""
    from mailferry.connectors.sieve import SieveEndpoint, SieveLogin
    from mailferry.engine.sieve import SieveJob, SieveSide

    def side(server: ServerConfig, user: str, ref: Any) -> SieveSide:
        s = server.sieve
        assert s is not None  # only called when the project moves filters
        login = _login(project, server, user, ref)
        return SieveSide(
            SieveEndpoint(
                s.host, s.port, s.security, s.verify_certificates, str(s.ca_file) if s.ca_file else None, s.timeout
            ),
            SieveLogin(login.user, login.password, login.admin, login.method, login.master_separator),
        )

    return [
        SieveJob(
            a.source_user,
            a.target_user,
            side(project.source, a.source_user, a.source_password),
            side(project.target, a.target_user, a.target_password),
        )
        for a in accounts
    ]


def _sieve(
    project: Project, ledger: SqliteLedger, accounts: Sequence[AccountConfig], mode: str, run_id: int = 0
) -> dict[str, dict[str, Any]]:
    """Each account's filters: ``mode`` ``migrate``, ``plan`` (dry run, CHECKSCRIPT only), ``verify``
    or ``check`` (logins and extensions)."""
    from mailferry.engine.sieve import SieveEngine, account_folders
    from mailferry.plan.dav import address_map

    rules = project.calendars
    engine = SieveEngine(ledger, address_map(ledger.identity(), rules.addresses, rules.domains))
    mail = Engine(ledger, options(project))
    by_user = {j.source_user: j for j in jobs(project, accounts)}

    def one(job: Any) -> tuple[str, dict[str, Any]]:
        if mode == "check":
            return job.source_user, engine.check(job)
        try:
            folders = account_folders(mail, by_user[job.source_user])
        except MailferryError as e:
            return job.source_user, {"status": "failed", "error": str(e), "exit_code": int(e.exit_code)}
        if mode == "verify":
            return job.source_user, engine.verify(job, folders)
        return job.source_user, engine.run(job, folders, run_id, dry_run=mode == "plan").as_dict()

    return dict(_parallel(project.performance.accounts_in_parallel, one, _sieve_jobs(project, accounts)))


def _attach_filters(rows: list[dict[str, Any]], filters: Mapping[str, dict[str, Any]]) -> None:
    for r in rows:
        f = filters.get(r["account"])
        if f is not None:
            r["filters"] = f
            r["exit_code"] = worst([r["exit_code"], f["exit_code"]])
            if "clean" in r:
                r["clean"] = r["clean"] and bool(f.get("clean"))


# -- calendars and contacts (composed into check, plan, migrate, verify and report) ---------------


def _dav_types(project: Project, only: Sequence[str] | None = None) -> tuple[str, ...]:
    items = [t for t in project.items if only is None or t in only]
    return tuple(t for t in items if t in ("calendars", "contacts"))


def _dav_side(project: Project, server: ServerConfig, user: str, ref: Any) -> Any:
    from mailferry.connectors.dav import DavEndpoint, DavLogin
    from mailferry.engine.dav import DavConnection

    dav = server.dav
    assert dav is not None  # only called when the project has both DAV sides
    endpoint = DavEndpoint(
        base_url=dav.url,
        verify_certificates=dav.verify_certificates,
        ca_file=dav.ca_file,
        timeout=dav.timeout,
    )
    if ref is not None:
        login = DavLogin(user=user, password=ref.resolve(project.base_dir))
    elif dav.admin is not None:
        login = DavLogin(
            user=user,
            password=dav.admin.password.resolve(project.base_dir),
            admin=dav.admin.user,
            admin_method=dav.admin.method,
        )
    else:  # the loader refuses such a project; defensive
        raise MailferryError(f"{user}: no password reference and no DAV admin login", hint="fix the project file")

    def imap_acl() -> Any:
        """The account's IMAP session on the same side, for what a server keeps as mailbox ACLs
        (Cyrus: who may see free/busy); opened only when such a thing is to be written."""
        from mailferry.connectors.imap import ImapStore

        return ImapStore(_endpoint(server), _login(project, server, user, ref), readonly=False, label=f"{user} (IMAP)")

    return DavConnection(endpoint, login, imap_acl=imap_acl if server is project.target else None)


def _dav_jobs(project: Project, accounts: Sequence[AccountConfig]) -> list[Any]:
    from mailferry.engine.dav import DavJob

    return [
        DavJob(
            source_user=a.source_user,
            target_user=a.target_user,
            source=_dav_side(project, project.source, a.source_user, a.source_password),
            target=_dav_side(project, project.target, a.target_user, a.target_password),
        )
        for a in accounts
    ]


def _dav_engine(
    project: Project,
    ledger: SqliteLedger,
    types: Sequence[str],
    *,
    full: bool = False,
    reporter: Any = None,
    accounts: int = 1,
    pacing: Pacing | None = None,
) -> Any:
    from mailferry.connectors.dav import DavStore
    from mailferry.engine.dav import DavEngine, DavOptions
    from mailferry.plan.dav import DavPolicy, address_map
    from mailferry.plan.principals import principal_map

    rules = project.calendars
    identity = ledger.identity()
    target_dav = project.target.dav
    in_flight = target_dav.max_connections if target_dav else 16
    writers = dav_writers(project, accounts)

    def open_store(conn: Any, readonly: bool, label: str, known: Any = None) -> Any:
        return DavStore(
            conn.endpoint,
            conn.login,
            readonly=readonly,
            label=label,
            batch_size=rules.batch_items,
            max_connections=max(2, writers),
            known=known,
            imap_acl=None if readonly else conn.imap_acl,
            sync_tokens=readonly,  # only the source's tokens are kept; a target's cost its server
        )

    note = (lambda a, t: reporter.note(a, t)) if reporter is not None else (lambda a, t: None)

    def progress(account: str, planned: int, done: int) -> None:
        """Calendar items and contacts count with the account's messages (their bytes are not
        known before they are read, so the byte figures and the ETA stay the mail's)."""
        if reporter is None:
            return
        if planned:
            reporter.planned(account, planned, 0)
        if done:
            reporter.copied(account, done, 0)

    return DavEngine(
        ledger,
        DavOptions(
            types=tuple(types),
            scheduling=rules.scheduling,
            policy=DavPolicy(propagate_deletions=rules.propagate_deletions),
            sharing=rules.sharing,
            batch_items=rules.batch_items,
            writers=writers,
            writes_in_flight=in_flight,
            full=full,
        ),
        open_store=open_store,
        addresses=address_map(identity, rules.addresses, rules.domains),
        principals=principal_map([(a.source_user, a.target_user) for a in project.accounts], identity),
        note=note,
        progress=progress,
        pace=pacing.pace_dav if pacing is not None else None,
        slow_down=pacing.dav_throttled if pacing is not None else None,
    )


_NO_MAIL = "mail is not among the project's items"


def _no_mail(a: AccountConfig, **fields: Any) -> dict[str, Any]:
    """An account's row in a project that moves no mail: its calendars and contacts come next."""
    return {"account": a.source_user, "target_account": a.target_user, "exit_code": 0, **fields}


def _attach(rows: list[dict[str, Any]], dav: Mapping[str, dict[str, Any]]) -> None:
    """Put each account's calendars-and-contacts part into its row; the worse exit code wins."""
    for r in rows:
        d = dav.get(r["account"])
        if d is not None:
            r["calendars"] = d
            r["exit_code"] = worst([r["exit_code"], int(d.get("exit_code", 0))])


def dav_writers(project: Project, accounts: int) -> int:
    """PUTs in flight (and connections to the target DAV server) for one account when
    ``accounts`` move at once. All accounts together keep at most the target's
    ``max_connections`` writes going (DavEngine.write_slots); each account its share of them: a
    server that serialises writes into one collection (Cyrus locks the calendar's mailbox) gains
    nothing from many in one, and an account holding all the slots for one collection kept the
    others waiting (measured: bench/dav.py, ~1.6x faster into Cyrus with 2 each across 16 accounts
    than 16 each across 8). A single account gets all."""
    target_dav = project.target.dav
    in_flight = target_dav.max_connections if target_dav else 16
    return max(2, in_flight // max(1, min(accounts, dav_parallel_accounts(project))))


def dav_parallel_accounts(project: Project) -> int:
    """Accounts whose calendars and contacts move at once: half the smaller DAV side's
    ``max_connections``, at least one. Each account holds two connections to either server at
    least (the source: its reader and the listing beside it; the target: its writers, two or
    more, see :func:`dav_writers`), kept alive between requests: sixteen accounts with two
    each held 24 connections to a target that allows 16 (``bench/scale.py``, server side)."""
    s, t = project.source.dav, project.target.dav
    limit = min(s.max_connections if s else 8, t.max_connections if t else 8)
    return max(1, limit // 2)


def _dav_error_stats(job: Any, e: MailferryError) -> dict[str, Any]:
    return {"status": "failed", "error": str(e), "exit_code": int(e.exit_code)}


def _dav_migrate(
    project: Project,
    ledger: SqliteLedger,
    run_id: int,
    types: Sequence[str],
    accounts: Sequence[AccountConfig],
    *,
    full: bool,
    reporter: Any,
    skip: Mapping[str, MailferryError],
    pacing: Pacing | None = None,
    sharing: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Each account's calendars and contacts, after its mail: source user -> DAV stats.
    ``sharing``: accounts whose calendars move at once beside these (a worker's other tasks):
    the target's connections are divided among them all."""
    from mailferry.engine.dav import DavStats

    djobs = [j for j in _dav_jobs(project, accounts) if j.source_user not in skip]
    engine = _dav_engine(
        project, ledger, types, full=full, reporter=reporter, accounts=sharing or len(djobs), pacing=pacing
    )

    def one(job: Any) -> DavStats:
        stats: DavStats = engine.migrate_account(job, run_id)
        return stats

    out = {s.account: s.as_dict() for s in _parallel(dav_parallel_accounts(project), one, djobs)}
    # Each target account offered a share in this run accepts it (the sharee's own step).
    ok = [j for j in djobs if out[j.source_user]["status"] == "ok" and j.target_user in engine.offered]

    def accept(job: Any) -> None:
        try:
            out[job.source_user]["shares_accepted"] = engine.accept_shares(job)
        except MailferryError as e:  # the account's own run went through: this is a finding of its own
            out[job.source_user]["findings"] += 1
            ledger.add_finding(
                run_id, Finding(job.source_user, "", None, "share-accept", f"{job.target_user}: {e}", {})
            )

    _parallel(dav_parallel_accounts(project), accept, ok)
    for name, e in skip.items():
        out[name] = _dav_error_stats(None, e)
    return out


def accept_offered_shares(
    project: Project, ledger: SqliteLedger, run_id: int, accounts: Sequence[AccountConfig], types: Sequence[str]
) -> dict[str, int]:
    """Each of ``accounts`` offered a calendar or address-book share in run ``run_id`` (by any
    account, on any worker) accepts it on the target: source account -> shares accepted. What a
    local run does at the end of its DAV pass, for a distributed run whose accounts were tasks."""
    dav_types = _dav_types(project, types)
    offered = ledger.dav_offered(run_id) if dav_types else set()
    if not offered:
        return {}
    djobs = [j for j in _dav_jobs(project, accounts) if j.target_user in offered]
    engine = _dav_engine(project, ledger, dav_types, accounts=len(djobs))

    def accept(job: Any) -> tuple[str, int]:
        try:
            return job.source_user, int(engine.accept_shares(job))
        except MailferryError as e:
            finding = Finding(job.source_user, "", None, "share-accept", f"{job.target_user}: {e}", {})
            ledger.add_finding(run_id, finding)
            return job.source_user, -1

    return dict(_parallel(dav_parallel_accounts(project), accept, djobs))


def dav_exit_code(row: Mapping[str, Any]) -> int:
    if row.get("exit_code"):
        return int(row["exit_code"])
    return int(ExitCode.FINDINGS) if row.get("findings") or row.get("outstanding") else 0


def _dav_rows(
    project: Project, accounts: Sequence[AccountConfig], fn: Callable[[Any, Any], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``fn(engine, job)`` for each account's DAV side, read-only: source user -> its result, or
    the error that stopped it."""
    types = _dav_types(project)
    if not types:
        return {}
    ledger = open_ledger(project, readonly=True)
    try:
        engine = _dav_engine(project, ledger, types)

        def one(job: Any) -> tuple[str, dict[str, Any]]:
            try:
                return job.source_user, fn(engine, job)
            except MailferryError as e:
                return job.source_user, {"error": str(e), "exit_code": int(e.exit_code)}

        return dict(_parallel(dav_parallel_accounts(project), one, _dav_jobs(project, accounts)))
    finally:
        ledger.close()


def _dav_plan(engine: Any, job: Any) -> dict[str, Any]:
    plans, marks = engine.plan_account(job)
    return {
        "scheduling": "marked" if marks else "unchanged",
        "copy": sum(len(p.copies) for p in plans),
        "update": sum(len(p.updates) for p in plans),
        "remove": sum(len(p.removals) for p in plans),
        "exit_code": 0,
        "collections": [
            {
                "collection": p.source.name,
                "kind": p.source.kind,
                "target_href": p.target_href,
                "create": p.create,
                "copy": len(p.copies),
                "update": len(p.updates),
                "remove": len(p.removals),
                "unchanged": p.kept,
                "retry_refused": sum(1 for a in p.copies if a.retry),
            }
            for p in plans
        ],
    }


def _dav_verify(deep: bool) -> Callable[[Any, Any], dict[str, Any]]:
    def fn(engine: Any, job: Any) -> dict[str, Any]:
        from mailferry.engine.dav import verify_dav_account

        verdicts = verify_dav_account(engine, job, deep=deep)
        clean = all(v.clean for v in verdicts)
        return {
            "clean": clean,
            "exit_code": 0 if clean else int(ExitCode.FINDINGS),
            "collections": [v.as_dict() for v in verdicts],
        }

    return fn


def _dav_check(engine: Any, job: Any) -> dict[str, Any]:
    """Log in to both DAV sides; what each server is, what it holds, and what will happen to
    meetings on import."""
    from mailferry.engine.dav import scheduling_marks

    out: dict[str, Any] = {"problems": [], "warnings": [], "exit_code": 0}
    for role, conn in (("source", job.source), ("target", job.target)):
        label = f"{job.source_user} ({role})"
        store = engine.open_store(conn, True, label)
        try:
            info = store.info()
            colls = [c for c in store.collections() if c.kind in engine.kinds()]
            out[role] = {
                "ok": True,
                "product": info.product,
                "dav": sorted(info.dav),
                "schedules": info.schedules,
                "calendars": sum(1 for c in colls if c.kind == "calendar"),
                "addressbooks": sum(1 for c in colls if c.kind == "addressbook"),
            }
            if role == "source":
                out[role]["items"] = sum(len(store.members(c)) for c in colls)
            else:
                marks = scheduling_marks(engine.opts.scheduling, info)
                out["scheduling"] = "marked" if marks else "unchanged"
                if marks:
                    out["warnings"].append(
                        "the target schedules on import (calendar-auto-schedule): imported meetings will carry "
                        "SCHEDULE-AGENT=CLIENT so that nobody is notified, and the server will not send later "
                        "updates of those meetings either; to keep scheduling, pause it on the target for the "
                        'migration (Cyrus: caldav_allowscheduling: off) and set [calendars] scheduling = "paused"'
                    )
        except MailferryError as e:
            out[role] = {"ok": False, "error": str(e)}
            out["problems"].append(str(e))
            out["exit_code"] = worst([out["exit_code"], int(e.exit_code)])
        finally:
            store.close()
    if not out["exit_code"] and (out["problems"] or out["warnings"]):
        out["exit_code"] = int(ExitCode.FINDINGS)
    return out


# -- cut-over -----------------------------------------------------------------------------------


def cutover_check(project: Project, names: Sequence[str] | None = None, *, simulate_offline: bool = False) -> Result:
    """What still depends on the source (engine.cutover); with ``simulate_offline`` the source is
    refused to this process and the target's own checks run alone."""
    from mailferry.engine import cutover
    from mailferry.model.readiness import CUTOVER_AREAS, summary
    from mailferry.model.readiness import exit_code as readiness_exit_code

    accs = [a for a in select_accounts(project, names)]
    mail = jobs(project, accs) if "mail" in project.items else []
    dav = _dav_jobs(project, accs) if _dav_types(project) else []
    sieve = _sieve_jobs(project, accs) if "filters" in project.items else []
    with _ledger_for_reading(project) as ledger:
        checks = cutover.gather(project, ledger, mail, dav, sieve, simulate_offline=simulate_offline)
    areas = summary(checks, CUTOVER_AREAS)
    code = readiness_exit_code(checks)
    data = {
        "command": "cutover check",
        "simulate_offline": simulate_offline,
        "verdict": areas["verdict"],
        "areas": areas["areas"],
        "exit_code": code,
    }
    return Result(data, code)


def cutover_ack(project: Project, account: str, kind: str) -> Result:
    """Record that the admin acknowledged ``account``'s findings of ``kind`` (ledger settings, kind "ack")."""
    from mailferry.engine.cutover import ACK
    from mailferry.state.ledger import SettingRecord

    if account not in {a.source_user for a in project.accounts}:
        raise UsageError(f"no account {account!r} in the project", hint="name a source account of the accounts CSV")
    ledger = open_ledger(project)
    try:
        ledger.record_setting(SettingRecord(account, ACK, kind, _now(), "", "set", 0))
    finally:
        ledger.close()
    return Result({"command": "cutover ack", "account": account, "kind": kind, "exit_code": 0}, 0)
