"""Judging a mail domain's DNS (pure): what ``check`` says of names before, and what ``cutover
check`` says of DNS that still points at the old servers.

Everything is asked through ``lookup(name, type) -> Answer``; the engine passes a resolver's,
tests pass a table. Names are compared lower-case without the trailing dot. A server is "at the
target" when its name is one of the target's names, "at the source" when it is one of the
source's, or when it resolves only to addresses of the source's names (a CNAME or an A record
that still leads to the old machine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailferry.model.readiness import Answer, Check, Status

Lookup = Callable[[str, str], Answer]

#: (what clients look up, the alternative that counts as well, default port, what it is for)
MAIL_SRV = (
    ("_imaps._tcp", "_imap._tcp", 993, "mail clients find the IMAP server (RFC 6186)"),
    ("_submission._tcp", "_submissions._tcp", 587, "mail clients find where to send (RFC 6186)"),
)
DAV_SRV = (
    ("_caldavs._tcp", "_caldav._tcp", 443, "calendar clients find the CalDAV server (RFC 6764)"),
    ("_carddavs._tcp", "_carddav._tcp", 443, "contact clients find the CardDAV server (RFC 6764)"),
)


@dataclass(frozen=True, slots=True)
class Names:
    """The names each side is known by (lower-case, no trailing dot)."""

    domains: tuple[str, ...]
    target: frozenset[str]
    source: frozenset[str]
    dkim_selectors: tuple[str, ...] = ()
    dav: bool = False  # the project moves calendars or contacts: their SRV records matter
    #: service label (``_imaps._tcp``) -> (host, port) of the target's server for it, as the
    #: project reaches it: an SRV record whose target is that host (by name or address) must
    #: give that port.
    ports: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    dav_path: str = ""  # the path of the target's DAV URL (for the RFC 6764 TXT path= record)


def norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


class _Judge:
    def __init__(self, names: Names, lookup: Lookup) -> None:
        self.n = names
        self.lookup = lookup
        self._src_addrs: set[str] | None = None
        self._tgt_addrs: set[str] | None = None

    def addresses(self, name: str) -> set[str]:
        out: set[str] = set()
        for rtype in ("A", "AAAA"):
            a = self.lookup(name, rtype)
            if a.status == "ok":
                out.update(a.records)
        return out

    def side_of(self, name: str, seen: frozenset[str] = frozenset()) -> str:
        """``target``, ``source`` or ``other`` for a server name. An alias chain that loops
        (a zone error a resolver answers record by record) leads nowhere: ``other``."""
        name = norm(name)
        if name in self.n.target:
            return "target"
        if name in self.n.source:
            return "source"
        if name in seen:
            return "other"
        cname = self.lookup(name, "CNAME")
        if cname.status == "ok" and cname.records:
            return self.side_of(cname.records[0], seen | {name})
        if self._src_addrs is None:
            self._src_addrs = set().union(*(self.addresses(s) for s in self.n.source)) if self.n.source else set()
            self._tgt_addrs = set().union(*(self.addresses(t) for t in self.n.target)) if self.n.target else set()
        mine = self.addresses(name)
        assert self._tgt_addrs is not None
        if mine and mine <= self._src_addrs and not mine & self._tgt_addrs:
            return "source"
        if mine and mine & self._tgt_addrs:
            return "target"
        return "other"

    @property
    def first_target(self) -> str:
        return sorted(self.n.target)[0] if self.n.target else "mail.new.example"


def _failed(a: Answer) -> Check | None:
    if a.status == "error":
        return Check(
            "names",
            f"{a.rtype} {a.name}",
            "blocked",
            f"the DNS server gave no answer: {a.error}; nothing about {a.name} could be checked",
            "check [organization] resolver (or this machine's resolver) and that the DNS server answers for the domain",
            exit_code=75,
        )
    return None


def readiness(names: Names, lookup: Lookup) -> list[Check]:
    """The ``names`` area of ``check``: per domain MX, the servers' addresses, SRV, autoconfig,
    SPF, DKIM, DMARC. Before cut-over the MX may still lead to the source (a warning)."""
    j = _Judge(names, lookup)
    out: list[Check] = []
    servers: dict[str, str] = {t: "a target server name ([organization] target_names)" for t in sorted(names.target)}
    for d in names.domains:
        out += _mx(j, d, servers, cutover=False)
        out += _srv(j, d, servers, cutover=False)
        out += _autoconfig(j, d, cutover=False)
        out += _policy(j, d)
    out += _aliases(j, cutover=False)
    for host, why in servers.items():
        addrs = [lookup(host, t) for t in ("A", "AAAA")]
        if any(a.status == "error" for a in addrs):
            out.append(_failed(next(a for a in addrs if a.status == "error")))  # type: ignore[arg-type]
            continue
        found = sorted(r for a in addrs if a.status == "ok" for r in a.records)
        if found:
            out.append(
                Check(
                    "names",
                    f"A/AAAA {host}",
                    "ok",
                    f"{host} resolves to {', '.join(found)}",
                    facts={"addresses": found},
                )
            )
        else:
            out.append(
                Check(
                    "names",
                    f"A/AAAA {host}",
                    "blocked",
                    f"{host} ({why}) does not resolve: clients and other mail servers can't reach it",
                    f"add {host}. IN A <the server's address> (and AAAA if it has IPv6)",
                )
            )
    return out


def cutover(names: Names, lookup: Lookup) -> list[Check]:
    """The ``dns`` area of ``cutover check``: every MX, SRV and autoconfig/autodiscover name
    that still leads to the source is blocked (switching the source off would break it)."""
    j = _Judge(names, lookup)
    out: list[Check] = []
    servers: dict[str, str] = {}
    for d in names.domains:
        out += [_as_dns(c) for c in _mx(j, d, servers, cutover=True)]
        out += [_as_dns(c) for c in _srv(j, d, servers, cutover=True)]
        out += [_as_dns(c) for c in _autoconfig(j, d, cutover=True)]
    out += [_as_dns(c) for c in _aliases(j, cutover=True)]
    return out


def _aliases(j: _Judge, *, cutover: bool) -> list[Check]:
    """Each target name that is a CNAME leading to a source name: everything that uses the new
    name (MX, SRV, clients set up by hand) still reaches the old server. Before cut-over that
    is a warning (a transition alias), for the cut-over it is blocked. In ``check`` a name that
    is fine says nothing here (its A/AAAA check speaks for it)."""
    out: list[Check] = []
    for name in sorted(j.n.target):
        a = j.lookup(name, "CNAME")
        if a.status != "ok" or not a.records:
            if cutover and a.status != "error":
                out.append(Check("names", f"CNAME {name}", "ok", f"{name} is not an alias"))
            continue
        dest = norm(a.records[0])
        chain, seen = dest, {name}
        while chain not in j.n.source and chain not in seen:  # follow alias chains (not loops)
            seen.add(chain)
            nxt = j.lookup(chain, "CNAME")
            if nxt.status != "ok" or not nxt.records:
                break
            chain = norm(nxt.records[0])
        facts = {"cname": dest}
        if chain in j.n.source:
            via = dest if dest == chain else f"{dest} (and on to {chain})"
            out.append(
                Check(
                    "names",
                    f"CNAME {name}",
                    "blocked" if cutover else "warning",
                    f"the target name {name} is an alias of {via}, a source name: whatever uses {name} "
                    + (
                        "reaches the old server and breaks when it is switched off"
                        if cutover
                        else "still reaches the old server"
                    ),
                    ("" if cutover else "at cut-over, ")
                    + f"delete the CNAME and add {name}. IN A <the target server's address>",
                    facts=facts,
                )
            )
        elif cutover:
            out.append(Check("names", f"CNAME {name}", "ok", f"{name} is an alias of {dest}", facts=facts))
    return out


def _as_dns(c: Check) -> Check:
    return Check("dns", c.subject, c.status, c.what, c.fix, c.account, c.facts, c.exit_code)


def _mx(j: _Judge, d: str, servers: dict[str, str], *, cutover: bool) -> list[Check]:
    a = j.lookup(d, "MX")
    if (f := _failed(a)) is not None:
        return [f]
    subject = f"MX {d}"
    fix = f"{d}. IN MX 10 {j.first_target}."
    if a.status != "ok" or not a.records:
        return [
            Check("names", subject, "blocked", f"{d} has no MX record: mail to {d} can't be delivered", f"add {fix}")
        ]
    hosts = [r.split()[-1] for r in a.records]
    for h in hosts:
        servers.setdefault(h, f"a mail exchanger of {d}")
    sides = {h: j.side_of(h) for h in hosts}
    at_source = [h for h, s in sides.items() if s == "source"]
    facts = {"records": list(a.records)}
    if at_source:
        what = f"the MX of {d} still leads to the source ({', '.join(at_source)}): new mail arrives on the old server"
        if cutover:
            return [
                Check(
                    "names",
                    subject,
                    "blocked",
                    what + " and is lost to users once it is switched off",
                    f"replace it by {fix}",
                    facts=facts,
                )
            ]
        return [
            Check(
                "names",
                subject,
                "warning",
                what + " (expected until cut-over)",
                f"at cut-over, replace it by {fix}",
                facts=facts,
            )
        ]
    if cutover or all(s == "target" for s in sides.values()):
        return [Check("names", subject, "ok", f"mail to {d} goes to {', '.join(hosts)}", facts=facts)]
    other = [h for h, s in sides.items() if s != "target"]
    return [
        Check(
            "names",
            subject,
            "warning",
            f"the MX of {d} names {', '.join(other)}, which is neither a source nor a target name of the project",
            f"if that is a gateway that relays to the target, add it to [organization] target_names; else {fix}",
            facts=facts,
        )
    ]


def _srv(j: _Judge, d: str, servers: dict[str, str], *, cutover: bool) -> list[Check]:
    out: list[Check] = []
    for name, alt, port, why in MAIL_SRV + (DAV_SRV if j.n.dav else ()):
        subject = f"SRV {name}.{d}"
        found: Answer | None = None
        for n in (name, alt):
            a = j.lookup(f"{n}.{d}", "SRV")
            if (f := _failed(a)) is not None:
                out.append(f)
                found = a
                break
            if a.status == "ok" and a.records:
                found = a
                break
        if found is not None and found.status == "error":
            continue
        fix = f"{name}.{d}. IN SRV 0 1 {port} {j.first_target}."
        if found is None:
            if not cutover:
                out.append(Check("names", subject, "warning", f"no {name} record: {why} only by hand", f"add {fix}"))
            continue
        targets = [r.split()[-1] for r in found.records if r.split()[-1] not in (".", "")]
        for t in targets:
            servers.setdefault(t, f"the target of {found.name} SRV")
        at_source = [t for t in targets if j.side_of(t) == "source"]
        facts: dict[str, Any] = {"records": list(found.records)}
        if at_source:
            what = f"{found.name} still leads clients to the source ({', '.join(at_source)})"
            status: Status = "blocked" if cutover else "warning"
            out.append(
                Check(
                    "names",
                    subject,
                    status,
                    what,
                    f"{'' if cutover else 'at cut-over, '}replace it by {fix}",
                    facts=facts,
                )
            )
        elif (bad := _port_mismatch(j, found)) is not None:
            label = found.name[: -len(d) - 1]
            have, want, host = bad
            out.append(
                Check(
                    "names",
                    subject,
                    "warning",
                    f"{found.name} sends clients to port {have}, but the target's server at {host} answers on "
                    f"port {want}: clients set up by it fail to connect",
                    f"change it to {label}.{d}. IN SRV 0 1 {want} {host if not _is_address(host) else j.first_target}.",
                    facts=facts,
                )
            )
        elif name in _DAV_LABELS and not cutover and (missing := _dav_path(j, found.name)) is not None:
            out.append(missing)
        else:
            if name in _DAV_LABELS:
                paths = _paths(j.lookup(found.name, "TXT"))
                facts = {**facts, "path": paths[0]} if paths else facts
            out.append(
                Check("names", subject, "ok", f"{found.name} leads to {', '.join(targets) or '(none)'}", facts=facts)
            )
    return out


_DAV_LABELS = frozenset(n for n, *_ in DAV_SRV)


def _paths(a: Answer) -> list[str]:
    return [r.split("=", 1)[1] for r in a.records if r.lower().startswith("path=")] if a.status == "ok" else []


def _dav_path(j: _Judge, srv_name: str) -> Check | None:
    """RFC 6764 section 4: next to the SRV record, a TXT ``path=`` names the context path. Without
    it, clients try ``/.well-known/caldav`` (or carddav) and give up when that isn't redirected."""
    a = j.lookup(srv_name, "TXT")
    if a.status == "error" or _paths(a):
        return None
    path = j.n.dav_path or "/"
    return Check(
        "names",
        f"TXT {srv_name}",
        "warning",
        f"{srv_name} has no TXT path= record: clients must guess the DAV path (/.well-known/), "
        "and fail to set up calendars or contacts when the server doesn't redirect from there",
        f'add {srv_name}. IN TXT "path={path}"',
    )


