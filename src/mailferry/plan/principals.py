"""Who is who across the move: a source account's name -> its target account's. Pure.

Shared by what carries permissions (folder ACLs, calendar sharing) and the blockers' checks. Kept
apart from :mod:`mailferry.plan.dav` so that a mail pass that carries ACLs does not import the
calendar model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def principal_map(
    accounts: Sequence[tuple[str, str]], identity: Sequence[Mapping[str, object]]
) -> Callable[[str], str | None]:
    """Source account name -> target account name: the project's accounts first, then the
    identity map's logins; None for someone the project does not move."""
    known: dict[str, str] = {}
    for row in identity:
        old, new = row.get("source_login"), row.get("target_login")
        if isinstance(old, str) and isinstance(new, str) and old and new:
            known[old.lower()] = new
    known.update({s.lower(): t for s, t in accounts})
    return lambda name: known.get(name.strip().lower())
