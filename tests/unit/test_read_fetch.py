"""``read_fetch``: the FETCH answer read straight off the connection, in the shape parse_fetch takes.

The connection is a byte stream (what a server sends after ``UID FETCH``); the servers tests run
the same code against Dovecot and Cyrus.
"""

from __future__ import annotations

import imaplib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.connectors.imap import read_fetch
from mailferry.formats.imap_fetch import parse_fetch

TAG = b"MFAB12"


class Wire:
    """What ``read_fetch`` uses of an ``imaplib.IMAP4``: readline, read and the tag table."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.tagged_commands: dict[bytes, object] = {TAG: None}

    def readline(self) -> bytes:
        return self._f.readline()

    def read(self, n: int) -> bytes:
        return self._f.read(n)


def response(msgs: list[tuple[int, tuple[str, ...], bytes]], *, noise: bool) -> bytes:
    out = []
    for seq, (uid, flags, body) in enumerate(msgs, 1):
        if noise:
            out.append(b"* %d EXISTS\r\n* OK [HIGHESTMODSEQ 9] x\r\n" % seq)
        out.append(
            b"* %d FETCH (UID %d FLAGS (%s) BODY[] {%d}\r\n" % (seq, uid, " ".join(flags).encode(), len(body))
            + body
            + b" MODSEQ (%d))\r\n" % (uid + 1)
        )
    return b"".join(out) + TAG + b" OK Fetch completed (0.001 + 0.000 secs).\r\n"


bodies = st.binary(max_size=300).map(lambda b: b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
keywords = st.sampled_from(["\\Seen", "\\Answered", "$Forwarded", "Work"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 10**9), st.lists(keywords, max_size=3, unique=True), bodies), max_size=8),
    st.booleans(),
)
def test_every_message_arrives_whole(msgs: list[tuple[int, list[str], bytes]], noise: bool) -> None:
    """Literals with any bytes (a ``}`` or ``{12}`` at a line end inside one included), other
    untagged responses in between: each message's UID, flags, body and the item after its literal
    come out exactly, and the tag leaves imaplib's table."""
    unique = list({uid: (uid, tuple(f), b) for uid, f, b in msgs}.values())
    wire = Wire(response(unique, noise=noise))
    typ, data = read_fetch(wire, TAG)
    assert typ == "OK"
    got = parse_fetch(data)
    assert {u: (g.flags, g.literal, g.modseq) for u, g in got.items()} == {
        uid: (flags, body, uid + 1) for uid, flags, body in unique
    }
    assert TAG not in wire.tagged_commands


def test_literal_that_looks_like_a_literal() -> None:
    body = b"line ending {5}\r\nand more {0}\r\n"
    typ, data = read_fetch(Wire(response([(3, (), body)], noise=False)), TAG)
    assert typ == "OK" and parse_fetch(data)[3].literal == body


def test_no_and_bad_give_the_status_and_its_text() -> None:
    for status in (b"NO", b"BAD"):
        wire = Wire(b"* 1 EXISTS\r\n" + TAG + b" " + status + b" [SERVERBUG] Internal error\r\n")
        assert read_fetch(wire, TAG) == (status.decode(), [b"[SERVERBUG] Internal error"])
        assert TAG not in wire.tagged_commands


@pytest.mark.parametrize(
    "stream",
    [
        b"* 1 FETCH (UID 4 BODY[] {10}\r\nabc",  # the connection closed inside a literal
        b"* 1 FETCH (UID 4 FLAGS ())\r\n",  # ... or before the tagged answer
        b"* BYE shutting down\r\n",
        b"* 1 FETCH (UID 4 FLAGS ())",  # a line without its CRLF
    ],
)
def test_lost_connection_or_bye_aborts(stream: bytes) -> None:
    wire = Wire(stream)
    with pytest.raises(imaplib.IMAP4.abort):
        read_fetch(wire, TAG)
    assert TAG not in wire.tagged_commands
