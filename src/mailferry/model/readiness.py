"""Pure value types of the readiness report (``mailferry check``) and the cut-over report
(``mailferry cutover check``).

Terminology:

area      what a group of checks is about: ``services`` (each target service answers and is
          usable), ``names`` (DNS), ``certificates`` (TLS), ``network`` (reachability, round
          trip), ``directory`` (schema, containers, rights), ``blockers`` (source features the
          target can't take, per account); and for the cut-over: ``dns``, ``data``, ``progress``,
          ``offline``.
check     one fact looked at, with its ``status``: ``ok``, ``warning`` (it works, but the admin
          should know or act) or ``blocked`` (fix this before going on). A check that is not ok
          names what breaks (``what``) and the next step (``fix``).
verdict   of an area, an account or the whole report: ``ready``, ``ready with warnings`` or
          ``blocked`` (the worst status among its checks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warning", "blocked"]
Verdict = Literal["ready", "ready with warnings", "blocked"]

READINESS_AREAS = ("services", "names", "certificates", "network", "directory", "blockers")
CUTOVER_AREAS = ("dns", "data", "progress", "offline")

AnswerStatus = Literal["ok", "nxdomain", "nodata", "error"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One question's answer. ``records`` in presentation form without the trailing dot of
    names: MX ``"10 mail.example"``, SRV ``"0 1 993 mail.example"``, TXT the joined strings,
    A ``"192.0.2.1"``, CNAME ``"mail.example"``. ``status``: ``ok`` (records), ``nxdomain`` (no
    such name), ``nodata`` (the name has no records of that type), ``error`` (no answer: ``error``)."""

    name: str
    rtype: str
    status: AnswerStatus
    records: tuple[str, ...] = ()
    error: str = ""


_RANK: Mapping[str, int] = {"ok": 0, "warning": 1, "blocked": 2}
_VERDICT: Mapping[int, Verdict] = {0: "ready", 1: "ready with warnings", 2: "blocked"}


@dataclass(frozen=True, slots=True)
class Check:
    """One fact looked at. ``subject`` names what was looked at (``imap 127.0.0.1:993``,
    ``MX new.example``, ``alice``); ``account`` is set where the check is about one account;
    ``facts`` holds what was seen (versions, records, days to expiry) as JSON-ready values.
    ``exit_code``: for a blocked check, the exit code it stands for (authentication, a server
    that could not be reached); 0 means the report's default for a blocked check (1)."""

    area: str
    subject: str
    status: Status
    what: str
    fix: str = ""
    account: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"area": self.area, "subject": self.subject, "status": self.status, "what": self.what}
        if self.fix:
            out["fix"] = self.fix
        if self.account:
            out["account"] = self.account
        if self.facts:
            out["facts"] = dict(self.facts)
        return out


def verdict(statuses: Iterable[str]) -> Verdict:
    """The worst of ``statuses`` as a verdict (no status at all: ready)."""
    return _VERDICT[max((_RANK[s] for s in statuses), default=0)]


def status_of(v: str) -> Status:
    """The status a verdict counts as when verdicts are combined (an area's into the report's)."""
    return "ok" if v == "ready" else "warning" if v == "ready with warnings" else "blocked"


def summary(checks: Sequence[Check], areas: Sequence[str]) -> dict[str, Any]:
    """The report's ``areas`` (each with its verdict and checks, in ``areas`` order, then any
    other area in first-seen order) and its overall ``verdict``."""
    names = list(areas) + [c.area for c in checks if c.area not in areas]
    out = []
    for name in dict.fromkeys(names):
        mine = [c for c in checks if c.area == name]
        if not mine:
            continue
        out.append({"area": name, "verdict": verdict(c.status for c in mine), "checks": [c.as_dict() for c in mine]})
    return {"areas": out, "verdict": verdict(c.status for c in checks)}


def exit_code(checks: Sequence[Check], default_blocked: int = 1) -> int:
    """0 unless a check is blocked; then the most specific code among the blocked ones
    (a check's own ``exit_code`` before ``default_blocked``)."""
    codes = [c.exit_code or default_blocked for c in checks if c.status == "blocked"]
    return max(codes, default=0)
