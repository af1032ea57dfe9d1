"""The ``certificates`` area of ``mailferry check``: every TLS endpoint of the target the project
uses (IMAP, DAV over https, ManageSieve, submission, the target directory), probed through
:mod:`mailferry.connectors.tlsprobe` and judged by :mod:`mailferry.verify.certs`."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from mailferry.config.model import AccountConfig, Project
from mailferry.connectors.tlsprobe import probe
from mailferry.model.certs import TlsEndpoint
from mailferry.model.readiness import Check
from mailferry.verify.certs import judge

if TYPE_CHECKING:
    from mailferry.engine.readiness import Context

_PROBE_TIMEOUT = 10.0


def endpoints(project: Project) -> list[TlsEndpoint]:
    """The target's TLS endpoints, in the project file's order (those without TLS are left out)."""
    return [
        TlsEndpoint(
            a.service,
            a.host,
            a.port,
            "tls" if a.security == "tls" else "starttls",
            None if a.ca_file is None else project.base_dir / a.ca_file,
            a.server_name,
            _PROBE_TIMEOUT,
            a.config,
        )
        for a in project.service_addresses("target")
        if a.security in ("tls", "starttls") and a.host
    ]


def gather(project: Project, accounts: Sequence[AccountConfig], ctx: Context) -> list[Check]:
    """The checks of every TLS endpoint (none when the target uses no TLS)."""
    eps = endpoints(project)
    if not eps:
        return []
    org = project.organization
    with ThreadPoolExecutor(max_workers=min(8, len(eps))) as pool:
        probes = list(pool.map(probe, eps))
    advertised = dns_names(project)
    checks: list[Check] = []
    for p in probes:
        names = client_names(project, p.endpoint)
        names += [n for n in advertised.get((p.endpoint.service, p.endpoint.port), []) if n not in names]
        checks += judge(p, names, ctx.now, org.expiry_warning_days)
    return checks


#: The SRV records (RFC 6186, RFC 6764) that send clients to each kind of endpoint.
_SRV = {
    "imap": ("_imaps._tcp", "_imap._tcp"),
    "submission": ("_submission._tcp", "_submissions._tcp"),
    "sieve": ("_sieve._tcp",),
    "dav": ("_caldavs._tcp", "_caldav._tcp", "_carddavs._tcp", "_carddav._tcp"),
}


def dns_names(project: Project) -> dict[tuple[str, int], list[str]]:
    """(service, port) -> the host names the mail domains' SRV records send clients to for that
    service at that port (leaving out the source's names): the certificate must cover what DNS
    points at. Empty without ``[organization] domains``."""
    org = project.organization
    if not org.domains:
        return {}
    from mailferry.connectors.dns import Resolver

    resolver = Resolver(org.resolver)
    source = {n.lower() for n in org.source_names}
    out: dict[tuple[str, int], list[str]] = {}
    for service, labels in _SRV.items():
        for domain in org.domains:
            for label in labels:
                answer = resolver.query(f"{label}.{domain}", "SRV")
                if answer.status != "ok":
                    continue
                for record in answer.records:
                    parts = record.split()
                    if len(parts) != 4 or parts[3] in (".", "") or parts[3].lower() in source:
                        continue
                    names = out.setdefault((service, int(parts[2])), [])
                    if parts[3] not in names:
                        names.append(parts[3])
    return out


def client_names(project: Project, endpoint: TlsEndpoint) -> list[str]:
    """The names clients use for ``endpoint``: its own (host or TLS server name), and the
    organization's ``target_names`` when it is on the target's main server (the host of
    ``[target]``, one of those names, or an address). A service on a host of its own
    (``smtp.new.example``) is judged for that name only. DNS-derived names can be added by the
    caller of :func:`mailferry.verify.certs.judge`."""
    names = [endpoint.name]
    org = {n.lower() for n in project.organization.target_names}
    host = endpoint.host.lower()
    if host == project.target.host.lower() or host in org or _is_address(host):
        names += project.organization.target_names
    return names


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True
