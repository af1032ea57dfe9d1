"""Readable terminal output for people (``--json`` gives the same data for machines)."""

from __future__ import annotations

from typing import Any, TypeGuard

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _console() -> Console:
    c = Console(highlight=False, soft_wrap=True)
    if not c.is_terminal:
        c.width = 160  # logs and pipes: do not squeeze tables into 80 columns
    return c


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check(data: dict[str, Any]) -> None:
    c = _console()
    for a in data["accounts"]:
        state = a.get("verdict", "ready" if a["ready"] else "blocked")
        c.print(f"[bold]{a['account']}[/bold] -> {a['target_account']}: {_verdict(state)}")
        for role in ("source", "target"):
            s = a.get(role, {})
            if not s.get("ok"):
                c.print(f"  {role}: [red]{s.get('error', 'not checked')}[/red]")
                continue
            caps = s["capabilities"]
            have = ", ".join(k for k, v in caps.items() if v) or "-"
            lack = ", ".join(k for k, v in caps.items() if not v) or "-"
            ns = s["namespace"]
            line = (
                f"  {role}: security {s['tls']}; namespace {ns['prefix']!r} separator {ns['separator']!r}; "
                f"{s['folders']} folders"
            )
            if role == "source":
                line += f", {s['messages']} messages, {human_bytes(s['bytes'])}"
            if s.get("quota_limit_kb") is not None:
                line += f"; quota {s['quota_used_kb']}/{s['quota_limit_kb']} KiB"
            c.print(line)
            c.print(f"    has: {have}")
            c.print(f"    lacks: {lack}")
        for w in a["warnings"]:
            c.print(f"  [yellow]warning:[/yellow] {w}")
        _dav_check(c, a.get("calendars"))
        _filters_check(c, a.get("filters"))
    target = data.get("target", {})
    for x in target.get("collisions", []):
        where = ", ".join(f"{a} ({f})" for a, f in zip(x["accounts"], x["folders"], strict=True))
        c.print(f"[red]mailbox shared on the target[/red]: {where}: mailbox id {x['mailbox_id']}")
    for risk in target.get("risks", []):
        c.print(f"[yellow]target:[/yellow] {risk}")
    areas(c, data)


_STATUS_STYLE = {"ok": "[green]ok[/green]", "warning": "[yellow]warning[/yellow]", "blocked": "[red]blocked[/red]"}


def _verdict(v: str) -> str:
    colour = {"ready": "green", "ready with warnings": "yellow"}.get(v, "red")
    return f"[{colour}]{v.upper() if colour == 'red' else v}[/{colour}]"


def areas(c: Any, data: dict[str, Any]) -> None:
    """The areas of a readiness or cut-over report: each with its verdict and its checks (one line
    each; a check that is not ok with its fix on the next), then the report's verdict."""
    for area in data.get("areas", []):
        c.print(f"[bold]{area['area']}[/bold]: {_verdict(area['verdict'])}")
        for x in area["checks"]:
            who = f"{x['account']}: " if x.get("account") else ""
            text = escape(f"{who}{x['subject']}: {x['what']}")
            c.print(f"  {_STATUS_STYLE[x['status']]} {text}", highlight=False)
            if x.get("fix"):
                c.print(f"      fix: {escape(x['fix'])}", highlight=False)
    if "verdict" in data:
        c.print(f"verdict: {_verdict(data['verdict'])}")


def plan(data: dict[str, Any]) -> None:
    c = _console()
    for a in data["accounts"]:
        if "error" in a:
            c.print(f"[bold]{a['account']}[/bold]: [red]{a['error']}[/red]")
            continue
        size = human_bytes(a["bytes"])
        t = Table(title=f"{a['account']} -> {a['target_account']}: {a['messages']} messages, {size} to copy")
        for col in ("source folder", "target folder", "copy", "bytes", "on target", "flags", "skips"):
            t.add_column(col)
        for f in a["folders"]:
            t.add_row(
                f["source_folder"],
                f["target_folder"] or "(skipped)",
                str(f["copy"]),
                human_bytes(f["bytes"]),
                str(f["already_on_target"]),
                str(f["flag_updates"]),
                str(len(f["skips"])),
            )
        c.print(t)
        for f in a["folders"]:
            c.print(f"  {f['source_folder']} -> {f['target_folder'] or '(skipped)'}: {f['rule']}")
        for f in a["folders"]:
            for n in f["notes"]:
                c.print(f"  note: {f['source_folder']}: {n}")
            for s in f["skips"]:
                c.print(f"  skip: {f['source_folder']} UID {s['source_uid']} {s['message_id']}: {s['reason']}")
        _permissions_plan(c, a.get("permissions"))
        _metadata_plan(c, a.get("metadata"))
        _dav_plan(c, a)
        _filters_plan(c, a.get("filters"))
    c.print(f"total to copy: {data['copy']} messages")