def _port_mismatch(j: _Judge, found: Answer) -> tuple[int, int, str] | None:
    """(the record's port, the project's port, the project's host) when ``found`` leads to the
    server the project knows for that service (same name, or a name with the project's address)
    at another port; None when it matches or the project doesn't know that service."""
    label = ".".join(found.name.split(".")[:2])
    known = j.n.ports.get(label)
    if known is None:
        return None
    host, want = norm(known[0]), known[1]
    for r in found.records:
        parts = r.split()
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        target = norm(parts[3])
        same = target == host or (_is_address(host) and host in j.addresses(target))
        if same and int(parts[2]) != want:
            return int(parts[2]), want, known[0]
    return None


def _autoconfig(j: _Judge, d: str, *, cutover: bool) -> list[Check]:
    out: list[Check] = []
    for label, who in (("autoconfig", "Thunderbird"), ("autodiscover", "Outlook and phones")):
        host = f"{label}.{d}"
        cname = j.lookup(host, "CNAME")
        addrs = j.addresses(host)
        if (f := _failed(cname)) is not None:
            out.append(f)
            continue
        subject = f"{label} {host}"
        fix = f"{host}. IN CNAME {j.first_target}."
        if not addrs and not (cname.status == "ok" and cname.records):
            if not cutover:
                out.append(
                    Check(
                        "names",
                        subject,
                        "warning",
                        f"{host} does not resolve: {who} can't set accounts up by themselves",
                        f"add {fix}",
                    )
                )
            continue
        side = j.side_of(host)
        facts = {"cname": list(cname.records), "addresses": sorted(addrs)}
        if side == "source":
            what = f"{host} still leads to the source: {who} set new accounts up against the old server"
            out.append(
                Check(
                    "names",
                    subject,
                    "blocked" if cutover else "warning",
                    what,
                    f"{'' if cutover else 'at cut-over, '}replace it by {fix}",
                    facts=facts,
                )
            )
        else:
            out.append(Check("names", subject, "ok", f"{host} resolves", facts=facts))
    return out


