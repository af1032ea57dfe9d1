"""DNS lookups (dnspython) and TCP reachability for the readiness and cut-over checks.

Answers come back as plain data (:class:`Answer`), so that the judging in
:mod:`mailferry.verify.names` is pure and is tested on tables of answers.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import dns.exception
import dns.resolver

from mailferry.model.readiness import Answer


def _text(rtype: str, rdata: object) -> str:
    if rtype == "TXT":
        return b"".join(getattr(rdata, "strings", ())).decode("utf-8", "replace")
    return str(rdata).replace(". ", " ").rstrip(".").lower() if rtype != "A" else str(rdata)


class Resolver:
    """Asks ``server`` (host, port), or the system's resolver when None; ``timeout`` seconds a question."""

    def __init__(self, server: tuple[str, int] | None = None, *, timeout: float = 3.0) -> None:
        self._broken = ""
        if server is None:
            try:
                self._r = dns.resolver.Resolver()
            except dns.exception.DNSException as e:  # no /etc/resolv.conf, or one naming no server
                self._r = dns.resolver.Resolver(configure=False)
                self._broken = f"this machine has no usable resolver configuration ({type(e).__name__})"
        else:
            self._r = dns.resolver.Resolver(configure=False)
            self._r.nameservers = [server[0]]
            self._r.port = server[1]
        self._r.lifetime = timeout
        self._r.timeout = timeout
        self.server = f"{server[0]}:{server[1]}" if server else "the system resolver"
        self._cache: dict[tuple[str, str], Answer] = {}
        self._silent = ""  # set once the server let a question time out: later ones aren't asked

    def query(self, name: str, rtype: str) -> Answer:
        """The answer to one question (cached). Once the server has not answered in time, every
        later question is answered with that error at once: a dead resolver costs one timeout,
        not one per record the checks ask for."""
        name, rtype = name.rstrip(".").lower(), rtype.upper()
        key = (name, rtype)
        if key not in self._cache:
            if self._silent:
                return Answer(name, rtype, "error", error=self._silent)
            self._cache[key] = self._ask(name, rtype)
        return self._cache[key]

    def _ask(self, name: str, rtype: str) -> Answer:
        if self._broken:
            return Answer(name, rtype, "error", error=self._broken)
        try:
            answer = self._r.resolve(name, rtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(name, rtype, "nxdomain")
        except dns.resolver.NoNameservers as e:
            del e
            return Answer(name, rtype, "error", error=f"{self.server} gave no usable answer (SERVFAIL or REFUSED)")
        except dns.exception.Timeout:
            self._silent = f"{self.server} did not answer in time"
            return Answer(name, rtype, "error", error=self._silent)
        except dns.exception.DNSException as e:
            return Answer(name, rtype, "error", error=f"{self.server}: {type(e).__name__}")
        rrset = answer.rrset
        if rrset is None:
            return Answer(name, rtype, "nodata")
        return Answer(name, rtype, "ok", tuple(sorted(_text(rtype, r) for r in rrset)))


@dataclass(frozen=True, slots=True)
class Reach:
    host: str
    port: int
    ok: bool
    rtt_ms: float | None = None
    error: str = ""


def tcp_reach(host: str, port: int, timeout: float = 3.0) -> Reach:
    """Opens (and closes) one TCP connection: reachable or why not, and how long the handshake took."""
    start = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return Reach(host, port, False, error=f"no answer within {timeout:g} s")
    except OSError as e:
        return Reach(host, port, False, error=e.strerror or type(e).__name__)
    return Reach(host, port, True, round((time.perf_counter() - start) * 1000, 1))
