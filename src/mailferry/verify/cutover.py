"""What still depends on the old server (pure): the judging behind ``mailferry cutover check``.

Inputs are plain data read from the target and the ledger; each dependency found is one
:class:`~mailferry.model.readiness.Check` with what breaks when the source is switched off and
the fix. ``old_hosts`` are the source's host names (``[organization] source_names`` and the
hosts of ``[source]``); ``moved(address)`` gives the new address of an old one that moved (the
identity map, ``[calendars.addresses]``, ``[calendars.domains]``), None for addresses that did not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from mailferry.model.readiness import Check, Status

Moved = Callable[[str], "str | None"]

_URL = re.compile(rb"(?i)\b(?:https?|webcals?|caldavs?|carddavs?|imaps?|ldaps?)://([a-z0-9.\-\[\]:]+)")
_MAILTO = re.compile(rb"(?i)mailto:([^\s;:,\"<>]+@[^\s;:,\"<>]+)")
_EMAIL_LINE = re.compile(rb"(?im)^(?:item\d+\.)?EMAIL[^:\r\n]*:([^\r\n]+)")


def _host(netloc: bytes) -> str:
    text = netloc.decode("ascii", "replace").lower()
    if text.startswith("["):
        return text[1 : text.find("]")]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def item_dependencies(data: bytes, old_hosts: Collection[str], moved: Moved) -> tuple[list[str], list[tuple[str, str]]]:
    """(old host names an item's links lead to, [(old address, its new address)] it still names)."""
    unfolded = data.replace(b"\r\n ", b"").replace(b"\n ", b"")
    hosts = sorted({h for m in _URL.finditer(unfolded) if (h := _host(m.group(1))) in old_hosts})
    addresses = [m.group(1).decode("utf-8", "replace") for m in _MAILTO.finditer(unfolded)]
    addresses += [m.group(1).decode("utf-8", "replace").strip() for m in _EMAIL_LINE.finditer(unfolded)]
    old = sorted({(a, new) for a in addresses if (new := moved(a)) is not None and new.lower() != a.lower()})
    return hosts, old


def dav_item_checks(
    account: str, collection: str, kind: str, href: str, data: bytes, old_hosts: Collection[str], moved: Moved
) -> list[Check]:
    hosts, old = item_dependencies(data, old_hosts, moved)
    out: list[Check] = []
    what_item = "calendar item" if kind == "calendar" else "contact"
    name = href.rstrip("/").rsplit("/", 1)[-1]
    subject = f"{what_item} {collection}/{name}"
    if hosts:
        out.append(
            Check(
                "data",
                subject,
                "blocked",
                f"the {what_item} links to the source server ({', '.join(hosts)}): the link (a meeting room, an "
                "attachment, a subscription, a free/busy URL) breaks when the source is switched off",
                "point the link at the target (or copy what it names there) and edit the item on the target",
                account=account,
                facts={"hosts": hosts, "href": href},
            )
        )
    if old:
        pairs = ", ".join(f"{a} (now {n})" for a, n in old)
        out.append(
            Check(
                "data",
                subject,
                "blocked",
                f"the {what_item} still names old addresses {pairs}: replies and invitations go to addresses "
                "that end with the source",
                "run 'mailferry migrate --only calendars,contacts' after adding the addresses to the identity map "
                "or [calendars.addresses], or edit the item on the target",
                account=account,
                facts={"addresses": [a for a, _ in old], "href": href},
            )
        )
    return out


_REDIRECT = re.compile(rb'(?i)\bredirect\b(?:\s+:[a-z]+)*\s+"([^"]+)"')
_VACATION = re.compile(rb'(?is)\bvacation\b((?:"[^"]*"|[^;"])*);')
_VACATION_ADDR = re.compile(rb'(?i):(?:addresses|from)\s+(\[[^\]]*\]|"[^"]*")')


def sieve_addresses(script: bytes) -> tuple[list[str], list[str]]:
    """(redirect targets, vacation :addresses/:from) of a script (comments left out)."""
    text = re.sub(rb"(?m)#.*$", b"", re.sub(rb"(?s)/\*.*?\*/", b"", script))
    redirects = [m.group(1).decode("utf-8", "replace") for m in _REDIRECT.finditer(text)]
    vacation = [
        a.decode("utf-8", "replace")
        for v in _VACATION.finditer(text)
        for m in _VACATION_ADDR.finditer(v.group(1))
        for a in re.findall(rb'"([^"]*)"', m.group(1))
    ]
    return redirects, vacation


def sieve_checks(account: str, scripts: Mapping[str, bytes], active: str | None, moved: Moved) -> list[Check]:
    out: list[Check] = []
    for name, body in sorted(scripts.items()):
        redirects, vacation = sieve_addresses(body)
        state = "the active" if name == active else "an inactive"
        for a, redirect in [(a, True) for a in redirects] + [(a, False) for a in vacation]:
            new = moved(a)
            if new is None or new.lower() == a.lower():
                continue
            if redirect:
                status: Status = "blocked" if name == active else "warning"
                what = (
                    f"{state} script redirects mail to {a}, an address that ends with the source (now {new}): "
                    "redirected mail bounces once the source is switched off"
                )
                fix = f'change redirect "{a}" to "{new}" in the script on the target (ManageSieve, or the webmail\'s '
                fix += "filter settings)"
            else:
                status = "warning"
                what = (
                    f"{state} script's out-of-office names {a} (now {new}): replies go out from, or are only "
                    "sent for, the old address"
                )
                fix = f'replace "{a}" by "{new}" in the vacation rule on the target'
            out.append(Check("data", f"filter {name}", status, what, fix, account, {"script": name, "address": a}))
    return out


ACL_KINDS = ("acl-unmapped", "acl-global", "acl-negative-uncarried")


def acl_checks(account: str, findings: Sequence[Mapping[str, Any]], acknowledged: Collection[str] = ()) -> list[Check]:
    """Folder permissions the last pass could not carry: on the source someone had access that
    nobody has on the target (unless the admin acknowledged that kind for the account)."""
    out = []
    for f in findings:
        if f["kind"] not in ACL_KINDS or f["kind"] in acknowledged:
            continue
        out.append(
            Check(
                "data",
                f"permissions {f['folder']}",
                "blocked",
                f"{f['message']}: that access ends with the source",
                "map the identifier (accounts CSV, identity map or [permissions.groups]) and run "
                "'mailferry migrate --only permissions', or set the entry on the target by hand and "
                "acknowledge it ('mailferry cutover ack')",
                account=account,
                facts={"kind": f["kind"], "run": f["run"]},
            )
        )
    return out


def progress_checks(
    accounts: Sequence[tuple[str, str | None]],
    *,
    now: datetime,
    window_hours: float,
    findings: Mapping[str, Sequence[Mapping[str, Any]]],
    acknowledged: Mapping[str, Collection[str]],
    outstanding: Mapping[str, int],
    changed: Mapping[str, Sequence[str]],
) -> list[Check]:
    """``accounts``: (source account, when its last pass finished, ISO, or None: never).
    ``findings``: each account's findings of its last pass (ACL kinds are judged as data);
    ``acknowledged``: per account the finding kinds the admin acknowledged; ``outstanding``: items
    the target still lacks (refused); ``changed``: folders whose source changed since the last pass."""
    out: list[Check] = []
    for account, last in accounts:
        if last is None:
            out.append(
                Check(
                    "progress",
                    "migrated",
                    "blocked",
                    "this account has never been migrated: its mail is only on the source",
                    f"mailferry migrate PROJECT --account {account}",
                    account=account,
                )
            )
            continue
        age = now - datetime.fromisoformat(last)
        if age > timedelta(hours=window_hours):
            out.append(
                Check(
                    "progress",
                    "last pass",
                    "blocked",
                    f"the last pass finished {age.total_seconds() / 3600:.1f} hours ago, more than the window of "
                    f"{window_hours:g} hours: what arrived on the source since is not on the target",
                    f"run 'mailferry migrate PROJECT --account {account}' again just before switching the source off",
                    account=account,
                    facts={"last_pass": last},
                )
            )
        if changed.get(account):
            folders = list(changed[account])
            out.append(
                Check(
                    "progress",
                    "source changed",
                    "blocked",
                    f"the source changed since the last pass in {len(folders)} folder(s) ({', '.join(folders[:5])}): "
                    "those messages or flags are not on the target yet",
                    f"mailferry migrate PROJECT --account {account}",
                    account=account,
                    facts={"folders": folders},
                )
            )
        if outstanding.get(account):
            n = outstanding[account]
            out.append(
                Check(
                    "progress",
                    "refused items",
                    "blocked",
                    f"{n} item(s) the target refused are still only on the source",
                    "see 'mailferry report PROJECT' for each and why; fix and run migrate again, or acknowledge",
                    account=account,
                    facts={"outstanding": n},
                )
            )
        kinds: dict[str, int] = {}
        for f in findings.get(account, ()):
            if f["kind"] in ACL_KINDS or f["kind"] in acknowledged.get(account, ()):
                continue
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
        for kind, n in sorted(kinds.items()):
            out.append(
                Check(
                    "progress",
                    f"finding {kind}",
                    "warning",
                    f"{n} finding(s) '{kind}' of the last pass are not resolved or acknowledged",
                    f"resolve them (mailferry report PROJECT), or acknowledge: mailferry cutover ack PROJECT "
                    f"--account {account} --kind {kind}",
                    account=account,
                    facts={"kind": kind, "count": n},
                )
            )
        if not any(c.account == account for c in out):
            out.append(Check("progress", "migrated", "ok", f"last pass {last}", account=account))
    return out
