"""Seed a sandbox server with the sample organization (:mod:`mailferry.sandbox.sample`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mailferry.sandbox.sample import FOLDERS, SampleMessage, mailbox
from mailferry.sandbox.servers import seed_messages


def server_name(server: Any, path: tuple[str, ...]) -> str:
    """A logical path in the server's own naming (its prefix and separator)."""
    if path == ("INBOX",):
        return "INBOX"
    return str(server.prefix + server.separator.join(path))


def seed_sample(server: Any, user: str, password: str, *, messages: int = 24, corpus: Sequence[bytes] = ()) -> int:
    """The sample mailbox of ``user``, plus ``corpus`` messages (byte for byte) in INBOX. Returns the count."""
    by_folder: dict[tuple[str, ...], list[SampleMessage]] = defaultdict(list)
    for m in mailbox(user, messages=messages):
        by_folder[m.folder].append(m)
    n = 0
    for path in FOLDERS:
        msgs = by_folder.get(path, [])
        seed_messages(
            server.host,
            server.port,
            user,
            password,
            server_name(server, path),
            [m.body for m in msgs],
            per_message_flags=[m.flags for m in msgs],
            internaldates=[m.internaldate for m in msgs],
        )
        n += len(msgs)
    if corpus:
        seed_messages(server.host, server.port, user, password, "INBOX", list(corpus))
        n += len(corpus)
    return n
