"""``mailferry console``: bind, print the login URL once, serve until interrupted.

The socket is bound here (port 0 picks a free one) before the URL is printed, so the URL is
right. uvicorn's access log is off: it would write the login URL, token included, into the log.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mailferry.console.security import Sessions, check_listen

if TYPE_CHECKING:
    import uvicorn

    from mailferry.console.app import Console


@dataclass
class Prepared:
    """A console bound to its socket, not serving yet: ``server.run(sockets=[sock])`` serves
    (tests run it in a thread and stop it with ``server.should_exit = True``)."""

    console: Console
    server: uvicorn.Server
    sock: socket.socket
    url: str  # the login URL, token included

    def run(self) -> None:
        self.server.run(sockets=[self.sock])


def prepare(
    place: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    certificate: Path | None = None,
    key: Path | None = None,
) -> Prepared:
    import uvicorn

    from mailferry.console.app import Console, create_app

    check_listen(host, str(certificate) if certificate else None, str(key) if key else None)
    tls = certificate is not None
    console = Console(place, sessions=Sessions(), secure=tls)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(64)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    url = f"{'https' if tls else 'http'}://{shown}:{bound}/login?token={console.sessions.token}"
    config = uvicorn.Config(
        create_app(console),
        access_log=False,
        log_level="warning",
        ssl_certfile=str(certificate) if certificate else None,
        ssl_keyfile=str(key) if key else None,
        timeout_graceful_shutdown=2,
    )
    return Prepared(console, uvicorn.Server(config), sock, url)


def serve(
    place: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    certificate: Path | None = None,
    key: Path | None = None,
    out: TextIO | None = None,
) -> int:
    p = prepare(place, host=host, port=port, certificate=certificate, key=key)
    out = out or sys.stdout
    out.write(
        f"mailferry console for {p.console.path}\n"
        f"open this URL to log in (it holds a one-time access token; keep it private):\n"
        f"    {p.url}\n"
        "it logs in one browser once; for another login, restart the console (a new URL is printed)\n"
        "stop with Ctrl-C (runs started from the console go on)\n"
    )
    out.flush()
    p.run()
    return 0
