"""``mailferry cutover check``: what still depends on the source servers.

Reads the target (DAV items, Sieve scripts) and the ledger, and with ``simulate_offline``
refuses itself every connection to the source (:mod:`mailferry.connectors.offline`) and
proves the target stands alone: each account logs in, each sharee opens what was shared with
it (folders by their ACL, calendars and address books by their sharing), free/busy is answered.
The judging is :mod:`mailferry.verify.cutover`; DNS is :mod:`mailferry.engine.names`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mailferry.config.model import Project
from mailferry.connectors.offline import refusing
from mailferry.connectors.wrappers import RetryPolicy
from mailferry.engine.migrate import AccountJob, open_store
from mailferry.engine.names import cutover_dns_checks, endpoints, mail_hosts
from mailferry.engine.readiness import Context
from mailferry.errors import MailferryError
from mailferry.model.dav import Collection
from mailferry.model.readiness import Check
from mailferry.plan.acl import SEP
from mailferry.plan.dav import address_map
from mailferry.state.ledger import SqliteLedger
from mailferry.verify import cutover as judge
from mailferry.verify.names import known_names

_ONCE = RetryPolicy(attempts=1)  # a check asks once: a server that fails is the finding
ACK = "ack"  # ledger settings kind: a finding kind the admin acknowledged for an account


def _source_endpoints(project: Project) -> list[tuple[str, int]]:
    return [(h, p) for role, _, h, p in endpoints(project) if role == "source"]


def old_hosts(project: Project) -> frozenset[str]:
    hosts = mail_hosts(project, "source")
    names = set(known_names(project.organization.source_names, hosts))
    target_hosts = set(mail_hosts(project, "target"))
    names |= {h.lower() for h in hosts if h not in target_hosts}  # an address only the source has
    return frozenset(names)


def _last_passes(ledger: SqliteLedger) -> tuple[dict[str, tuple[int, str]], dict[str, int]]:
    """(source account -> (run, finished at) of its last finished mail pass; source account -> its
    last finished migrate run of any kind, ``--only permissions`` included: its findings are the
    account's current ones)."""
    runs = [r for r in ledger.runs() if r["command"] == "migrate" and r["finished_at"]]
    finished = {r["id"]: r["finished_at"] for r in runs}
    passes: dict[str, tuple[int, str]] = {}
    for row in ledger.account_runs():
        if row["run_id"] in finished:
            passes[row["account"]] = (row["run_id"], finished[row["run_id"]])
    latest: dict[str, int] = {a: run for a, (run, _) in passes.items()}
    for r in runs:
        for a in (r["summary"] or {}).get("accounts", []):
            if isinstance(a, dict) and isinstance(a.get("account"), str):
                latest[a["account"]] = max(latest.get(a["account"], 0), r["id"])
    return passes, latest


def gather(
    project: Project,
    ledger: SqliteLedger,
    mail: Sequence[AccountJob],
    dav: Sequence[Any],
    sieve: Sequence[Any],
    *,
    simulate_offline: bool,
    now: datetime | None = None,
) -> list[Check]:
    now = now or datetime.now(UTC)
    guard = refusing(_source_endpoints(project)) if simulate_offline else contextlib.nullcontext()
    with guard:
        out: list[Check] = []
        accounts = [j.source_user for j in mail] or [j.source_user for j in dav] or [j.source_user for j in sieve]
        out += cutover_dns_checks(project, [], Context(now=now))
        moved = address_map(ledger.identity(), project.calendars.addresses, project.calendars.domains)
        passes, latest = _last_passes(ledger)
        out += _progress(project, ledger, accounts, mail, passes, latest, now=now, offline=simulate_offline)
        for account in accounts:
            if account in latest:
                found = [_finding(f) for f in ledger.findings(latest[account], account)]
                out += judge.acl_checks(account, found, set(ledger.settings(account, ACK)))
        out += _dav_data(dav, ledger, moved, old_hosts(project))
        out += _sieve_data(sieve, moved)
        if simulate_offline:
            out += _offline(project, ledger, mail, dav)
    return out


def _finding(f: Any) -> dict[str, Any]:
    return {"kind": f.kind, "folder": f.folder, "message": f.message, "run": f.run, "uid": f.uid}


def _progress(
    project: Project,
    ledger: SqliteLedger,
    accounts: Sequence[str],
    mail: Sequence[AccountJob],
    passes: dict[str, tuple[int, str]],
    latest: dict[str, int],
    *,
    now: datetime,
    offline: bool,
) -> list[Check]:
    findings = {a: [_finding(f) for f in ledger.findings(latest[a], a)] for a in accounts if a in latest}
    acknowledged = {a: set(ledger.settings(a, ACK)) for a in accounts}
    outstanding = {a: ledger.outstanding_count(a) + len(ledger.dav_outstanding(a)) for a in accounts}
    changed: dict[str, list[str]] = {}
    notes: list[Check] = []
    if not offline:
        for job in mail:
            if job.source_user not in passes:
                continue
            try:
                changed[job.source_user] = _changed_folders(ledger, job)
            except MailferryError as e:
                notes.append(
                    Check(
                        "progress",
                        "source changed",
                        "warning",
                        f"the source could not be read to compare with the last pass: {e.message}",
                        "run the check while the source still answers, or run migrate once more",
                        account=job.source_user,
                    )
                )
    return notes + judge.progress_checks(
        [(a, passes[a][1] if a in passes else None) for a in accounts],
        now=now,
        window_hours=project.organization.delta_window_hours,
        findings=findings,
        acknowledged=acknowledged,
        outstanding=outstanding,
        changed=changed,
    )


def _changed_folders(ledger: SqliteLedger, job: AccountJob) -> list[str]:
    """Folders whose STATUS differs from the state the last pass recorded (new, removed or
    changed messages), and source folders the ledger does not know."""
    states = {s.source_folder: s for s in ledger.folder_states(job.source_user)}
    src = open_store(job.source, readonly=True, label=f"{job.source_user} (source)", retry=_ONCE)
    try:
        out = []
        for f in src.own_folders():
            if not f.selectable:
                continue
            st = src.status(f.name)
            known = states.get(f.name)
            if known is None or (st.uidvalidity, st.uidnext, st.messages) != (
                known.uidvalidity,
                known.uidnext,
                known.messages,
            ):
                out.append(f.name)
        return out
    finally:
        src.close()


@contextlib.contextmanager
def _dav_store(conn: Any, label: str) -> Iterator[Any]:
    from mailferry.connectors.dav import DavStore

    store = DavStore(conn.endpoint, conn.login, readonly=True, label=label)
    try:
        yield store
    finally:
        store.close()


def _dav_data(
    dav: Sequence[Any], ledger: SqliteLedger, moved: Callable[[str], str | None], hosts: frozenset[str]
) -> list[Check]:
    out: list[Check] = []
    for job in dav:
        try:
            with _dav_store(job.target, f"{job.target_user} (target)") as store:
                for coll in store.collections():
                    hrefs = list(store.members(coll))
                    for item in store.fetch(coll, hrefs):
                        out += judge.dav_item_checks(
                            job.source_user, coll.name, coll.kind, item.href, item.data, hosts, moved
                        )
        except MailferryError as e:
            out.append(
                Check(
                    "data",
                    "calendars and contacts",
                    "warning",
                    f"could not be read: {e.message}",
                    e.hint or "check the target's DAV login",
                    account=job.source_user,
                )
            )
    return out


def _sieve_data(sieve: Sequence[Any], moved: Callable[[str], str | None]) -> list[Check]:
    from mailferry.connectors.sieve import SieveStore

    out: list[Check] = []
    for job in sieve:
        try:
            store = SieveStore(
                job.target.endpoint, job.target.login, readonly=True, label=f"{job.target_user} (target)"
            )
            try:
                listed = store.list_scripts()
                scripts = {name: store.get(name) for name, _ in listed}
                active = next((name for name, on in listed if on), None)
            finally:
                store.close()
        except MailferryError as e:
            out.append(
                Check(
                    "data",
                    "filters",
                    "warning",
                    f"could not be read: {e.message}",
                    e.hint or "check the target's ManageSieve login",
                    account=job.source_user,
                )
            )
            continue
        out += judge.sieve_checks(job.source_user, scripts, active, moved)
    return out


def _offline(project: Project, ledger: SqliteLedger, mail: Sequence[AccountJob], dav: Sequence[Any]) -> list[Check]:
    out: list[Check] = []
    by_target = {j.target_user.lower(): j for j in mail}
    for job in mail:
        try:
            st = open_store(job.target, readonly=True, label=f"{job.target_user} (target)", retry=_ONCE)
            try:
                n = st.status("INBOX").messages
            finally:
                st.close()
            out.append(
                Check(
                    "offline",
                    f"login {job.target_user}",
                    "ok",
                    f"logs in on the target alone; INBOX holds {n} messages",
                    account=job.source_user,
                )
            )
        except MailferryError as e:
            out.append(
                Check(
                    "offline",
                    f"login {job.target_user}",
                    "blocked",
                    f"can't log in on the target with the source off: {e.message}",
                    e.hint or "see the error",
                    account=job.source_user,
                    exit_code=int(e.exit_code),
                )
            )
        out += _sharees(ledger, job, by_target)
    dav_by_target = {j.target_user.lower(): j for j in dav}
    for job in dav:
        out += _dav_offline(ledger, job, dav_by_target)
    return out


def _sharees(ledger: SqliteLedger, owner: AccountJob, by_target: dict[str, AccountJob]) -> list[Check]:
    """Each sharee of ``owner``'s folders (the ACL entries the ledger recorded as set) opens them
    on the target: one login and one LIST per sharee, then MYRIGHTS per folder."""
    wanted: dict[str, list[tuple[str, str]]] = {}  # sharee's target login -> [(folder, rights)]
    for rec in ledger.settings(owner.source_user, "acl").values():
        if rec.state != "set" or not rec.target:
            continue
        folder, identifier, rights = (rec.target.split(SEP) + ["", "", ""])[:3]
        sharee = by_target.get(identifier.lower())
        if sharee is None or sharee is owner or identifier.startswith("-"):
            continue  # groups, anyone, negative entries: nobody to log in as
        wanted.setdefault(sharee.target_user, []).append((folder, rights))
    out: list[Check] = []
    for login, entries in wanted.items():
        sharee = by_target[login.lower()]
        try:
            st = open_store(sharee.target, readonly=True, label=f"{login} (target)", retry=_ONCE)
            try:
                other = st.other_users_prefix()
                if other is None:
                    raise MailferryError("the target shows no other users' namespace")
                prefix, delim = other
                # Listed first: Dovecot 2.3 fails MYRIGHTS on a shared folder this session hasn't listed.
                listed = {f.name for f in st.list_folders()}
                seen: list[tuple[str, str, str]] = []
                for folder, rights in entries:
                    path = prefix + owner.target_user  # another user's INBOX is the root of its tree
                    if folder.upper() != "INBOX":
                        path += delim + folder.replace("/", delim)
                    seen.append((folder, rights, (st.my_rights(path) or "") if path in listed else ""))
            finally:
                st.close()
        except MailferryError as e:
            out += [
                Check(
                    "offline",
                    f"{login} opens {owner.target_user}'s {folder}",
                    "blocked",
                    f"could not open it on the target: {e.message}",
                    "set the entry on the target again (mailferry migrate --only permissions)",
                    account=owner.source_user,
                )
                for folder, _ in entries
            ]
            continue
        for folder, rights, have in seen:
            subject = f"{login} opens {owner.target_user}'s {folder}"
            if set(rights) - set(have):
                what = f"the target gives {have or 'nothing'}, the source gave {rights}"
                fix = "mailferry migrate --only permissions"
                out.append(Check("offline", subject, "blocked", what, fix, account=owner.source_user))
            else:
                out.append(
                    Check("offline", subject, "ok", f"opens it with the rights {have}", account=owner.source_user)
                )
    return out


def _dav_offline(ledger: SqliteLedger, job: Any, by_target: dict[str, Any]) -> list[Check]:
    out: list[Check] = []
    start = datetime.now(UTC).strftime("%Y%m%dT000000Z")
    end = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y%m%dT000000Z")
    try:
        with _dav_store(job.target, f"{job.target_user} (target)") as store:
            colls = store.collections()
            info = store.info()
            address = next(
                (a for a in info.addresses if a.lower().startswith("mailto:")), f"mailto:{job.target_user}@localhost"
            )
            calendars = [c for c in colls if c.kind == "calendar"]
            if calendars:
                periods = store.freebusy(address, start, end)
                if periods is None:
                    out.append(
                        Check(
                            "offline",
                            f"free/busy {job.target_user}",
                            "blocked",
                            "the target does not answer free/busy for this account",
                            "check the target's scheduling (RFC 6638) or free-busy-query support",
                            account=job.source_user,
                        )
                    )
                else:
                    out.append(
                        Check(
                            "offline",
                            f"free/busy {job.target_user}",
                            "ok",
                            f"answered by the target ({len(periods)} busy periods in 30 days)",
                            account=job.source_user,
                        )
                    )
            out.append(
                Check(
                    "offline",
                    f"collections {job.target_user}",
                    "ok",
                    f"{len(colls)} calendars and address books open on the target",
                    account=job.source_user,
                )
            )
    except MailferryError as e:
        out.append(
            Check(
                "offline",
                f"collections {job.target_user}",
                "blocked",
                f"can't be opened with the source off: {e.message}",
                e.hint or "see the error",
                account=job.source_user,
                exit_code=int(e.exit_code),
            )
        )
        return out
    targets = ledger.dav_collections(job.source_user)
    for share in ledger.dav_shares(job.source_user):
        sharee = by_target.get(str(share["target_principal"] or "").lower())
        coll = next(
            (s for s in targets.values() if s.source_href == share["collection"] or s.name == share["collection"]), None
        )
        if sharee is None or coll is None or share["state"] != "set" or share["access"] == "freebusy":
            continue
        subject = f"{sharee.target_user} opens {job.target_user}'s {coll.name}"
        try:
            with _dav_store(sharee.target, f"{sharee.target_user} (target)") as st:
                n = len(st.members(Collection(coll.target_href, coll.kind, coll.name)))  # type: ignore[arg-type]
            out.append(Check("offline", subject, "ok", f"opens it on the target ({n} items)", account=job.source_user))
        except MailferryError as e:
            out.append(
                Check(
                    "offline",
                    subject,
                    "blocked",
                    f"can't open it on the target: {e.message}",
                    "mailferry migrate --only calendars,contacts (sharing)",
                    account=job.source_user,
                )
            )
    return out