def _txt(j: _Judge, name: str, prefix: str) -> tuple[Answer, list[str]]:
    a = j.lookup(name, "TXT")
    return a, [r for r in a.records if r.lower().startswith(prefix.lower())] if a.status == "ok" else []


def _policy(j: _Judge, d: str) -> list[Check]:
    out: list[Check] = []
    a, spf = _txt(j, d, "v=spf1")
    if (f := _failed(a)) is not None:
        return [f]
    if spf:
        out.append(Check("names", f"SPF {d}", "ok", spf[0], facts={"records": spf}))
    else:
        out.append(
            Check(
                "names",
                f"SPF {d}",
                "warning",
                f"{d} has no SPF record: receivers may take mail from the new server for spam",
                f'add {d}. IN TXT "v=spf1 mx -all" (with every host that sends for {d})',
            )
        )
    a, dmarc = _txt(j, f"_dmarc.{d}", "v=DMARC1")
    if (f := _failed(a)) is not None:
        out.append(f)
    elif dmarc:
        out.append(Check("names", f"DMARC {d}", "ok", dmarc[0], facts={"records": dmarc}))
    else:
        out.append(
            Check(
                "names",
                f"DMARC {d}",
                "warning",
                f"{d} has no DMARC record: large receivers (Gmail, Outlook) rate its mail down",
                f'add _dmarc.{d}. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@{d}"',
            )
        )
    if not j.n.dkim_selectors:
        out.append(
            Check(
                "names",
                f"DKIM {d}",
                "warning",
                "no DKIM selector is named, so DKIM was not checked",
                "name the target's selectors in [organization] dkim_selectors",
            )
        )
    for sel in j.n.dkim_selectors:
        name = f"{sel}._domainkey.{d}"
        a, keys = _txt(j, name, "v=DKIM1")
        keys = keys or ([r for r in a.records if "p=" in r] if a.status == "ok" else [])
        if (f := _failed(a)) is not None:
            out.append(f)
        elif keys:
            out.append(Check("names", f"DKIM {name}", "ok", f"selector {sel} has a key", facts={"selector": sel}))
        else:
            out.append(
                Check(
                    "names",
                    f"DKIM {name}",
                    "warning",
                    f"no DKIM key at {name}: mail the target signs with selector {sel} fails DKIM",
                    f'publish the target\'s public key: {name}. IN TXT "v=DKIM1; k=rsa; p=<key>"',
                )
            )
    return out


