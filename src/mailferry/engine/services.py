"""The ``services`` area of ``check``: each target service the project uses is asked (without
logging in, never sending mail) whether it answers and what it offers, then judged by
``verify.services``. Probed only what the project uses: DAV when calendars or contacts are
migrated, ManageSieve when filters are, submission when ``[target.submission]`` is named."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from mailferry.config.model import AccountConfig, Project
from mailferry.connectors import dav as dav_connector
from mailferry.connectors import sieve as sieve_connector
from mailferry.connectors.imap import Endpoint, ImapStore, server_greeting
from mailferry.connectors.smtp import probe_submission
from mailferry.engine.readiness import Context
from mailferry.errors import MailferryError
from mailferry.model.readiness import Check
from mailferry.verify import services as judge

PROBE_TIMEOUT = 10.0


def _imap(project: Project) -> Check:
    t = project.target
    where = f"{t.host}:{t.port}"
    greeting = server_greeting(
        Endpoint(
            t.host,
            t.port,
            t.security,
            t.verify_certificates,
            str(t.ca_file) if t.ca_file else None,
            min(t.timeout, PROBE_TIMEOUT),
        )
    )
    if not greeting:
        return judge.imap(judge.Seen("IMAP", where, error="no greeting"))
    found = re.search(r"\[CAPABILITY ([^\]]*)\]", greeting)
    caps = frozenset(found.group(1).upper().split()) if found else frozenset()
    return judge.imap(
        judge.Seen("IMAP", where, version=ImapStore.product(greeting), features=caps, facts={"greeting": greeting})
    )


def _sieve(project: Project) -> Check:
    s = project.target.sieve
    assert s is not None
    where = f"{s.host}:{s.port}"
    endpoint = sieve_connector.SieveEndpoint(
        s.host,
        s.port,
        s.security,
        s.verify_certificates,
        str(s.ca_file) if s.ca_file else None,
        min(s.timeout, PROBE_TIMEOUT),
    )
    try:
        caps = sieve_connector.probe(endpoint)
    except MailferryError as e:
        return judge.sieve(judge.Seen("ManageSieve", where, error=str(e)))
    facts = {"sieve_extensions": caps.get("SIEVE", ""), "implementation": caps.get("IMPLEMENTATION", "")}
    return judge.sieve(
        judge.Seen("ManageSieve", where, version=caps.get("IMPLEMENTATION", ""), features=frozenset(caps), facts=facts)
    )


def _dav(project: Project) -> list[Check]:
    d = project.target.dav
    assert d is not None
    try:
        words, server = dav_connector.probe_options(
            d.url,
            verify_certificates=d.verify_certificates,
            ca_file=str(d.ca_file) if d.ca_file else None,
            timeout=min(d.timeout, PROBE_TIMEOUT),
        )
    except httpx.HTTPError as e:
        seen = judge.Seen("DAV", d.url, error=str(e) or type(e).__name__)
    else:
        seen = judge.Seen("DAV", d.url, version=server, features=words)
    return judge.dav(seen, calendars="calendars" in project.items, contacts="contacts" in project.items)


def _submission(project: Project) -> Check:
    s = project.target.submission
    assert s is not None
    p = probe_submission(
        s.host,
        s.port,
        implicit_tls=s.security == "tls",
        verify_certificates=s.verify_certificates,
        ca_file=s.ca_file,
        timeout=min(s.timeout, PROBE_TIMEOUT),
    )
    return judge.submission(
        judge.Submission(
            f"{s.host}:{s.port}", p.implicit_tls, p.banner, p.starttls, p.tls, p.auth, p.size, p.error, p.stage
        )
    )


def _ldap(project: Project) -> Check:
    from mailferry import api
    from mailferry.engine.directory import open_directory

    assert project.directory is not None
    t = project.directory.target
    scheme = {"tls": "ldaps", "starttls": "ldap+starttls"}.get(t.security, "ldap")
    where = f"{scheme}://{t.host}:{t.port}"
    try:
        job = api.directory_job(project, confirm=False)
        tgt = open_directory(job.target, readonly=True, label="target directory")
    except MailferryError as e:
        return judge.ldap(judge.Seen("LDAP", where, error=str(e)))
    try:
        version = tgt.vendor
    finally:
        tgt.close()
    return judge.ldap(judge.Seen("LDAP", where, version=version, facts={"bind_dn": t.bind_dn}))


def gather(project: Project, accounts: Sequence[AccountConfig], ctx: Context) -> list[Check]:
    probes: list[Callable[[], list[Check]]] = [lambda: [_imap(project)]]
    t = project.target
    if t.dav is not None and {"calendars", "contacts"} & set(project.items):
        probes.append(lambda: _dav(project))
    if t.sieve is not None and "filters" in project.items:
        probes.append(lambda: [_sieve(project)])
    if t.submission is not None:
        probes.append(lambda: [_submission(project)])
    if project.directory is not None:
        probes.append(lambda: [_ldap(project)])
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        return [c for checks in pool.map(lambda fn: fn(), probes) for c in checks]
