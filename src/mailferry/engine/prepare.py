"""Directory preparation: the ``directory`` area of ``mailferry check`` and ``mailferry directory
prepare``. Reads what the target directory says of itself, judges it with the pure
:mod:`mailferry.plan.prepare`, and (``prepare --apply``) adds what mailferry may add.

Only the target directory is read (the source's people don't change what the target must
allow: see :func:`mailferry.plan.prepare.probe_plan`); nothing is written but by :func:`apply`,
and then only the steps mailferry takes (containers; OpenLDAP schema under cn=config), each a
single LDAP add. What it can't do (an AD schema extension, rights) is said, with the LDIF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mailferry.config.model import AccountConfig, Project
from mailferry.connectors.ldap import DirectoryRefused, LdapDirectory
from mailferry.engine.directory import DirectoryJob, open_directory
from mailferry.engine.readiness import Context
from mailferry.formats.ldif import dn_key, ldif_to_entry, parent_dn
from mailferry.model.readiness import Check
from mailferry.plan.directory import DirectoryPlan, Precondition
from mailferry.plan.prepare import Preparation, Step, TargetFacts, check_preconditions_of, prepare, probe_plan

AREA = "directory"
SCHEMA_CONFIG = "cn=schema,cn=config"


def plan_for(job: DirectoryJob) -> DirectoryPlan:
    return probe_plan(
        dialect=job.target.options.dialect,
        target_container=job.target_container,
        create_template=job.create,
        mail_attrs_template=job.mail_attributes,
        lock_marker=job.lock or None,
        alias_attribute=job.alias_attribute,
        keep_old_addresses=job.keep_old_addresses,
    )


def survey(job: DirectoryJob, tgt: LdapDirectory) -> TargetFacts:
    """What the target says of itself: the container and its parents, the rights there, the schema."""
    chain: list[tuple[str, bool]] = []
    child: tuple[str, ...] | None = None
    dn = job.target_container
    stop = dn_key(tgt.naming_context) if tgt.naming_context else ""
    while dn:
        try:
            info = tgt.container(dn)
        except DirectoryRefused:  # outside the server's naming contexts (AD answers with a referral)
            chain.append((dn, False))
            dn = parent_dn(dn)
            continue
        chain.append((dn, info.exists))
        if info.exists:
            child = info.child_classes
            break
        if stop and dn_key(dn) == stop:
            break
        dn = parent_dn(dn)
    server = "ad" if tgt.is_active_directory else "openldap" if tgt.is_openldap else "other"
    return TargetFacts(
        server=server,  # type: ignore[arg-type]
        dialect=job.target.options.dialect,
        naming_context=tgt.naming_context,
        container=job.target_container,
        chain=chain,
        child_classes=child,
        schema=tgt.schema(),
        schema_config=server == "openldap" and tgt.exists(SCHEMA_CONFIG),
        bind_dn=job.target.bind_dn,
    )


@dataclass(slots=True)
class Survey:
    facts: TargetFacts
    preconditions: list[Precondition]
    preparation: Preparation


def look(job: DirectoryJob, tgt: LdapDirectory) -> Survey:
    plan = plan_for(job)
    facts = survey(job, tgt)
    return Survey(facts, check_preconditions_of(plan, facts, job.lock or None), prepare(plan, facts, job.lock or None))


_GROUPS = {  # a precondition's check -> the kinds of step that fix it
    "container": ("container",),
    "rights": ("rights",),
    "object class": ("schema", "project file"),
    "attribute": ("schema", "project file"),
    "schema": ("schema", "project file"),
    "lock marker": ("lock marker", "schema", "project file"),
}


def checks(s: Survey, project_path: str = "PROJECT") -> list[Check]:
    """The ``directory`` area: one check per precondition of the probe plan; each one that fails
    names the fix (``directory prepare --apply``, or what the admin must do)."""
    facts = s.facts
    base = {"server": facts.server, "dialect": facts.dialect, "target_container": facts.container}
    out: list[Check] = []
    for p in s.preconditions:
        subject = f"{p.check} {facts.container}" if p.check in ("container", "rights") else p.check
        if p.ok is True:
            out.append(Check(AREA, subject, "ok", p.message, facts=base))
        elif p.ok is None and p.check == "rights":
            # OpenLDAP never says: not a warning every time (apply names a refused entry).
            out.append(Check(AREA, subject, "ok", p.message, facts={**base, "verified": False}))
        elif p.ok is None:
            out.append(Check(AREA, subject, "warning", p.message, "check the bind account's read rights on the "
                             "subschema subentry", facts=base))  # fmt: skip
        else:
            steps = [x for x in s.preparation.steps if x.kind in _GROUPS.get(p.check, ())]
            out.append(Check(AREA, subject, "blocked", p.message, _fix(steps, project_path), facts=base, exit_code=78))
    return out


def _fix(steps: Sequence[Step], project_path: str) -> str:
    if not steps:
        return f"see mailferry directory prepare {project_path}"
    parts = []
    if any(s.by == "mailferry" for s in steps):
        parts.append(f"run mailferry directory prepare {project_path} --apply")
    for s in steps:
        if s.by == "admin" and s.fix not in parts:
            parts.append(s.fix)
    return "; then ".join(parts)


def gather(project: Project, accounts: Sequence[AccountConfig], ctx: Context) -> list[Check]:
    """The ``directory`` area of ``check`` (nothing when the project has no [directory])."""
    if project.directory is None:
        return []
    from mailferry import api

    job = api.directory_job(project, confirm=False)
    tgt = open_directory(job.target, readonly=True, label="target directory")
    try:
        s = look(job, tgt)
    finally:
        tgt.close()
    return checks(s, str(project.path) if getattr(project, "path", None) else "PROJECT")


@dataclass(slots=True)
class StepOutcome:
    step: Step
    state: str  # "done", "refused", "admin", "to do"
    message: str = ""


@dataclass(slots=True)
class PrepareResult:
    before: Survey
    after: Survey | None = None
    outcomes: list[StepOutcome] = field(default_factory=list)

    @property
    def remaining(self) -> Survey:
        return self.after or self.before


def run(job: DirectoryJob, *, apply: bool, project_path: str = "PROJECT") -> PrepareResult:
    """Look; with ``apply``, add what mailferry may (in the order shown), then look again."""
    tgt = open_directory(job.target, readonly=not apply, label="target directory")
    try:
        before = look(job, tgt)
        result = PrepareResult(before)
        for st in before.preparation.steps:
            if st.by == "admin":
                result.outcomes.append(StepOutcome(st, "admin"))
            elif not apply:
                result.outcomes.append(StepOutcome(st, "to do"))
            else:
                try:
                    _add(tgt, st.ldif)
                    result.outcomes.append(StepOutcome(st, "done"))
                except DirectoryRefused as e:
                    result.outcomes.append(StepOutcome(st, "refused", f"{e} ({e.hint})" if e.hint else str(e)))
        if apply and before.preparation.mine:
            tgt.close()
            tgt = open_directory(job.target, readonly=True, label="target directory")  # a fresh schema
            result.after = look(job, tgt)
        return result
    finally:
        tgt.close()


def _add(tgt: LdapDirectory, ldif: str) -> None:
    """Each ``changetype: add`` record of ``ldif`` (the only kind mailferry applies itself)."""
    for record in (r for r in ldif.split("\n\n") if r.strip()):
        lines = [line for line in record.splitlines() if not line.lower().startswith("changetype:")]
        dn, attrs = ldif_to_entry("\n".join(lines) + "\n")
        tgt.add(dn, attrs)


def rows(result: PrepareResult, project_path: str = "PROJECT") -> dict[str, Any]:
    """The JSON-ready report (``directory prepare --json``)."""
    s = result.remaining

    def fix(st: Step) -> str:
        return st.fix.replace(" PROJECT ", f" {project_path} ")

    return {
        "server": s.facts.server,
        "dialect": s.facts.dialect,
        "target_container": s.facts.container,
        "steps": [
            {
                "kind": o.step.kind,
                "subject": o.step.subject,
                "by": o.step.by,
                "state": o.state,
                "what": o.step.what,
                "fix": fix(o.step),
                "ldif": o.step.ldif,
                **({"message": o.message} if o.message else {}),
            }
            for o in result.outcomes
        ],  # fmt: skip
        "ldif": result.before.preparation.ldif,
        "admin_ldif": result.before.preparation.admin_ldif,
        "remaining": [
            {"kind": st.kind, "subject": st.subject, "by": st.by, "what": st.what, "fix": fix(st)}
            for st in s.preparation.steps
        ],
    }