def migrate(data: dict[str, Any]) -> None:
    c = _console()
    t = Table(title=f"run {data['run']}: {data['seconds']:.1f} s")
    for col in (
        "account",
        "status",
        "copied",
        "bytes",
        "already there",
        "skipped",
        "refused",
        "outstanding",
        "flags",
        "deleted",
        "seconds",
        "rate",
    ):
        t.add_column(col)
    for a in data["accounts"]:
        rate = f"{a['copied'] / a['seconds']:.0f} msg/s" if a["seconds"] else "-"
        t.add_row(
            a["account"],
            a["status"] + (" (source changed)" if a["source_changed"] else ""),
            str(a["copied"]),
            human_bytes(a["bytes"]),
            str(a["matched"]),
            str(a["skipped"]),
            str(a["refused"]),
            str(a["outstanding"]),
            str(a["flag_updates"]),
            str(a["deleted"]),
            f"{a['seconds']:.1f}",
            rate,
        )
    c.print(t)
    for a in data["accounts"]:
        if "public" in a:  # the public folders' unit: each user's own state on them
            p = a["public"]
            c.print(
                f"  {a['account']}: per user \\Seen added {p['seen_added']}, taken back {p['seen_removed']}, "
                f"subscriptions {p['subscribed']} ({len(p['users'])} users)"
            )
    _dav_migrate(c, data)
    for f in data["findings"]:
        c.print(f"  [yellow]{f['kind']}[/yellow]: {f['message']}")
    for a in data["accounts"]:
        if a["error"]:
            c.print(f"  [red]{a['account']} failed[/red]: {a['error']}")
        d = a.get("calendars") or {}
        if d.get("error"):
            c.print(f"  [red]{a['account']} calendars and contacts failed[/red]: {d['error']}")
        f = a.get("filters")
        if f is not None:
            _filters_line(c, a["account"], f)
        for kind, what in (("permissions", "folder permissions"), ("metadata", "folder metadata")):
            p = a.get(kind) or {}
            if p.get("error"):
                c.print(f"  [red]{a['account']} {what} failed[/red]: {p['error']}")
    if "permissions" in data:
        s = data["permissions"]
        c.print(
            f"folder permissions: {s['set']} entries set, {s['deleted']} withdrawn, {s['refused']} refused, "
            f"{s['findings']} findings"
        )
    if "metadata" in data:
        s = data["metadata"]
        c.print(f"folder metadata: {s['set']} entries set, {s['removed']} removed, {s['refused']} refused")


def verify(data: dict[str, Any]) -> None:
    c = _console()
    for a in data["accounts"]:
        if "error" in a:
            c.print(f"[bold]{a['account']}[/bold]: [red]{a['error']}[/red]")
            continue
        verdict = "clean" if a["clean"] else "DIFFERENCES"
        c.print(f"[bold]{a['account']}[/bold] -> {a['target_account']}: {verdict}")
        for f in a["folders"]:
            mark = "ok" if f["clean"] else "!!"
            c.print(
                f"  {mark} {f['source_folder']} -> {f['target_folder']}: source {f['source_messages']} msgs "
                f"{human_bytes(f['source_bytes'])}, target {f['target_messages']} msgs {human_bytes(f['target_bytes'])}"
                + (f", {f['excluded']} excluded by policy" if f["excluded"] else "")
            )
            for d in f["discrepancies"]:
                c.print(
                    f"     {d['kind']}: UID {d['source_uid']} (target UID {d['target_uid']}) "
                    f"{d['message_id'] or '(no Message-ID)'} "
                    f"{d['date']!r} {d['subject']!r} {d['size']} bytes {d['detail']}"
                )
        _permissions_verify(c, a.get("permissions"))
        _metadata_verify(c, a.get("metadata"))
        _dav_verify(c, a.get("calendars"))
        f = a.get("filters")
        if f is not None:
            c.print(
                f"  filters (Sieve): {'clean' if f.get('clean') else 'DIFFERENCES'}"
                + (f": {f['error']}" if f.get("error") else "")
            )
            for d in f.get("differences", []):
                c.print(f"     {d['what']}: {d['message']}")
    c.print(
        ("verification (deep, SHA-256): " if data["deep"] else "verification: ")
        + ("CLEAN" if data["clean"] else "DIFFERENCES FOUND")
    )


