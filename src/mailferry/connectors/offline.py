"""Refusing mailferry's own connections to some servers, for ``cutover check --simulate-offline``:
while :func:`refusing` is active, every TCP connection this process opens to one of the given
(host, port) endpoints fails at once as if the server were switched off, whichever connector
(IMAP, HTTP, ManageSieve, LDAP) opens it. Nothing on the servers is touched."""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
from collections.abc import Collection, Iterator
from typing import Any

_lock = threading.Lock()
_refused: set[tuple[str, int]] = set()
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _blocked(address: Any) -> bool:
    if not isinstance(address, tuple) or len(address) < 2:
        return False
    host, port = str(address[0]).lower(), int(address[1])
    return (host, port) in _refused


def _connect(self: socket.socket, address: Any) -> None:
    if _blocked(address):
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused by mailferry: simulating the source switched off")
    _original_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    if _blocked(address):
        return errno.ECONNREFUSED
    return _original_connect_ex(self, address)


def _addresses(host: str, port: int) -> set[tuple[str, int]]:
    out = {(host.lower(), port)}
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            out.add((str(info[4][0]).lower(), port))
    return out


@contextlib.contextmanager
def refusing(endpoints: Collection[tuple[str, int]]) -> Iterator[None]:
    """Refuse every connection to ``endpoints`` (host names are resolved once, here)."""
    wanted = set().union(*(_addresses(h, p) for h, p in endpoints)) if endpoints else set()
    with _lock:
        _refused.update(wanted)
        socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
        socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        with _lock:
            _refused.difference_update(wanted)
            if not _refused:
                socket.socket.connect = _original_connect  # type: ignore[method-assign]
                socket.socket.connect_ex = _original_connect_ex  # type: ignore[method-assign]
