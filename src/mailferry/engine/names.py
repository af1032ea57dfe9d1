"""The ``names`` and ``network`` areas of ``check`` and the ``dns`` area of ``cutover check``:
asks DNS (connectors.dns) and judges the answers (verify.names); opens one TCP connection to each
configured server and times it."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from mailferry.config.model import AccountConfig, Project, Role
from mailferry.connectors.dns import Reach, Resolver, tcp_reach
from mailferry.engine.readiness import Context
from mailferry.model.readiness import Check
from mailferry.verify import names as judge

SLOW_MS = judge.SLOW_MS


def _names(project: Project) -> judge.Names:
    org = project.organization
    tgt = project.target
    src_hosts, tgt_hosts = mail_hosts(project, "source"), mail_hosts(project, "target")
    return judge.Names(
        domains=org.domains,
        target=judge.known_names(org.target_names, tgt_hosts),
        source=judge.known_names(org.source_names, src_hosts),
        dkim_selectors=org.dkim_selectors,
        dav=bool({"calendars", "contacts"} & set(project.items)),
        ports=_ports(project),
        dav_path=urlsplit(tgt.dav.url).path if tgt.dav is not None else "",
    )


def _ports(project: Project) -> dict[str, tuple[str, int]]:
    """The SRV service label each of the target's servers is found by, and its host and port."""
    t = project.target
    out = {("_imaps._tcp" if t.security == "tls" else "_imap._tcp"): (t.host, t.port)}
    if t.submission is not None:
        s = t.submission
        out["_submissions._tcp" if s.security == "tls" else "_submission._tcp"] = (s.host, s.port)
    if t.dav is not None:
        parts = urlsplit(t.dav.url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        for kind in ("caldav", "carddav"):
            out[f"_{kind}{'s' if tls else ''}._tcp"] = (parts.hostname or "", port)
    return out


def mail_hosts(project: Project, role: Role) -> list[str]:
    """The hosts of ``role``'s mail services (IMAP, DAV, ManageSieve, submission; not the directory)."""
    return [a.host for a in project.service_addresses(role) if a.service != "ldap" and a.host]


def names_checks(project: Project, accounts: Sequence[AccountConfig], ctx: Context) -> list[Check]:
    if not project.organization.domains:
        return []
    resolver = Resolver(project.organization.resolver)
    return judge.readiness(_names(project), resolver.query)


def cutover_dns_checks(project: Project, accounts: Sequence[AccountConfig], ctx: Context) -> list[Check]:
    if not project.organization.domains:
        return [
            Check(
                "dns",
                "[organization] domains",
                "warning",
                "no mail domain is named, so DNS was not looked at",
                'name the mail domains in [organization] domains = ["example.org"]',
            )
        ]
    resolver = Resolver(project.organization.resolver)
    return judge.cutover(_names(project), resolver.query)


ROLES: tuple[Role, Role] = ("source", "target")
_LABELS = {"imap": "IMAP", "dav": "DAV", "sieve": "ManageSieve", "submission": "submission", "ldap": "LDAP"}


def endpoints(project: Project) -> list[tuple[str, str, str, int]]:
    """(role, service, host, port) of every server the project names."""
    out = [(a.role, _LABELS[a.service], a.host, a.port) for role in ROLES for a in project.service_addresses(role)]
    return list(dict.fromkeys(out))


def network_checks(project: Project, accounts: Sequence[AccountConfig], ctx: Context) -> list[Check]:
    eps = endpoints(project)
    with ThreadPoolExecutor(max_workers=min(8, len(eps) or 1)) as pool:
        reaches: list[Reach] = list(pool.map(lambda e: tcp_reach(e[2], e[3]), eps))
    return [
        judge.reach(role, service, host, port, r.rtt_ms if r.ok else None, r.error)
        for (role, service, host, port), r in zip(eps, reaches, strict=True)
    ]
