"""Plan one account's Sieve scripts (RFC 5228, carried over ManageSieve RFC 5804). Pure.

Inputs: the source's scripts (name, bytes, active), the target's (name -> bytes, and which is
active), each source script already rewritten (:func:`mailferry.formats.sieve.rewrite_script`),
and the ledger's ``settings`` rows of kind ``sieve`` (key: script name, value: the SHA-256 of the
rewritten script last put, state ``set`` or ``refused``).

Decision table per source script (first row that applies decides; its text is the reason):

1. the target holds the script with exactly the rewritten bytes -> ``unchanged`` (recorded when
   the ledger lacks it: a script put but not recorded, e.g. after ``kill -9``, is simply matched);
2. the target holds the script, the ledger recorded this very digest as put, and the bytes on the
   target differ -> ``kept`` (someone changed it on the target since: never overwritten; a notice);
3. otherwise -> ``put`` (new, or changed on the source since). The engine asks the target's
   CHECKSCRIPT first: a refusal (syntax error on the source, an extension the target lacks) is a
   finding in the server's words and nothing is written for that script.

Then ``activate`` the source's active script when the target's active one is another (after the
put, and only when that script is on the target), unless the ledger says mailferry already made
that very script active once (someone changed the activation on the target since: left alone, a
note). A source without an active script changes nothing on the target's activation. Scripts are
never deleted on the target.

Policy for a source script mailferry cannot parse: carried as written (no rewriting) and the
target's CHECKSCRIPT decides; the script's own server accepted it, ours may not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mailferry.formats.sieve import Rewritten, diff

KIND = "sieve"  # the ledger's settings kind


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True, slots=True)
class SourceScript:
    name: str
    content: bytes
    active: bool


@dataclass(frozen=True, slots=True)
class ScriptAction:
    """``action``: ``put``, ``unchanged`` or ``kept``. ``content``: what goes to the target."""

    name: str
    action: str
    reason: str
    content: bytes
    rewritten: Rewritten
    diff: str = ""
    record: bool = False  # unchanged but not in the ledger yet: record it

    @property
    def digest(self) -> str:
        return digest(self.content)


@dataclass(frozen=True, slots=True)
class SievePlan:
    scripts: tuple[ScriptAction, ...]
    activate: str | None  # the script to make active on the target, None: leave as is
    source_active: str | None
    notes: tuple[str, ...] = field(default=())

    @property
    def puts(self) -> tuple[ScriptAction, ...]:
        return tuple(s for s in self.scripts if s.action == "put")


def plan_scripts(
    source: Sequence[SourceScript],
    rewritten: Mapping[str, Rewritten],
    target: Mapping[str, bytes],
    target_active: str | None,
    recorded: Mapping[str, str],
    recorded_active: str | None = None,
) -> SievePlan:
    """See the module docstring. ``recorded``: script name -> digest the ledger holds as put;
    ``recorded_active``: the script mailferry last made active on the target."""
    actions: list[ScriptAction] = []
    for s in source:
        r = rewritten[s.name]
        content = r.content
        d = diff(s.name, s.content, content)
        on_target = target.get(s.name)
        if on_target == content:
            actions.append(
                ScriptAction(
                    s.name,
                    "unchanged",
                    "already on the target",
                    content,
                    r,
                    d,
                    record=recorded.get(s.name) != digest(content),
                )
            )
        elif on_target is not None and recorded.get(s.name) == digest(content):
            actions.append(
                ScriptAction(s.name, "kept", "changed on the target since it was carried: left alone", content, r, d)
            )
        else:
            why = "not on the target yet" if on_target is None else "differs from the target's copy"
            actions.append(ScriptAction(s.name, "put", why, content, r, d))
    active = next((s.name for s in source if s.active), None)
    activate = active if active is not None and active != target_active else None
    notes: tuple[str, ...] = ()
    if activate is not None and recorded_active == active and target_active is not None:
        notes = (f"{target_active!r} was made active on the target since {active!r} was: left alone",)
        activate = None
    return SievePlan(tuple(actions), activate, active, notes)


@dataclass(frozen=True, slots=True)
class ScriptDifference:
    script: str
    what: str  # "missing", "content", "active"
    message: str


def compare_scripts(
    source: Sequence[SourceScript],
    rewritten: Mapping[str, Rewritten],
    target: Mapping[str, bytes],
    target_active: str | None,
) -> list[ScriptDifference]:
    """Pure verify: every source script, after rewriting, is on the target byte for byte, and
    the source's active script is the target's active one."""
    out: list[ScriptDifference] = []
    for s in source:
        want = rewritten[s.name].content
        got = target.get(s.name)
        if got is None:
            out.append(ScriptDifference(s.name, "missing", f"script {s.name!r} is not on the target"))
        elif got != want:
            out.append(ScriptDifference(s.name, "content", f"script {s.name!r} differs on the target"))
    active = next((s.name for s in source if s.active), None)
    if active is not None and active != target_active:
        out.append(
            ScriptDifference(
                active, "active", f"script {active!r} is active on the source, the target's active is {target_active!r}"
            )
        )
    return out
