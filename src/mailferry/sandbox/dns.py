"""A throwaway DNS server for tests and the demo: Debian's dnsmasq on 127.0.0.1 at a high port,
answering only from the records it is given (``--no-resolv --no-hosts``: it never forwards a
query anywhere; a name it doesn't know under a zone it serves is NXDOMAIN).

Records are ``(name, type, value)``: ``("mail.new.test", "A", "127.0.0.1")``,
``("new.test", "MX", "10 mail.new.test")``, ``("_imaps._tcp.new.test", "SRV", "0 1 993 mail.new.test")``,
``("new.test", "TXT", "v=spf1 mx -all")``, ``("autoconfig.new.test", "CNAME", "mail.new.test")``.
``set_records`` replaces them all (dnsmasq reads its configuration at start: it is restarted).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mailferry.sandbox.servers import HOST, SandboxError, _check_free, _terminate, free_port

Record = tuple[str, str, str]


class _PortTaken(SandboxError):
    pass


def _check_free_udp(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise SandboxError(f"UDP port {HOST}:{port} is not free: {exc.strerror}") from None


def find_dnsmasq() -> str | None:
    return shutil.which("dnsmasq") or next((p for p in ("/usr/sbin/dnsmasq",) if Path(p).exists()), None)


def _lines(records: Sequence[Record], zones: Sequence[str]) -> list[str]:
    out = [f"local=/{z}/" for z in zones]  # answered here, NXDOMAIN when unknown, never forwarded
    for name, rtype, value in records:
        name, rtype = name.rstrip("."), rtype.upper()
        if rtype in ("A", "AAAA"):
            out.append(f"host-record={name},{value}")
        elif rtype == "MX":
            pref, host = value.split()
            out.append(f"mx-host={name},{host.rstrip('.')},{pref}")
        elif rtype == "SRV":
            prio, weight, port, target = value.split()
            out.append(f"srv-host={name},{target.rstrip('.')},{port},{prio},{weight}")
        elif rtype == "TXT":
            out.append(f'txt-record={name},"{value}"')
        elif rtype == "CNAME":
            out.append(f"cname={name},{value.rstrip('.')}")
        else:
            raise ValueError(f"the sandbox DNS server can't serve {rtype} records")
    return out


class DnsServer:
    """dnsmasq serving ``records`` for ``zones`` on 127.0.0.1:``port`` (UDP and TCP)."""

    def __init__(self, directory: Path, records: Sequence[Record], zones: Sequence[str], port: int = 0) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.zones = tuple(zones)
        self.records: list[Record] = list(records)
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, records: Sequence[Record], zones: Sequence[str], directory: Path | None = None) -> DnsServer:
        server = cls(directory or Path(tempfile.mkdtemp(prefix="mailferry-dns-")), records, zones)
        server._launch()
        return server

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def set_records(self, records: Sequence[Record]) -> None:
        self.stop()
        self.records = list(records)
        self._launch()

    def _launch(self) -> None:
        """Starts dnsmasq on ``self.port``; when a restart finds that port taken (between the stop
        and the start another process on a busy machine may bind it, e.g. as the local port of an
        outgoing connection), waits a moment, then moves to a fresh port: read ``address`` after
        ``set_records``."""
        for attempt in range(4):
            deadline = time.monotonic() + (1.0 if attempt < 3 else 0)
            while True:
                try:
                    _check_free(self.port)
                    _check_free_udp(self.port)
                    break
                except SandboxError:
                    if time.monotonic() >= deadline:
                        self.port = free_port()
                        break
                    time.sleep(0.1)
            try:
                self._launch_once()
                return
            except _PortTaken:
                self.port = free_port()
        raise SandboxError("dnsmasq found no free port to listen on")

    def _launch_once(self) -> None:
        dnsmasq = find_dnsmasq()
        if dnsmasq is None:
            raise SandboxError("dnsmasq is not installed (Debian package dnsmasq-base)")
        conf = self.directory / "dnsmasq.conf"
        conf.write_text("\n".join(_lines(self.records, self.zones)) + "\n", encoding="utf-8")
        log = self.directory / "dnsmasq.log"
        argv = [
            dnsmasq,
            "--keep-in-foreground",
            f"--conf-file={conf}",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--port={self.port}",
            f"--listen-address={HOST}",
            "--bind-interfaces",
            "--cache-size=0",
            f"--pid-file={self.directory / 'dnsmasq.pid'}",
            "--user=root",
            "--log-facility=-",
        ]
        start = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = log.read_bytes()[start:].decode(errors="replace")[-2000:]
                if "in use" in text:
                    raise _PortTaken(text)
                raise SandboxError(f"dnsmasq exited: {text}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise SandboxError(f"dnsmasq did not listen on {HOST}:{self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
            self.proc = None

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
