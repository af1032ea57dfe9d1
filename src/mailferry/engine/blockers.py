"""Gathers the area ``blockers`` of ``mailferry check``: per account, read-only, what the source
holds that the target can't take (message sizes, keywords, folder names, ACL entries, Sieve
extensions), judged by :func:`mailferry.verify.blockers.judge`.

What ``check`` has already read of an account (per source folder a :func:`folder_tally`: its
totals, the sizes over the target's limit, its keywords; each side's capabilities) comes in
``Context.seen``: the source is not read twice. An account
whose target ``check`` could not log in to (no mailbox yet, shared, login refused) is left to
``check``'s own row: logging in here could create its mailbox (Cyrus does at the first login).

Each part reuses what migrate plans with: the mail engine's folder mapping (a dry run, nothing
created), the ACL engine's dry run (the findings it would report), the Sieve scripts' ``require``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mailferry.config.model import AccountConfig, Project
from mailferry.connectors.imap import FolderTally, ImapStore
from mailferry.connectors.sieve import SieveStore
from mailferry.engine.acl import AclEngine
from mailferry.engine.migrate import AccountJob, AccountRun, AccountStats, Engine
from mailferry.engine.readiness import Context
from mailferry.errors import MailferryError
from mailferry.formats.sieve import requires
from mailferry.model.readiness import Check
from mailferry.plan.acl import AclSkip, SetAcl
from mailferry.plan.keywords import is_keyword
from mailferry.plan.principals import principal_map
from mailferry.verify.blockers import AREA, AccountFacts, AclItem, FolderName, Script, TargetNames, judge
from mailferry.verify.blockers import calendar_components as judge_components


def gather(project: Project, accounts: Sequence[AccountConfig], ctx: Context) -> list[Check]:
    """Every account's blockers (accounts looked at in parallel, as ``check`` does)."""
    if not accounts:
        return []
    # The use cases resolve the logins (secrets stay in their Login objects): reused, not redone.
    from mailferry import api

    mail = "mail" in project.items
    jobs = {j.source_user: j for j in api.jobs(project, accounts)} if mail else {}
    sieve_jobs: dict[str, Any] = {}
    if "filters" in project.items and project.source.sieve is not None and project.target.sieve is not None:
        sieve_jobs = {j.source_user: j for j in api._sieve_jobs(project, accounts)}
    ledger = api.open_ledger(project, readonly=True)
    try:
        engine = Engine(ledger, api.options(project))
        acl = None
        if "permissions" in project.items:
            principals = principal_map([(a.source_user, a.target_user) for a in project.accounts], ledger.identity())
            groups = dict(project.acl_groups)
            acl = AclEngine(
                ledger, principals=principals, groups=lambda g: groups.get(g, g), retry=engine.options.retry
            )

        def one(a: AccountConfig) -> list[Check]:
            facts = AccountFacts(a.source_user, a.target_user, max_size=project.messages.max_size)
            seen: Mapping[str, Any] = ctx.seen.get(a.source_user, {})
            checks: list[Check] = []
            job = jobs.get(a.source_user)
            if job is not None and seen.get("target", {}).get("ok") and seen.get("source", {}).get("ok"):
                checks += _part(a, "mail", lambda: _mail(facts, engine, job, seen, acl))
            if a.source_user in sieve_jobs:
                checks += _part(a, "Sieve scripts", lambda: _sieve(facts, sieve_jobs[a.source_user]))
            return checks + judge(facts)

        with ThreadPoolExecutor(max_workers=max(1, project.performance.accounts_in_parallel)) as pool:
            return [c for cs in pool.map(one, accounts) for c in cs]
    finally:
        ledger.close()


def folder_tally(st: ImapStore, folder: str, larger_than: int | None) -> FolderTally:
    """What ``check`` reads of a source folder for the blockers and the account's totals: from
    STATUS=SIZE, SELECT's FLAGS and searches where the server offers STATUS=SIZE (no message read
    one by one), else, as before that, every message's size and flags."""
    got = st.tally(folder, larger_than=larger_than)
    if got is not None:
        return got
    sizes: list[int] = []
    keywords: set[str] = set()
    for m in st.inventory(folder):
        sizes.append(m.size)
        keywords.update(x for x in m.flags if not x.startswith("\\"))
    large = sorted((x for x in sizes if larger_than is not None and x > larger_than), reverse=True)
    return FolderTally(len(sizes), sum(sizes), large, keywords)


def _part(a: AccountConfig, what: str, fn: Callable[[], None]) -> list[Check]:
    """Run one part; a server that fails it makes a blocked check (nothing can be said of it)."""
    try:
        fn()
    except MailferryError as e:
        return [
            Check(
                AREA,
                what,
                "blocked",
                f"the account's {what} could not be looked at: {e}",
                e.hint or "fix what the message says, then run check again",
                a.source_user,
                exit_code=int(e.exit_code),
            )
        ]
    return []