def report(data: dict[str, Any]) -> None:
    c = _console()
    t = Table(title="runs")
    for col in ("run", "command", "started", "finished", "exit", "copied", "bytes", "seconds"):
        t.add_column(col)
    for r in data["runs"]:
        s = r["summary"] or {}
        t.add_row(
            str(r["run"]),
            r["command"],
            r["started_at"],
            r["finished_at"] or "(interrupted)",
            str(r["exit_code"]),
            str(s.get("copied", "")),
            human_bytes(s.get("bytes", 0)),
            str(s.get("seconds", "")),
        )
    c.print(t)
    t = Table(title="accounts per run")
    for col in (
        "run",
        "account",
        "target",
        "status",
        "copied",
        "bytes",
        "already there",
        "skipped",
        "refused",
        "seconds",
        "rate",
    ):
        t.add_column(col)
    for a in data["accounts"]:
        rate = f"{a['bytes'] / a['seconds'] / 1e6:.1f} MB/s" if a["seconds"] else "-"
        t.add_row(
            str(a["run"]),
            a["account"],
            a["target_account"],
            a["status"],
            str(a["copied"]),
            human_bytes(a["bytes"]),
            str(a["matched"]),
            str(a["skipped"]),
            str(a["refused"]),
            f"{a['seconds']:.1f}",
            rate,
        )
    c.print(t)
    for f in data["findings"]:
        c.print(f"  {f['kind']}: {f['message']}")
    if data["outstanding"]:
        t = Table(title=f"outstanding: {len(data['outstanding'])} messages the target refused and still lacks")
        for col in ("account", "folder", "UID", "bytes", "last tried in run", "why"):
            t.add_column(col)
        for o in data["outstanding"]:
            why = (o["details"] or {}).get("server") or o["message"] or ""
            t.add_row(o["account"], o["source_folder"], str(o["source_uid"]), str(o["size"]), str(o["run"]), why)
        c.print(t)
    dav = data.get("calendars_outstanding") or []
    if dav:
        t = Table(title=f"outstanding: {len(dav)} calendar items and contacts the target refused and still lacks")
        for col in ("account", "collection", "UID", "source item", "last tried in run"):
            t.add_column(col)
        for o in dav:
            t.add_row(o["account"], o["collection"], o["item_uid"], o["source_href"], str(o["run"]))
        c.print(t)
    if data.get("calendars_ledger"):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(data["calendars_ledger"].items()))
        c.print(f"calendar items and contacts in the ledger: {counts}")
    if data.get("approvals"):
        t = Table(title="batches approved for cut-over")
        for col in ("batch", "accounts", "approved by", "at", "verdict", "findings acknowledged", "after run"):
            t.add_column(col)
        for a in data["approvals"]:
            t.add_row(
                a["batch"],
                ", ".join(a["accounts"]),
                a["approved_by"],
                a["approved_at"],
                str(a["verdict"].get("state", "")),
                str(a["acknowledged"]),
                str(a["last_run"] or ""),
            )
        c.print(t)


def directory_discover(data: dict[str, Any]) -> None:
    c = _console()
    for role in ("source", "target"):
        side = data[role]
        t = Table(title=f"{role} directory ({side['naming_context']})")
        for col in ("container", "users", "contacts", "groups"):
            t.add_column(col)
        for ct in side["containers"]:
            t.add_row(ct["dn"], str(ct["users"]), str(ct["contacts"]), str(ct["groups"]))
        c.print(t)


_CHECK_MARK = {True: "ok", False: "[red]FAILS[/red]", None: "[yellow]not checked[/yellow]"}


def _preconditions(c: Console, rows: list[dict[str, Any]]) -> None:
    for p in rows:
        c.print(f"  {_CHECK_MARK[p['ok']]}: ", end="")
        c.print(p["message"], markup=False, highlight=False)


