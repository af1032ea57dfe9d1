"""Gathers the organization-wide checks of ``mailferry check``: each area's gatherer looks at the
servers through connectors and judges what it saw with pure functions (``mailferry.verify``).

An area gatherer is ``fn(project, accounts, context) -> list[Check]``; one that fails on a bug
is reported as a blocked check of its area (with the error), never ending the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailferry.config.model import AccountConfig, Project
from mailferry.errors import MailferryError
from mailferry.model.readiness import Check

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Context:
    """What every gatherer may need besides the project: the clock (for expiry and pass ages)."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    seen: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # check's per-account facts (source user ->)


Gatherer = Callable[[Project, Sequence[AccountConfig], Context], list[Check]]


def _gatherers() -> list[tuple[str, Gatherer]]:
    # Imported here: each area pulls in its own connectors (DNS, SMTP, LDAP), which a project
    # that doesn't use them never needs to load.
    from mailferry.engine import blockers, certs, names, prepare, services

    out: list[tuple[str, Gatherer]] = []
    out.append(("services", services.gather))
    out.append(("names", names.names_checks))
    out.append(("network", names.network_checks))
    out.append(("certificates", certs.gather))
    out.append(("blockers", blockers.gather))
    out.append(("blockers", blockers.calendar_components))
    out.append(("directory", prepare.gather))
    return out


def org_checks(project: Project, accounts: Sequence[AccountConfig], context: Context | None = None) -> list[Check]:
    """Every organization-wide check, areas gathered in parallel (each is mostly waiting on a server)."""
    ctx = context or Context()
    gatherers = _gatherers()

    def one(item: tuple[str, Gatherer]) -> list[Check]:
        area, fn = item
        try:
            return fn(project, accounts, ctx)
        except MailferryError as e:
            return [Check(area, area, "blocked", str(e), e.hint, exit_code=int(e.exit_code))]

    if not gatherers:
        return []
    with ThreadPoolExecutor(max_workers=len(gatherers)) as pool:
        return [c for checks in pool.map(one, gatherers) for c in checks]
