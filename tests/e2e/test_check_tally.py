"""End to end against real Dovecot and Cyrus: what ``check`` reads of a source folder without
reading each message (STATUS MESSAGES SIZE, SELECT's FLAGS confirmed by SEARCH KEYWORD, SEARCH
LARGER) is what reading every message's size and flags gives.

Both servers offer ``STATUS=SIZE`` (RFC 8438), and both keep a keyword in SELECT's FLAGS once it
was set in the folder, on a message or not any more: the folders here hold such a keyword, an
expunged message and an empty folder, the cases where a shortcut could drift from the messages.
"""

from __future__ import annotations

from typing import Any

import pytest
from imapclient import IMAPClient

from mailferry.connectors.imap import Endpoint, FolderTally, ImapStore, Login
from mailferry.engine.blockers import folder_tally
from mailferry.sandbox.servers import seed_messages

USERS = {"tally": "tallypw"}
THRESHOLD = 5_000


def message(i: int, size: int) -> bytes:
    return f"From: a@example.org\r\nSubject: t{i}\r\nMessage-ID: <t{i}@example.org>\r\n\r\n".encode() + b"y" * size


def plant(host: str, port: int, prefix: str) -> dict[str, str]:
    """The folders, each with what it should tally to; returns role -> folder name."""
    names = {"mixed": prefix + "Mixed", "expunged": prefix + "Expunged", "empty": prefix + "Empty"}
    pw = USERS["tally"]
    seed_messages(
        host,
        port,
        "tally",
        pw,
        names["mixed"],
        [message(1, 100), message(2, 6_000), message(3, 70_000), message(4, 10)],
        per_message_flags=[("$Used",), ("$Gone", "\\Seen"), ("$Big",), ("\\Flagged",)],
    )
    seed_messages(host, port, "tally", pw, names["expunged"], [message(5, 9_000), message(6, 50)], flags=("$Once",))
    c = IMAPClient(host, port, ssl=False, timeout=20)
    try:
        c.login("tally", pw)
        c.select_folder(names["mixed"])
        c.remove_flags(c.search(["KEYWORD", "$Gone"]), ["$Gone"])  # defined in the folder, on no message
        c.select_folder(names["expunged"])
        c.delete_messages(c.search(["LARGER", "1000"]))
        c.expunge()  # its $Once stays defined, with the small message
        c.close_folder()
        c.create_folder(names["empty"])
    finally:
        c.logout()
    return names


@pytest.fixture(scope="module")
def sources(dovecot_factory: Any, cyrus_factory: Any) -> dict[str, tuple[Any, dict[str, str]]]:
    dovecot = dovecot_factory(style="slash", users=USERS)
    cyrus = cyrus_factory(users=USERS)
    return {
        "dovecot": (dovecot, plant(dovecot.host, dovecot.port, "")),
        "cyrus": (cyrus, plant(cyrus.host, cyrus.port, "INBOX/")),
    }


def store(server: Any) -> ImapStore:
    return ImapStore(Endpoint(server.host, server.port, "none"), Login("tally", USERS["tally"]), readonly=True)


def by_reading(server: Any, folder: str, larger_than: int | None) -> FolderTally:
    """The folder as check read it before: every message's size and flags (the path taken where
    the server lacks STATUS=SIZE, which neither of these does: the client is told it doesn't)."""
    st = store(server)
    try:
        assert "STATUS=SIZE" in st.capabilities
        st._caps = st.capabilities - {"STATUS=SIZE"}
        assert st.tally(folder, larger_than=larger_than) is None
        return folder_tally(st, folder, larger_than)
    finally:
        st.close()


@pytest.mark.parametrize("product", ["dovecot", "cyrus"])
@pytest.mark.parametrize("larger_than", [THRESHOLD, None])
def test_the_tally_from_status_and_searches_is_what_reading_every_message_gives(
    sources: dict[str, tuple[Any, dict[str, str]]], product: str, larger_than: int | None
) -> None:
    server, names = sources[product]
    st, plain = store(server), store(server)
    try:
        assert "ESEARCH" in st.capabilities  # keywords confirmed by SEARCH RETURN (MIN)
        plain._caps = plain.capabilities - {"ESEARCH"}  # and by a plain SEARCH
        fast = {role: st.tally(name, larger_than=larger_than) for role, name in names.items()}
        fast_plain = {role: plain.tally(name, larger_than=larger_than) for role, name in names.items()}
    finally:
        st.close()
        plain.close()
    slow = {role: by_reading(server, name, larger_than) for role, name in names.items()}
    assert fast == slow == fast_plain, (fast, slow, fast_plain)
    mixed, expunged, empty = fast["mixed"], fast["expunged"], fast["empty"]
    assert mixed is not None and expunged is not None and empty is not None
    # The defined-but-unused keyword is not reported, the used ones are; sizes as RFC822.SIZE.
    assert mixed.keywords == {"$Used", "$Big"} and mixed.messages == 4, mixed
    assert mixed.bytes == sum(len(message(i, n)) for i, n in ((1, 100), (2, 6_000), (3, 70_000), (4, 10))), mixed
    assert mixed.large == ([len(message(3, 70_000)), len(message(2, 6_000))] if larger_than else []), mixed
    assert expunged.messages == 1 and expunged.keywords == {"$Once"} and expunged.large == [], expunged
    assert empty == FolderTally(0, 0, [], set()), empty