def directory_plan(data: dict[str, Any]) -> None:
    """The outcome summary first; then what the target allows; then the people the admin must
    decide on (ambiguous, conflict), each reason in full; then the others and the actions."""
    c = _console()
    counts = data["counts"]
    order = ["ambiguous", "conflict", "contact_to_merge", "to_create", "matched"]
    summary = ", ".join(f"{k} {counts[k]}" for k in order if k in counts) or "nobody to migrate"
    c.print(f"[bold]{data['source_people']} source people, {data['target_people']} target people:[/bold] {summary}")
    blocked = [p for p in data["preconditions"] if p["ok"] is False]
    c.print("preconditions" + (": [red]apply would write nothing[/red]" if blocked else ":"))
    _preconditions(c, data["preconditions"])
    if data.get("outcome_filter"):
        c.print(f"people with outcome {', '.join(data['outcome_filter'])}:")
    rank = {k: i for i, k in enumerate(order)}
    for p in sorted(data["people"], key=lambda p: rank.get(p["status"], len(order))):
        head = f"{p['status']}" + (f" ({p['rule']})" if p["rule"] else "")
        c.print(f"[bold]{head}[/bold]: ", end="")
        where = f" -> {p['target']}" if p["target"] else ""
        c.print(f"{p['source']}{where}: {p['reason']}", markup=False, highlight=False)
    if data["actions"]:
        c.print("actions:")
    for a in data["actions"]:
        what = a.get("dn") or a.get("source")
        c.print(f"  {a['action']}: {what}: {a['reason']}", markup=False, highlight=False)
        for n in [*a.get("notes", []), *(f"not copied: {x}" for x in a.get("not_copied", []))]:
            c.print(f"    {n}", markup=False, highlight=False)
    for n in data["notes"] + data["problems"]:
        c.print("  [yellow]note:[/yellow] ", end="")
        c.print(n, markup=False, highlight=False)


def directory_apply(data: dict[str, Any]) -> None:
    c = _console()
    if data["blocked"]:
        c.print(f"run {data['run']}: [red]nothing was written[/red]: the target does not allow the plan")
        _preconditions(c, [p for p in data["preconditions"] if p["ok"] is not True])
        return
    c.print(
        f"run {data['run']}: created {data['created']}, contacts merged {data['merged']}, "
        f"addresses added to {data['addresses_added']}, mail attributes set on {data['mail_attributes_set']}, "
        f"managers set {data['managers_set']}, skipped {data['skipped']}, refused {data['failed']}, "
        f"not attempted {data['not_attempted']}; mailboxes confirmed {data['mailboxes_confirmed']}, "
        f"not alive {data['mailboxes_not_alive']} ({data['seconds']:.1f} s)"
    )
    for f in data["findings"]:
        c.print(f"  [yellow]{f['kind']}[/yellow]: ", end="")
        c.print(f["message"] + (f" ({f['hint']})" if f["hint"] else ""), markup=False, highlight=False)
    if data["accounts_csv"]:
        c.print(f"accounts for migrate written to {data['accounts_csv']}")


def directory_restore(data: dict[str, Any]) -> None:
    c = _console()
    c.print(f"run {data['run']}: {len(data['restored'])} contacts restored")
    for r in data["restored"]:
        c.print(f"  {r['contact']} (merged into {r['user']}), back in {len(r['groups'])} groups", markup=False)
    for f in data["findings"]:
        c.print(f"  [yellow]{f['kind']}[/yellow]: ", end="")
        c.print(f["message"], markup=False, highlight=False)
    if data["ldif"]:
        c.print(f"their LDIF: {data['ldif']}", markup=False)


def directory_prepare(data: dict[str, Any]) -> None:
    """The LDIF first (what mailferry adds, then what the admin must), then each step with who
    takes it and its state, then the directory checks as ``check`` shows them."""
    c = _console()
    if data["ldif"]:
        done = "added" if data["applied"] else "would add (run with --apply)"
        c.print(f"[bold]LDIF mailferry {done}:[/bold]")
        c.print(data["ldif"], markup=False, highlight=False)
    if data["admin_ldif"]:
        c.print("[bold]LDIF for the directory admin (mailferry does not apply it):[/bold]")
        c.print(data["admin_ldif"], markup=False, highlight=False)
    if not data["steps"]:
        c.print(f"the target directory has what the directory plan needs in {data['target_container']}", markup=False)
    for st in data["steps"]:
        style = {"done": "green", "to do": "yellow", "admin": "red", "refused": "red"}.get(st["state"], "red")
        c.print(f"[{style}]{st['state']}[/{style}] {escape(st['kind'])} {escape(st['subject'])}: ", end="")
        c.print(st["what"], markup=False, highlight=False)
        if st["state"] in ("admin", "refused", "to do"):
            c.print(f"    fix: {st['fix']}", markup=False, highlight=False)
        if st.get("message"):
            c.print(f"    {st['message']}", markup=False, highlight=False)
    areas(c, {"areas": [{"area": "directory", "verdict": _worst(data["checks"]), "checks": data["checks"]}]})