def known_names(configured: Iterable[str], hosts: Sequence[str]) -> frozenset[str]:
    """A side's names: ``configured`` and each of ``hosts`` that is a name, not an address."""
    out = {norm(n) for n in configured}
    for h in hosts:
        if h and not _is_address(h):
            out.add(norm(h))
    return frozenset(out)


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


#: Above this TCP connect time a server counts as slow (every IMAP command waits a round trip).
SLOW_MS = 500.0


def reach(
    role: str,
    service: str,
    host: str,
    port: int,
    rtt_ms: float | None,
    error: str = "",
    *,
    slow_ms: float = SLOW_MS,
) -> Check:
    """The ``network`` area's check of one server endpoint: ``rtt_ms`` None means it could not be
    reached (``error`` says why). Unreachable is blocked with exit 75 (temporary: start it, open
    the way); slower than ``slow_ms`` to connect is a warning."""
    subject = f"{role} {service} {host}:{port}"
    if rtt_ms is None:
        what = f"the {role}'s {service} service can't be reached ({error or 'no connection'}): " + (
            "nothing can be written there" if role == "target" else "nothing can be read from it"
        )
        fix = f"start the service, or open the way from this machine to {host}:{port} (firewall, routing)"
        return Check("network", subject, "blocked", what, fix, exit_code=75)
    if rtt_ms > slow_ms:
        return Check(
            "network",
            subject,
            "warning",
            f"{rtt_ms:.0f} ms to connect (over {slow_ms:.0f} ms): every command waits that long, "
            "the migration will be slow",
            "run mailferry nearer the servers (same network), or raise accounts_in_parallel",
            facts={"rtt_ms": rtt_ms},
        )
    return Check("network", subject, "ok", f"reachable, {rtt_ms} ms to connect", facts={"rtt_ms": rtt_ms})
