"""The console's web application (Starlette, Jinja2 templates packaged beside this module).

Every page reads the project file afresh and calls :mod:`mailferry.api` as the CLI does, so the
console and the CLI can be used in turn on one project. Pages are in wizard order (Servers,
Directory, People and accounts, Plan, Run, Results) and each is reachable directly.

Requests: every one but ``/login`` and ``/static`` needs the session cookie; every POST needs the
session's CSRF token. Work that talks to servers runs in Starlette's thread pool; a migrate run in
a worker process (:mod:`mailferry.console.runs`).
"""

from __future__ import annotations

import asyncio
import csv
import getpass
import io
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailferry import api
from mailferry.config.model import Project
from mailferry.console import projectfile
from mailferry.console.runs import Runs, read_events
from mailferry.console.security import COOKIE, Session, Sessions, csrf_ok
from mailferry.engine.public import PUBLIC_UNIT
from mailferry.errors import ConfigError, MailferryError
from mailferry.state.ledger import SqliteLedger, run_lock_holder

STEPS = (
    ("servers", "Servers"),
    ("directory", "Directory"),
    ("people", "People and accounts"),
    ("plan", "Plan"),
    ("run", "Run"),
    ("results", "Results"),
)

# Messages after a successful POST, by code: the redirect carries the code, never user input.
DONE = {
    "servers": "Saved to the project file.",
    "directory": "Saved the containers and rules to the project file.",
    "batch": "Saved the batch to the project file.",
    "batch-deleted": "Removed the batch from the project file.",
    "resolved": "Saved your decision in the project file ([[directory.resolve]]).",
    "started": "The batch is running; progress below. You may close the browser: the run goes on.",
    "cancelled": "The run was cancelled. Start the batch again to resume: nothing is copied twice.",
    "paused": "The run is paused; its connections stay open. Resume it, or cancel it and start again later.",
    "resumed": "The run goes on.",
    "approved": "The approval is recorded in the ledger.",
}

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]

BATCH_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


