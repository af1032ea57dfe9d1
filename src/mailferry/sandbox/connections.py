"""Counting a server's connections on the server's side, for the tests and benchmarks that
prove a limit: the established TCP sockets whose local port is the server's, read from
/proc/net/tcp(6) (Linux), sampled in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType


def established_on(ports: Iterable[int]) -> dict[int, int]:
    """Established TCP sockets per local port of ``ports``, from one read of the tables. Counted
    once per (local, remote) address pair: /proc/net/tcp is read in pages, and a socket can be
    listed twice when the table changes between two pages."""
    wanted = set(ports)
    seen: dict[int, set[tuple[str, str]]] = {p: set() for p in wanted}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "01":
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in wanted:
                seen[port].add((fields[1], fields[2]))
    return {p: len(pairs) for p, pairs in seen.items()}


class ConnectionSampler:
    """The most connections each named port had at once, sampled every ``every`` seconds until
    the ``with`` block ends (a read of /proc/net/tcp costs milliseconds on a busy machine), and
    the first and last sample that saw any (:meth:`busy`)."""

    def __init__(self, ports: dict[str, int], *, every: float = 0.005) -> None:
        self.ports = ports
        self.every = every
        self.peak = dict.fromkeys(ports, 0)
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-sampler", daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def busy(self, name: str) -> float:
        """Seconds from the first sample that saw a connection on ``name`` to the last."""
        return self.last[name] - self.first[name] if name in self.first else 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            counts = established_on(self.ports.values())
            for name, port in self.ports.items():
                n = counts[port]
                self.peak[name] = max(self.peak[name], n)
                if n:
                    self.first.setdefault(name, now)
                    self.last[name] = now
            self.samples += 1
            time.sleep(self.every)