def _worst(checks: list[dict[str, Any]]) -> str:
    statuses = {x["status"] for x in checks}
    return "blocked" if "blocked" in statuses else "ready with warnings" if "warning" in statuses else "ready"


# -- folder permissions (IMAP ACL) -----------------------------------------------------------------


def _part_opening(p: dict[str, Any] | None, c: Console, label: str) -> TypeGuard[dict[str, Any]]:
    """The opening of an account's part (permissions, metadata): nothing when absent, its
    error when it failed (then nothing more), its note; True when its lines follow."""
    if not p:
        return False
    if p.get("error"):
        c.print(f"  {label}: [red]{p['error']}[/red]")
        return False
    if p.get("note"):
        c.print(f"  {label}: {p['note']}")
    return True


def _permissions_plan(c: Console, p: dict[str, Any] | None) -> None:
    """The ACL changes per folder: each entry to set (as the target will hold it), to withdraw,
    and what is not carried, with the reason."""
    if not _part_opening(p, c, "folder permissions"):
        return
    for s in p.get("setacl", []):
        left = f" [yellow](the target can't grant {s['left_out']!r})[/yellow]" if s["left_out"] else ""
        c.print(
            f"  acl: {s['source_folder']} -> {s['target_folder']}: set {s['identifier']} {s['rights']!r} "
            f"(source: {s['source_identifier']} {s['source_rights']!r}; {s['reason']}){left}"
        )
    for d in p.get("deleteacl", []):
        c.print(f"  acl: {d['source_folder']} -> {d['target_folder']}: withdraw {d['identifier']} ({d['reason']})")
    for s in p.get("skip", []):
        if s["finding"]:
            c.print(
                f"  acl: {s['source_folder']}: [yellow]not carried[/yellow] {s['source_identifier']} "
                f"{s['source_rights']!r}: {s['reason']}"
            )


def _permissions_verify(c: Console, p: dict[str, Any] | None) -> None:
    if not _part_opening(p, c, "folder permissions"):
        return
    for d in p["differences"]:
        c.print(
            f"  !! acl {d['source_folder']} -> {d['target_folder']}: {d['identifier']} {d['kind']}: "
            f"source {d['source_rights']!r}, target {d['target_rights']!r}"
        )


def _metadata_plan(c: Console, p: dict[str, Any] | None) -> None:
    if not _part_opening(p, c, "folder metadata"):
        return
    for s in p.get("changes", []):
        c.print(f"  metadata: {s['source_folder']} -> {s['target_folder']}: {s['action']} {s['entry']} ({s['reason']})")


def _metadata_verify(c: Console, p: dict[str, Any] | None) -> None:
    if not _part_opening(p, c, "folder metadata"):
        return
    for d in p["differences"]:
        c.print(
            f"  !! metadata {d['source_folder']} -> {d['target_folder']}: {d['entry']}: "
            f"source {d['source_value']!r}, target {d['target_value']!r}"
        )


# -- calendars and contacts ------------------------------------------------------------------------


def _dav_check(c: Console, d: dict[str, Any] | None) -> None:
    if d is None:
        return
    if "error" in d:
        c.print(f"  calendars and contacts: [red]{d['error']}[/red]")
        return
    for role in ("source", "target"):
        s = d.get(role) or {}
        if not s.get("ok"):
            c.print(f"  {role} DAV: [red]{s.get('error', 'not checked')}[/red]")
            continue
        what = f"{s['calendars']} calendars, {s['addressbooks']} address books"
        line = f"  {role} DAV: {s['product'] or 'server'}; {what}"
        if "items" in s:
            line += f", {s['items']} items"
        if s["schedules"]:
            line += "; schedules on import (calendar-auto-schedule)"
        c.print(line)
    if d.get("scheduling"):
        how = "marked SCHEDULE-AGENT=CLIENT" if d["scheduling"] == "marked" else "imported unchanged"
        c.print(f"  meetings: {how}")
    for w in d["warnings"]:
        c.print(f"  [yellow]warning:[/yellow] {w}")
    for p in d["problems"]:
        c.print(f"  [red]problem:[/red] {p}")