class SecurityHeaders:
    """Adds the headers of :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def _bytes(n: Any) -> str:
    try:
        v = float(n or 0)
    except (TypeError, ValueError):
        return str(n)
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1000 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000
    return f"{v:.1f} GB"


def _split_dn(dn: str) -> list[str]:
    return [p.strip() for p in re.split(r"(?<!\\),", dn) if p.strip()]


def container_tree(containers: Sequence[Mapping[str, Any]], naming_context: str) -> list[dict[str, Any]]:
    """The discovered containers as a tree (``{"dn", "name", counts, "children"}``), each under the
    nearest discovered container above it, else at the top."""
    nodes = {c["dn"].lower(): {**c, "name": _split_dn(c["dn"])[0], "children": []} for c in containers}
    roots: list[dict[str, Any]] = []
    for c in sorted(containers, key=lambda c: list(reversed([p.lower() for p in _split_dn(c["dn"])]))):
        node = nodes[c["dn"].lower()]
        parts = _split_dn(c["dn"])
        parent = None
        for i in range(1, len(parts)):
            parent = nodes.get(",".join(parts[i:]).lower())
            if parent is not None:
                break
        (parent["children"] if parent is not None else roots).append(node)
    return roots


# -- the readiness verdict --------------------------------------------------------------------------


REFUSALS = ("refused", "skipped")  # findings about an item the target refused: open while outstanding


def verdict(
    accounts: Sequence[str], verify: Mapping[str, Any], report: Mapping[str, Any], since: int | None = None
) -> dict[str, Any]:
    """A batch's readiness for cut-over from ``verify`` (of these accounts) and ``report``.

    ``state``: ``ready`` (migrated, verified clean, no open findings), ``acknowledge`` (verified
    clean, findings open: ready once the admin acknowledges them) or ``not-ready``. Open findings
    are those of every migrate run after run ``since`` (the one the batch's last approval was
    given after; None: every run), but a refusal only while it is outstanding: the refusals still
    outstanding are counted, each once."""
    names = set(accounts)
    reasons: list[str] = []
    migrated = {a["account"] for a in report.get("accounts", []) if a["account"] in names}
    never = sorted(names - migrated)
    if never:
        reasons.append(f"not migrated yet: {', '.join(never)}")
    rows = [r for r in verify.get("accounts", []) if r["account"] in names]
    unclean = sorted(r["account"] for r in rows if not r.get("clean"))
    if unclean:
        reasons.append(f"verify found differences or could not compare: {', '.join(unclean)}")
    unverified = sorted(names - {r["account"] for r in rows} - set(never))
    if unverified:
        reasons.append(f"not verified: {', '.join(unverified)}")
    last_run: dict[str, int] = {}
    for a in report.get("accounts", []):
        if a["account"] in names:
            last_run[a["account"]] = max(last_run.get(a["account"], 0), int(a["run"]))
    commands = {r["run"]: r.get("command") for r in report.get("runs", [])}
    findings = [
        f
        for f in report.get("findings", [])
        if f["account"] in names
        and (since is None or f["run"] > since)
        and commands.get(f["run"], "migrate") == "migrate"
        and f.get("kind") not in REFUSALS
    ]
    outstanding = [o for o in report.get("outstanding", []) if o["account"] in names]
    outstanding += [o for o in report.get("calendars_outstanding", []) if o.get("account") in names]
    open_count = len(findings) + len(outstanding)
    state = "not-ready" if reasons else ("acknowledge" if open_count else "ready")
    return {
        "state": state,
        "reasons": reasons,
        "open_findings": open_count,
        "findings": findings,
        "outstanding": outstanding,
        "last_run": max(last_run.values()) if last_run else None,
        "verified_clean": not unclean and bool(rows) and not unverified,
    }


def result_items(verify: Mapping[str, Any], v: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per item that is not as it should be: verify's discrepancies (mail and calendars)
    and the refusals still outstanding; what the CSV and JSON downloads hold."""
    out: list[dict[str, Any]] = []
    for r in verify.get("accounts", []):
        if r.get("error"):
            out.append({"account": r["account"], "type": "account", "kind": "error", "detail": r["error"]})
        for f in r.get("folders", []):
            for d in f.get("discrepancies", []):
                out.append(
                    {
                        "account": r["account"],
                        "type": "mail",
                        "where": d.get("source_folder") or f.get("source_folder"),
                        "kind": d.get("kind"),
                        "uid": d.get("source_uid"),
                        "message_id": d.get("message_id"),
                        "subject": d.get("subject"),
                        "date": d.get("date"),
                        "size": d.get("size"),
                        "detail": d.get("detail"),
                    }
                )
        for c in (r.get("calendars") or {}).get("collections", []):
            for d in c.get("discrepancies", []):
                out.append(
                    {
                        "account": r["account"],
                        "type": c.get("kind"),
                        "where": c.get("collection"),
                        "kind": d.get("what"),
                        "uid": d.get("item_uid"),
                        "subject": d.get("summary"),
                        "date": d.get("start"),
                        "detail": d.get("detail"),
                    }
                )
        for kind in ("filters", "permissions", "metadata"):
            part = r.get(kind)
            if not part:
                continue
            if part.get("error"):
                out.append({"account": r["account"], "type": kind, "kind": "error", "detail": part["error"]})
            for d in part.get("differences", []):
                out.append(
                    {
                        "account": r["account"],
                        "type": kind,
                        "where": d.get("script") or d.get("source_folder"),
                        "kind": d.get("what") or d.get("kind") or "different",
                        "detail": d.get("message") or _setting_detail(d),
                    }
                )
    for o in v.get("outstanding", []):
        out.append(
            {
                "account": o.get("account"),
                "type": "mail" if "source_folder" in o else "calendar",
                "where": o.get("source_folder") or o.get("collection"),
                "kind": "refused (outstanding)",
                "uid": o.get("source_uid") or o.get("item_uid"),
                "message_id": o.get("message_id"),
                "size": o.get("size"),
                "detail": o.get("message"),
            }
        )
    return out


def _setting_detail(d: Mapping[str, Any]) -> str:
    """A folder setting's difference in words: the ACL identifier's rights or the METADATA
    entry's value, on each side."""
    if "identifier" in d:
        return (
            f"{d.get('identifier')}: rights {d.get('source_rights') or 'none'} expected, "
            f"{d.get('target_rights') or 'none'} on the target ({d.get('target_folder')})"
        )
    return (
        f"{d.get('entry')}: {d.get('source_value')!r} expected, "
        f"{d.get('target_value')!r} on the target ({d.get('target_folder')})"
    )


ACCOUNTS_UPLOAD_LIMIT = 10_000_000


async def read_accounts_upload(upload: UploadFile, f: projectfile.ServersForm) -> None:
    """Put an uploaded accounts CSV into the form in place of the text field's: its problems are
    then named by the file's name and line; a file that is not UTF-8 text, or too big, is refused
    next to the field."""
    name = Path((upload.filename or "").replace("\\", "/")).name[:80] or "uploaded file"
    f.accounts_label = name
    data = await upload.read(ACCOUNTS_UPLOAD_LIMIT + 1)
    f.values["accounts"] = ""
    if len(data) > ACCOUNTS_UPLOAD_LIMIT:
        f.error("accounts", f"{name}: larger than {ACCOUNTS_UPLOAD_LIMIT // 1_000_000} MB; an accounts CSV is smaller")
        return
    try:
        f.values["accounts"] = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        f.error("accounts", f"{name}:{line}: not UTF-8 text; save the CSV as UTF-8 and upload it again")