def _mail(facts: AccountFacts, engine: Engine, job: AccountJob, seen: Mapping[str, Any], acl: AclEngine | None) -> None:
    """Sizes and keywords from ``check``; the folder mapping (a dry run) and the target's naming;
    then the ACL engine's dry run against that mapping."""
    target = seen.get("target", {})
    facts.appendlimit = target.get("appendlimit")
    facts.permanent_flags = target.get("permanent_flags")
    run = AccountRun(engine, job, 0, AccountStats(job.source_user, job.target_user), dry_run=True)
    try:
        listed = run.source_folders()
        mappings = run.folder_map(listed)
        tgt = run.target_store()
        info = tgt.info()
        product = ImapStore.product(getattr(tgt, "greeting", ""))
        facts.target_product = product
        facts.names = TargetNames(product, info.namespace.prefix, info.namespace.delimiter, job.target_user)
        facts.folders = [FolderName(m.source, m.target, m.notes, m.rule) for m in mappings]
    finally:
        run.close()
    by_folder: Mapping[str, FolderTally] | None = seen.get("by_folder")
    if by_folder is not None:  # what check read of each folder; only the folders migrate carries count
        going = {m.source for m in mappings if m.target is not None}
        carried = {name: t for name, t in by_folder.items() if name in going}
        facts.sizes = [size for t in carried.values() for size in t.large]
        facts.messages = sum(t.messages for t in carried.values())
        kws = {name: {k for k in t.keywords if is_keyword(k)} for name, t in carried.items()}
        facts.keywords = set().union(*kws.values())
        facts.folder_keywords = {name: len(k) for name, k in kws.items()}
    facts.looked_at.update(
        messages=facts.messages if facts.messages is not None else len(facts.sizes or ()),
        keywords=len(facts.keywords or ()),
        folders=len(facts.folders),
    )
    if acl is None:
        return
    stats = acl.plan(job, {m.source: m.target for m in mappings})
    items: list[AclItem] = []
    for x in stats.actions:
        if isinstance(x, AclSkip) and x.finding:
            items.append(AclItem(x.finding, x.source_folder, x.source_identifier, x.source_rights, x.reason))
        elif isinstance(x, SetAcl) and x.left_out:
            items.append(
                AclItem("acl-rights-unsupported", x.source_folder, x.source_identifier, x.source_rights, "", x.left_out)
            )
    facts.acl = items
    facts.looked_at["ACL entries"] = sum(1 for x in stats.actions if isinstance(x, AclSkip | SetAcl))


def _sieve(facts: AccountFacts, job: Any) -> None:
    """The ``require`` of each source script, and the target's extensions (two read-only logins)."""
    scripts: list[Script] = []
    src = SieveStore(
        job.source.endpoint, job.source.login, readonly=True, label=f"{job.source_user} (source, ManageSieve)"
    )
    try:
        for name, active in src.list_scripts():
            scripts.append(Script(name, frozenset(r.lower() for r in requires(src.get(name))), active))
    finally:
        with contextlib.suppress(Exception):
            src.close()
    tgt = SieveStore(
        job.target.endpoint, job.target.login, readonly=True, label=f"{job.target_user} (target, ManageSieve)"
    )
    try:
        facts.sieve_extensions = frozenset(e.lower() for e in tgt.extensions)
    finally:
        with contextlib.suppress(Exception):
            tgt.close()
    facts.scripts = scripts
    facts.looked_at["Sieve scripts"] = len(scripts)


_COMPONENT = re.compile(rb"(?m)^BEGIN:(VEVENT|VTODO|VJOURNAL)\r?$")


def calendar_components(project: Project, accounts: Sequence[AccountConfig], ctx: Context) -> list[Check]:
    """Per account, source calendars whose items are of a component the same-named calendar that
    already exists on the target does not take (read-only; only where the target has one)."""
    if "calendars" not in project.items or project.source.dav is None or project.target.dav is None:
        return []
    from mailferry import api
    from mailferry.connectors.dav import DavStore

    def one(job: Any) -> list[Check]:
        out: list[Check] = []
        try:
            with contextlib.ExitStack() as stack:
                src = stack.enter_context(
                    DavStore(job.source.endpoint, job.source.login, readonly=True, label=f"{job.source_user} (source)")
                )
                tgt = stack.enter_context(
                    DavStore(job.target.endpoint, job.target.login, readonly=True, label=f"{job.target_user} (target)")
                )
                there = {c.name: c for c in tgt.collections() if c.kind == "calendar" and c.components}
                for coll in src.collections():
                    if coll.kind != "calendar" or coll.name not in there:
                        continue
                    if coll.components and set(coll.components) <= set(there[coll.name].components):
                        continue  # the source's set already fits (as after a pass): no need to read the items
                    counts: dict[str, int] = {}
                    for item in src.fetch(coll, list(src.members(coll))):
                        for m in set(_COMPONENT.findall(item.data)):
                            counts[m.decode()] = counts.get(m.decode(), 0) + 1
                    out += judge_components(job.source_user, coll.name, there[coll.name].components, counts)
        except MailferryError as e:
            out.append(
                Check(
                    AREA,
                    "calendars",
                    "warning",
                    f"could not be compared: {e.message}",
                    e.hint or "see the error",
                    account=job.source_user,
                )
            )
        return out

    jobs = api._dav_jobs(project, accounts)
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(jobs)))) as pool:
        return [c for checks in pool.map(one, jobs) for c in checks]