def _dav_plan(c: Console, a: dict[str, Any]) -> None:
    d = a.get("calendars")
    if d is None:
        return
    if "error" in d:
        c.print(f"  calendars and contacts: [red]{d['error']}[/red]")
        return
    t = Table(title=f"{a['account']}: calendars and address books (meetings {d['scheduling']})")
    for col in ("collection", "kind", "target", "copy", "update", "remove", "unchanged", "retry refused"):
        t.add_column(col)
    for x in d["collections"]:
        target = x["target_href"] + (" (new)" if x["create"] else "")
        row = (x["copy"], x["update"], x["remove"], x["unchanged"], x["retry_refused"])
        t.add_row(x["collection"], x["kind"], target, *map(str, row))
    c.print(t)


def _dav_migrate(c: Console, data: dict[str, Any]) -> None:
    rows = [(a["account"], a["calendars"]) for a in data["accounts"] if "calendars" in a and "copied" in a["calendars"]]
    if not rows:
        return
    t = Table(title="calendars and contacts")
    cols = ("account", "collections", "new", "copied", "updated", "already there", "refused", "outstanding")
    for col in (*cols, "rewritten", "meetings marked", "shares", "seconds"):
        t.add_column(col)
    for name, d in rows:
        t.add_row(
            name,
            str(d["collections"]),
            str(d["collections_created"]),
            str(d["copied"]),
            str(d["updated"]),
            str(d["matched"]),
            str(d["refused"]),
            str(d["outstanding"]),
            str(d["rewritten"]),
            str(d["marked"]),
            str(d["shares"]),
            f"{d['seconds']:.1f}",
        )
    c.print(t)
    if any(d["marked"] for _, d in rows):
        c.print(
            "  [yellow]meetings marked SCHEDULE-AGENT=CLIENT[/yellow]: the target would have notified their attendees; "
            "it will not schedule later updates of these meetings either (see the README: pause scheduling instead)"
        )


def _dav_verify(c: Console, d: dict[str, Any] | None) -> None:
    if d is None:
        return
    if "error" in d:
        c.print(f"  calendars and contacts: [red]{d['error']}[/red]")
        return
    for x in d["collections"]:
        mark = "ok" if x["clean"] else "!!"
        c.print(f"  {mark} {x['kind']} {x['collection']}: source {x['source_items']} items, target {x['target_items']}")
        for y in x["discrepancies"]:
            what = " ".join(str(y[k]) for k in ("item_uid", "summary", "start") if y.get(k))
            c.print(f"     {y['what']}: {what} {y['detail']}")


# -- mail filters (Sieve) ---------------------------------------------------------------------------


def _filters_check(c: Console, f: dict[str, Any] | None) -> None:
    if f is None:
        return
    for role in ("source", "target"):
        s = f.get(role) or {}
        if not s.get("ok"):
            c.print(f"  filters {role}: [red]{s.get('error', 'not checked')}[/red]")
            continue
        c.print(
            f"  filters {role}: {s['implementation'] or 'ManageSieve'}; {s['scripts']} scripts, active "
            f"{s['active'] or '-'}; extensions: {', '.join(s['extensions'])}"
        )
    for w in f.get("warnings", []):
        c.print(f"  [yellow]warning:[/yellow] {w}")


def _filters_line(c: Console, account: str, f: dict[str, Any]) -> None:
    if f.get("error"):
        c.print(f"  [red]{account} filters failed[/red]: {f['error']}")
        return
    c.print(
        f"  {account} filters: {f['put']} put, {f['unchanged']} unchanged, {f['refused']} refused, "
        f"{f['activated']} activated"
    )


def _filters_plan(c: Console, f: dict[str, Any] | None) -> None:
    if f is None:
        return
    if f.get("error"):
        c.print(f"  filters: [red]{f['error']}[/red]")
        return
    for p in f.get("plan", []):
        words = f" — the target refuses it: {p['refused']}" if p.get("refused") else ""
        c.print(f"  filter {p['script']!r}: {p['action']} ({p['reason']}){words}")
        if p.get("diff"):
            c.print(p["diff"], markup=False, highlight=False, end="")


def cutover_check(data: dict[str, Any]) -> None:
    c = _console()
    if data.get("simulate_offline"):
        c.print("mailferry refused itself every connection to the source for this check")
    areas(c, data)