def csv_cell(value: Any) -> str:
    """A cell as the CSV download writes it: a text a spreadsheet would take for a formula (it
    starts with = + - @, a tab or a carriage return) is prefixed with a single quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def items_csv(items: Sequence[Mapping[str, Any]]) -> str:
    """The result items as the CSV download (one row per item, :data:`ITEM_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ITEM_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for item in items:
        w.writerow({k: csv_cell(item.get(k)) for k in ITEM_COLUMNS})
    return buf.getvalue()


ITEM_COLUMNS = ("account", "type", "where", "kind", "uid", "message_id", "subject", "date", "size", "detail")


class Console:
    """The application's state: the project file's place, the sessions, the runs."""

    def __init__(self, place: Path, *, sessions: Sessions | None = None, secure: bool = False) -> None:
        self.path = projectfile.find_project(place)
        self.sessions = sessions or Sessions()
        self.secure = secure
        self.runs = Runs(self.path.parent / ".mailferry-console" / "runs")
        self.env = Environment(
            loader=PackageLoader("mailferry.console", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["bytes"] = _bytes
        # verify's data by (accounts, deep, the ledger's latest run): other accounts or a new run, verified afresh
        self._verified: dict[tuple[tuple[str, ...], bool, int | None], tuple[float, dict[str, Any]]] = {}

    # -- plumbing ---------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def page(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        session = self.session(request)
        project, problems = projectfile.load(self.path)
        done = DONE.get(request.query_params.get("done", ""))
        html = self.env.get_template(template).render(
            steps=STEPS,
            active=template.removesuffix(".html"),
            csrf=session.csrf if session else "",
            project_path=str(self.path),
            project_problems=ctx.pop("project_problems", problems),
            has_project=project is not None,
            done=done,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    async def form(self, request: Request) -> FormData | None:
        """The POSTed form, or None when its CSRF token is not the session's."""
        session = self.session(request)
        form = await request.form()
        offered = form.get("csrf") or request.headers.get("x-csrf-token")
        if session is None or not csrf_ok(session, offered if isinstance(offered, str) else None):
            return None
        return form

    async def posted(
        self, request: Request, page: str, *, directory: bool = False
    ) -> tuple[FormData, Project] | Response:
        """The POSTed form and the project, or the page refusing them: a CSRF token that is not
        the session's, no project yet (with ``directory``: none with a ``[directory]``)."""
        form = await self.form(request)
        if form is None:
            return self.refused_csrf(request)
        project = self.project()
        if project is None or (directory and project.directory is None):
            return self.no_project(request, page)
        return form, project

    def refused_csrf(self, request: Request) -> HTMLResponse:
        return self.page(
            request,
            "message.html",
            403,
            title="Refused",
            message="This form has expired or did not come from this console (CSRF check). "
            "Reload the page and try again.",
        )

    def project(self) -> Project | None:
        return projectfile.load(self.path)[0]

    def no_project(self, request: Request, title: str) -> HTMLResponse:
        return self.page(
            request,
            "message.html",
            200,
            title=title,
            message="There is no valid project yet: start on the Servers page.",
        )

    def batch_accounts(self, project: Project, batch: str) -> list[str] | None:
        b = project.batches.get(batch)
        return list(b) if b is not None else None

    # -- login ------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        sid = self.sessions.login(request.query_params.get("token", ""))
        if sid is None:
            return self.page(
                request,
                "message.html",
                401,
                title="Log in",
                message="This link is not (or no longer) valid: the login URL works once. "
                "Restart the console (mailferry console) for a new one.",
            )
        r = RedirectResponse("/servers", status_code=303)
        r.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=self.secure, path="/")
        return r

    async def logout(self, request: Request) -> Response:
        if await self.form(request) is None:
            return self.refused_csrf(request)
        self.sessions.logout(request.cookies.get(COOKIE))
        r = self.page(
            request, "message.html", title="Logged out", message="Logged out. Open the start URL to log in again."
        )
        r.delete_cookie(COOKIE, path="/")
        return r

    # -- Servers ----------------------------------------------------------------------------------

    async def servers(self, request: Request) -> Response:
        f = projectfile.form_from_project(self.path)
        return self.page(request, "servers.html", form=f, check=None, accounts=self._account_names())

    def _account_names(self) -> list[str]:
        p = self.project()
        return account_names(p) if p is not None else []

    async def servers_save(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.refused_csrf(request)
        f = projectfile.ServersForm(
            values={k: str(v) for k in projectfile.FIELDS if isinstance(v := form.get(k, ""), str)}
        )
        upload = form.get("accounts_file")
        if isinstance(upload, UploadFile) and (upload.filename or upload.size):
            await read_accounts_upload(upload, f)  # the uploaded file wins over the text field
        project = await run_in_threadpool(projectfile.apply_servers, self.path, f)
        if project is None:
            return self.page(
                request, "servers.html", 400, form=f, check=None, accounts=self._account_names(), failed=True
            )
        return RedirectResponse("/servers?done=servers", status_code=303)

    async def servers_test(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.refused_csrf(request)
        project = self.project()
        f = projectfile.form_from_project(self.path)
        if project is None:
            return self.no_project(request, "Test connection")
        names = account_names(project)
        account = str(form.get("account") or (names[0] if names else ""))
        check: dict[str, Any] = {}
        if not names:
            check["error"] = "The project has no accounts yet: the test logs in as one (People and accounts)."
        elif account not in names:
            check["error"] = "Unknown account: choose one of the list."
        else:
            try:
                check = (await run_in_threadpool(api.check, project, [account])).data
            except MailferryError as e:
                check["error"] = str(e)
        return self.page(request, "servers.html", form=f, check=check, accounts=names, account=account)

    # -- Directory --------------------------------------------------------------------------------

    async def directory(self, request: Request) -> Response:
        project = self.project()
        if project is None:
            return self.no_project(request, "Directory")
        return await self._directory_page(request, project, {})

    async def _directory_page(
        self, request: Request, project: Project, errors: dict[str, str], status: int = 200, **ctx: Any
    ) -> Response:
        if project.directory is None:
            return self.page(request, "directory.html", status, directory=None, errors=errors)
        try:
            found = (await run_in_threadpool(api.directory_discover, project)).data
        except MailferryError as e:
            return self.page(
                request, "directory.html", status, directory=project.directory, error=str(e), errors=errors
            )
        trees = {
            role: container_tree(found[role]["containers"], found[role]["naming_context"])
            for role in ("source", "target")
        }
        return self.page(
            request,
            "directory.html",
            status,
            directory=project.directory,
            found=found,
            trees=trees,
            errors=errors,
            bases={b.lower() for b in project.directory.source.bases},
            container=project.directory.target_container.lower(),
            rules=", ".join(project.directory.rules),
            **ctx,
        )

    async def directory_save(self, request: Request) -> Response:
        got = await self.posted(request, "Directory", directory=True)
        if isinstance(got, Response):
            return got
        form, project = got
        found = (await run_in_threadpool(api.directory_discover, project)).data
        known = {role: {c["dn"].lower(): c["dn"] for c in found[role]["containers"]} for role in ("source", "target")}
        errors: dict[str, str] = {}
        bases = [str(b) for b in form.getlist("bases")]
        unknown = [b for b in bases if b.lower() not in known["source"]]
        if unknown:
            errors["bases"] = f"unknown container(s): {'; '.join(unknown)}; choose from the tree"
        container = str(form.get("target_container", ""))
        if container.lower() not in known["target"]:
            errors["target_container"] = "unknown container: choose one of the target's containers"
        rules = [r.strip() for r in str(form.get("rules", "")).split(",") if r.strip()]
        if not rules:
            errors["rules"] = "give the match rules in order, e.g. sid, x500, smtp, login"
        if not errors:
            try:
                await run_in_threadpool(
                    projectfile.set_directory,
                    self.path,
                    [known["source"][b.lower()] for b in bases],
                    known["target"][container.lower()],
                    rules,
                )
                return RedirectResponse("/directory?done=directory", status_code=303)
            except ConfigError as e:
                errors["rules" if any("rules" in p for p in e.problems) else ""] = "; ".join(e.problems)
        return await self._directory_page(request, project, errors, 400)

    # -- People and accounts ----------------------------------------------------------------------

    def _people(self, project: Project) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Rows of people (with the directory: its plan's outcome; else the accounts CSV)."""
        accounts = {a.source_user: a for a in project.accounts}
        info: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        if project.directory is not None:
            data = api.directory_plan(project).data
            info = {"counts": data["counts"], "preconditions": data["preconditions"], "problems": data["problems"]}
            key = project.directory.account_key
            for p in data["people"]:
                name = p["login"] if key == "login" else p["mail"]
                a = accounts.get(name or "")
                rows.append(
                    {
                        "account": name or "",
                        "target_account": a.target_user if a else None,
                        "has_account": a is not None,
                        "who": p["source"],
                        "mail": p["mail"],
                        "outcome": p["status"],
                        "rule": p["rule"],
                        "target": p["target"],
                        "reason": p["reason"],
                        "candidates": p["candidates"],
                    }
                )
        else:
            for a in project.accounts:
                rows.append(
                    {
                        "account": a.source_user,
                        "target_account": a.target_user,
                        "has_account": True,
                        "who": a.source_user,
                        "mail": "",
                        "outcome": "in accounts CSV",
                        "rule": "",
                        "target": a.target_user,
                        "reason": "listed in the accounts CSV",
                    }
                )
        if "public" in project.items:
            rows.append(
                {
                    "account": PUBLIC_UNIT,
                    "target_account": PUBLIC_UNIT,
                    "has_account": True,
                    "who": "the public (shared) folders",
                    "mail": "",
                    "outcome": "public folders",
                    "rule": "",
                    "target": PUBLIC_UNIT,
                    "reason": "moved once, as their own unit ([public] in the project file)",
                }
            )
        return rows, info

    async def people(self, request: Request) -> Response:
        project = self.project()
        if project is None:
            return self.no_project(request, "People and accounts")
        return await self._people_page(request, project, {}, {})

    async def _people_page(
        self,
        request: Request,
        project: Project,
        errors: dict[str, str],
        values: dict[str, Any],
        status: int = 200,
        **ctx: Any,
    ) -> Response:
        try:
            rows, info = await run_in_threadpool(self._people, project)
        except MailferryError as e:
            return self.page(
                request, "people.html", status, error=str(e), rows=[], info={}, errors=errors, values=values
            )
        outcome = request.query_params.get("outcome", "")
        q = request.query_params.get("q", "").strip().lower()
        outcomes = sorted({r["outcome"] for r in rows})
        shown = [
            r
            for r in rows
            if (not outcome or r["outcome"] == outcome)
            and (not q or any(q in str(r.get(k) or "").lower() for k in ("account", "who", "mail", "target")))
        ]
        return self.page(
            request,
            "people.html",
            status,
            rows=shown,
            total=len(rows),
            info=info,
            outcomes=outcomes,
            outcome=outcome,
            q=q,
            batches=project.batches,
            errors=errors,
            values=values,
            directory=project.directory is not None,
            **ctx,
        )

    async def batch_save(self, request: Request) -> Response:
        got = await self.posted(request, "People and accounts")
        if isinstance(got, Response):
            return got
        form, project = got
        name = str(form.get("batch", "")).strip()
        ticked = [str(a) for a in form.getlist("account")]
        errors: dict[str, str] = {}
        if not BATCH_NAME.fullmatch(name):
            errors["batch"] = "give the batch a name (1 to 64 characters)"
        if not ticked:
            errors["account"] = "tick at least one account: an empty batch is refused"
        known = set(account_names(project))
        if project.directory is not None and ticked:
            rows, _ = await run_in_threadpool(self._people, project)
            known |= {r["account"] for r in rows if r["account"]}
        unknown = [a for a in ticked if a not in known]
        if unknown:
            errors["account"] = f"unknown account(s): {', '.join(unknown)}"
        if not errors:
            # In the accounts CSV's order, whatever order the page listed them in.
            order = {a.source_user: i for i, a in enumerate(project.accounts)}
            ticked = sorted(dict.fromkeys(ticked), key=lambda a: (order.get(a, len(order)), a))
            try:
                await run_in_threadpool(projectfile.set_batch, self.path, name, ticked)
                return RedirectResponse("/people?done=batch", status_code=303)
            except ConfigError as e:
                errors["batch"] = "; ".join(e.problems)
        return await self._people_page(request, project, errors, {"batch": name, "ticked": set(ticked)}, 400)

    async def resolve(self, request: Request) -> Response:
        """Save the admin's decision for an ambiguous or conflicting person: one of the target
        entries the rules found, or a new user. Saved in the project file ([[directory.resolve]])."""
        got = await self.posted(request, "People and accounts", directory=True)
        if isinstance(got, Response):
            return got
        form, project = got
        source, target = str(form.get("source", "")), str(form.get("target", ""))
        rows, _ = await run_in_threadpool(self._people, project)
        row = next((r for r in rows if r["who"] == source and r["outcome"] in ("ambiguous", "conflict")), None)
        errors: dict[str, str] = {}
        if row is None:
            errors["resolve"] = "this person has no open decision (reload the page)"
        elif target != "create" and target not in row["candidates"]:
            errors["resolve"] = "choose one of the target entries the rules found, or a new user"
        if not errors:
            try:
                await run_in_threadpool(projectfile.add_resolution, self.path, source, target)
                return RedirectResponse("/people?done=resolved", status_code=303)
            except ConfigError as e:
                errors["resolve"] = "; ".join(e.problems)
        return await self._people_page(request, project, errors, {}, 400)

    async def directory_apply(self, request: Request) -> Response:
        """``directory apply``: create, merge and address people on the target as planned, and
        write the accounts CSV (as the CLI's command; it takes the project's run lock)."""
        got = await self.posted(request, "People and accounts", directory=True)
        if isinstance(got, Response):
            return got
        form, project = got
        try:
            applied = (await run_in_threadpool(api.directory_apply, project)).data
        except MailferryError as e:
            return await self._people_page(request, project, {"apply": str(e)}, {}, 409)
        project = self.project() or project
        return await self._people_page(request, project, {}, {}, 200, applied=applied)

    async def batch_delete(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.refused_csrf(request)
        project = self.project()
        name = str(form.get("batch", ""))
        if project is None or name not in project.batches:
            return self.page(request, "message.html", 400, title="People and accounts", message="No such batch.")
        await run_in_threadpool(projectfile.set_batch, self.path, name, None)
        return RedirectResponse("/people?done=batch-deleted", status_code=303)

    # -- Plan -------------------------------------------------------------------------------------

    async def plan(self, request: Request) -> Response:
        project = self.project()
        if project is None:
            return self.no_project(request, "Plan")
        batch = request.query_params.get("batch", "")
        ctx: dict[str, Any] = {"batches": project.batches, "batch": batch, "plan": None}
        if batch:
            accounts = self.batch_accounts(project, batch)
            if accounts is None:
                ctx["error"] = "No such batch: choose one of the list."
            else:
                try:
                    ctx["plan"] = (await run_in_threadpool(api.plan, project, accounts)).data
                except MailferryError as e:
                    ctx["error"] = str(e)
        return self.page(request, "plan.html", **ctx)

    # -- Run --------------------------------------------------------------------------------------

    async def run(self, request: Request) -> Response:
        project = self.project()
        if project is None:
            return self.no_project(request, "Run")
        return self._run_page(request, project)

    def _run_page(self, request: Request, project: Project, status: int = 200, **ctx: Any) -> HTMLResponse:
        states = {b: self.runs.status(b) for b in project.batches}
        holder = run_lock_holder(project.ledger_path)
        return self.page(request, "run.html", status, batches=project.batches, states=states, holder=holder, **ctx)

    async def run_start(self, request: Request) -> Response:
        got = await self.posted(request, "Run")
        if isinstance(got, Response):
            return got
        form, project = got
        batch = str(form.get("batch", ""))
        accounts = self.batch_accounts(project, batch)
        if accounts is None:
            return self._run_page(request, project, 400, error="No such batch.", error_batch=batch)
        try:
            # unknown accounts: said now, not in the worker (the public unit is no account)
            api.select_accounts(project, [a for a in accounts if a != PUBLIC_UNIT] or None)
            self.runs.start(project, batch, accounts)
        except MailferryError as e:
            return self._run_page(request, project, 409, error=e.message, hint=e.hint, error_batch=batch)
        return RedirectResponse("/run?done=started", status_code=303)

    async def run_cancel(self, request: Request) -> Response:
        got = await self.posted(request, "Run")
        if isinstance(got, Response):
            return got
        form, project = got
        batch = str(form.get("batch", ""))
        if not self.runs.cancel(batch):
            return self._run_page(request, project, 409, error="This batch is not running.", error_batch=batch)
        await run_in_threadpool(self.runs.wait, batch, 15)
        return RedirectResponse("/run?done=cancelled", status_code=303)

    async def run_pause(self, request: Request) -> Response:
        return await self._run_signal(request, "pause")

    async def run_resume(self, request: Request) -> Response:
        return await self._run_signal(request, "resume")

    async def _run_signal(self, request: Request, what: str) -> Response:
        got = await self.posted(request, "Run")
        if isinstance(got, Response):
            return got
        form, project = got
        batch = str(form.get("batch", ""))
        done = self.runs.pause(batch) if what == "pause" else self.runs.resume(batch)
        if not done:
            why = "This batch is not running." if what == "pause" else "This batch is not paused."
            return self._run_page(request, project, 409, error=why, error_batch=batch)
        return RedirectResponse(f"/run?done={'paused' if what == 'pause' else 'resumed'}", status_code=303)

    async def run_events(self, request: Request) -> Response:
        """Server-sent events: the batch's newest run, from its first event (a reloaded page
        rebuilds its state), then each new one until the run ends."""
        batch = request.query_params.get("batch", "")
        path = self.runs.latest(batch)

        async def stream() -> AsyncIterator[bytes]:
            if path is None:
                yield b'data: {"t": "idle"}\n\n'
                return
            offset = 0
            partial = b""
            quiet = 0.0
            while True:
                try:
                    with open(path, "rb") as fh:
                        fh.seek(offset)
                        chunk = fh.read()
                except OSError:
                    return
                offset += len(chunk)
                partial += chunk
                *lines, partial = partial.split(b"\n")
                ended = False
                for line in lines:
                    if line.strip():
                        yield b"data: " + line + b"\n\n"
                        ended = ended or b'"t": "end"' in line
                if ended:
                    return
                if not lines:
                    quiet += 0.25
                    if quiet >= 10:
                        quiet = 0
                        yield b": keep-alive\n\n"
                    if self.runs.status(batch)["state"] not in ("running", "paused"):
                        # ended without an end line seen yet: give the reaper a moment, then stop
                        await asyncio.sleep(0.5)
                        if not any(e.get("t") == "end" for e in read_events(path)):
                            yield b'data: {"t": "interrupted"}\n\n'
                            return
                        continue
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})

    # -- Results ----------------------------------------------------------------------------------

    def _verify(
        self, project: Project, accounts: list[str], deep: bool, fresh: bool, latest_run: int | None
    ) -> dict[str, Any]:
        key = (tuple(accounts), deep, latest_run)
        cached = self._verified.get(key)
        if cached is not None and not fresh:
            return cached[1]
        data = api.verify(project, accounts, deep=deep).data
        data["verified_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        self._verified[key] = (time.time(), data)
        return data

    def _approvals(self, project: Project, batch: str) -> list[dict[str, Any]]:
        if not project.ledger_path.exists():
            return []
        ledger = SqliteLedger(project.ledger_path, readonly=True)
        try:
            return ledger.approvals(batch)
        finally:
            ledger.close()

    def _results(self, project: Project, batch: str, deep: bool, fresh: bool) -> dict[str, Any]:
        accounts = self.batch_accounts(project, batch)
        if accounts is None:
            return {"error": "No such batch: choose one of the list."}
        rep = api.report(project).data
        latest = max((r["run"] for r in rep["runs"]), default=None)
        ver = self._verify(project, accounts, deep, fresh, latest)
        approvals = self._approvals(project, batch)
        v = verdict(accounts, ver, rep, since=approvals[-1]["last_run"] if approvals else None)
        runs = sorted({a["run"] for a in rep["accounts"] if a["account"] in accounts})
        return {
            "accounts": accounts,
            "verify": ver,
            "verdict": v,
            "items": result_items(ver, v),
            "runs": [r for r in rep["runs"] if r["run"] in runs],
            "account_runs": [a for a in rep["accounts"] if a["account"] in accounts],
            "approvals": approvals,
        }

    async def results(self, request: Request) -> Response:
        project = self.project()
        if project is None:
            return self.no_project(request, "Results")
        batch = request.query_params.get("batch", "")
        deep = request.query_params.get("deep") == "1"
        fresh = request.query_params.get("fresh") == "1"
        ctx: dict[str, Any] = {"batches": project.batches, "batch": batch, "deep": deep, "res": None}
        if batch:
            try:
                ctx["res"] = await run_in_threadpool(self._results, project, batch, deep, fresh)
            except MailferryError as e:
                ctx["error"] = str(e)
        return self.page(request, "results.html", user=getpass.getuser(), columns=ITEM_COLUMNS, **ctx)

    async def results_download(self, request: Request) -> Response:
        project = self.project()
        if project is None:
            return self.no_project(request, "Results")
        batch = request.query_params.get("batch", "")
        fmt = request.query_params.get("format", "json")
        deep = request.query_params.get("deep") == "1"
        try:
            res = await run_in_threadpool(self._results, project, batch, deep, False)
        except MailferryError as e:
            return self.page(request, "message.html", 503, title="Results", message=str(e))
        if "error" in res:
            return self.page(request, "message.html", 404, title="Results", message=res["error"])
        stem = "results-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", batch) or "batch")
        if fmt == "csv":
            body, media = items_csv(res["items"]), "text/csv; charset=utf-8"
        else:
            out = {
                "batch": batch,
                "accounts": res["accounts"],
                "verdict": {k: v for k, v in res["verdict"].items() if k not in ("findings", "outstanding")},
                "items": res["items"],
                "verify": res["verify"],
                "approvals": res["approvals"],
            }
            body, media = json.dumps(out, indent=2, sort_keys=True, default=str), "application/json"
            fmt = "json"
        return Response(body, media_type=media, headers={"content-disposition": f'attachment; filename="{stem}.{fmt}"'})

    async def approve(self, request: Request) -> Response:
        got = await self.posted(request, "Results")
        if isinstance(got, Response):
            return got
        form, project = got
        batch = str(form.get("batch", ""))
        who = str(form.get("approved_by", "")).strip()
        ack = form.get("acknowledge") == "yes"
        deep = form.get("deep") == "1"
        errors: dict[str, str] = {}
        if not who or len(who) > 100 or re.search(r"[\x00-\x1f\x7f]", who):
            errors["approved_by"] = "who approves: your name (up to 100 characters)"
        holder = run_lock_holder(project.ledger_path)
        if holder is not None:
            errors[""] = f"a run is using this project ({holder}): approve once it has finished and been verified"
        res = await run_in_threadpool(self._results, project, batch, deep, True)  # verified afresh
        if "error" in res:
            return self.page(request, "message.html", 404, title="Results", message=res["error"])
        v = res["verdict"]
        if v["state"] == "not-ready":
            errors[""] = "not ready for cut-over: " + "; ".join(v["reasons"])
        elif v["state"] == "acknowledge" and not ack:
            errors["acknowledge"] = f"acknowledge the {v['open_findings']} open findings to approve with them"
        elif v["state"] == "acknowledge" and str(form.get("open_findings", "")) != str(v["open_findings"]):
            errors["acknowledge"] = (
                f"there are {v['open_findings']} open findings now, not the {form.get('open_findings') or 'number'} "
                "you acknowledged: look at them and acknowledge again"
            )
        if errors:
            ctx = {"batches": project.batches, "batch": batch, "deep": deep, "res": res, "errors": errors, "who": who}
            return self.page(request, "results.html", 400, user=getpass.getuser(), columns=ITEM_COLUMNS, **ctx)
        ledger = SqliteLedger(project.ledger_path)
        try:
            ledger.record_approval(
                batch,
                res["accounts"],
                who,
                datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                {
                    "state": v["state"],
                    "verified_clean": v["verified_clean"],
                    "open_findings": v["open_findings"],
                    "verified_at": res["verify"].get("verified_at"),
                    "deep": deep,
                },
                acknowledged=v["open_findings"] if ack else 0,
                last_run=v["last_run"],
            )
        finally:
            ledger.close()
        return RedirectResponse(f"/results?batch={_q(batch)}&done=approved", status_code=303)


def account_names(project: Project) -> list[str]:
    """What a batch or the connection test may name: the accounts, then the public folders'
    unit when the project moves them."""
    return [a.source_user for a in project.accounts] + ([PUBLIC_UNIT] if "public" in project.items else [])


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


class RequireLogin:
    """Every request but the login and the static files needs a session."""

    OPEN = ("/login", "/static/")

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.OPEN):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.console.session(request) is None:
            r = HTMLResponse(
                self.console.env.get_template("message.html").render(
                    steps=(),
                    csrf="",
                    title="Log in",
                    message="Log in with the URL the console printed when it started (it holds a one-time token; "
                    "once used, restart the console for a new one).",
                ),
                status_code=401,
            )
            await r(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(console: Console) -> ASGIApp:
    c = console

    def route(path: str, fn: Callable[[Request], Awaitable[Response]], methods: list[str] | None = None) -> Route:
        return Route(path, fn, methods=methods or ["GET"])

    async def home(request: Request) -> Response:
        return RedirectResponse("/servers", status_code=303)

    async def refused(request: Request, exc: Exception) -> Response:
        """A server, a lock or the project said no where a page did not expect it: its words and
        the next step, not a bare 500 (MailferryError messages hold no secret)."""
        e = exc if isinstance(exc, MailferryError) else MailferryError(str(exc))
        status = 409 if e.fault == "usage" else (400 if e.fault == "config" else 503)
        return c.page(request, "message.html", status, title="Could not do that", message=str(e))

    static = Path(__file__).parent / "static"
    app = Starlette(
        exception_handlers={MailferryError: refused},
        routes=[
            route("/", home),
            route("/login", c.login),
            route("/logout", c.logout, ["POST"]),
            route("/servers", c.servers),
            route("/servers", c.servers_save, ["POST"]),
            route("/servers/test", c.servers_test, ["POST"]),
            route("/directory", c.directory),
            route("/directory", c.directory_save, ["POST"]),
            route("/people", c.people),
            route("/batches", c.batch_save, ["POST"]),
            route("/batches/delete", c.batch_delete, ["POST"]),
            route("/people/resolve", c.resolve, ["POST"]),
            route("/people/apply", c.directory_apply, ["POST"]),
            route("/plan", c.plan),
            route("/run", c.run),
            route("/run/start", c.run_start, ["POST"]),
            route("/run/cancel", c.run_cancel, ["POST"]),
            route("/run/pause", c.run_pause, ["POST"]),
            route("/run/resume", c.run_resume, ["POST"]),
            route("/run/events", c.run_events),
            route("/results", c.results),
            route("/results/download", c.results_download),
            route("/results/approve", c.approve, ["POST"]),
            Mount("/static", app=StaticFiles(directory=static), name="static"),
        ],
    )
    return SecurityHeaders(RequireLogin(app, c))
