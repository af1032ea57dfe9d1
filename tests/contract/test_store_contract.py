"""The store contract of connectors/base.py, run against every real IMAP server we test with.

One suite, several backends (after restic's and vdirsyncer's conformance suites): Dovecot in both
namespace styles and Cyrus. What a method promises here is what the engine relies on.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailferry.connectors.imap import Endpoint, ImapStore, Login
from mailferry.errors import AuthError, ItemRefused, MailferryError, TemporaryFailure
from mailferry.model.mail import AppendItem

USERS = {"alice": "alicepw"}
WHEN = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def msg(i: int, size: int = 0) -> bytes:
    return f"From: a@b\r\nSubject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\nbody {i}\r\n".encode() + b"x" * size


@pytest.fixture(params=["dovecot-dotted", "dovecot-slash", "cyrus"])
def server(request, dovecot_factory, cyrus_factory_lazy):
    kind = request.param
    if kind == "cyrus":
        s = cyrus_factory_lazy(users=USERS, max_message_size=50_000)
    else:
        s = dovecot_factory(style=kind.split("-")[1], users=USERS, max_message_size=50_000)
    return s


@pytest.fixture
def cyrus_factory_lazy(request):
    def make(**kw):
        return request.getfixturevalue("cyrus_factory")(**kw)

    return make


def store(server, *, readonly: bool) -> ImapStore:
    return ImapStore(
        Endpoint(server.host, server.port, "none"), Login("alice", "alicepw"), readonly=readonly, label="t"
    )


def folder(server, name: str) -> str:
    return str(server.prefix + name)


def test_append_returns_uids_in_order_and_inventory_sees_them(server) -> None:
    w = store(server, readonly=False)
    f = folder(server, "Contract")
    w.create_folder(f)
    w.create_folder(f)  # creating an existing folder is not an error
    uids = w.append(f, [AppendItem(msg(i), ("\\Seen",) if i % 2 else (), WHEN) for i in range(5)])
    assert len(uids) == 5 and uids == sorted(uids) and None not in uids
    r = store(server, readonly=True)
    inv = r.inventory(f)
    assert [m.uid for m in inv] == uids
    assert [m.internaldate.timestamp() for m in inv] == [WHEN.timestamp()] * 5
    assert inv[1].flags == ("\\Seen",) and inv[0].flags == ()
    assert inv[0].message_id == "<m0@x>" and inv[0].subject == "m0"
    # after_uid beyond the last: nothing (IMAP's "N:*" would return the last one)
    assert r.inventory(f, after_uid=uids[-1]) == []
    assert [m.uid for m in r.inventory(f, after_uid=uids[2])] == uids[3:]
    w.close()
    r.close()


def test_fetch_is_exact_in_order_leaves_out_vanished_and_never_marks_seen(server) -> None:
    w = store(server, readonly=False)
    f = folder(server, "Fetch")
    w.create_folder(f)
    uids = w.append(f, [AppendItem(msg(i, size=i * 1000), (), WHEN) for i in range(4)])
    w.expunge_uids(f, [uids[1]])
    r = store(server, readonly=True)
    before = r.status(f)
    got = list(r.fetch(f, [uids[3], uids[1], uids[0]]))
    assert [u for u, _ in got] == [uids[3], uids[0]]
    assert got[0][1] == msg(3, size=3000) and got[1][1] == msg(0)
    assert all(m.flags == () for m in r.inventory(f))  # BODY.PEEK: nothing became \Seen
    assert r.status(f) == before
    assert r.uids(f) == [uids[0], uids[2], uids[3]]
    r.close()
    w.close()


def test_refused_append_raises_item_refused(server) -> None:
    w = store(server, readonly=False)
    with pytest.raises(ItemRefused):
        w.append("INBOX", [AppendItem(msg(1, size=80_000), (), WHEN)])
    assert w.append("INBOX", [AppendItem(msg(2), (), WHEN)])  # the connection is still good
    w.close()


def test_source_store_refuses_every_write(server) -> None:
    r = store(server, readonly=True)
    for call in (
        lambda: r.append("INBOX", [AppendItem(msg(1), (), WHEN)]),
        lambda: r.create_folder(folder(server, "Nope")),
        lambda: r.store_flags("INBOX", [(1, ("\\Seen",))]),
        lambda: r.expunge_uids("INBOX", [1]),
    ):
        with pytest.raises(MailferryError, match="source"):
            call()
    r.close()


def test_flags_changed_since_and_reconnect(server) -> None:
    w = store(server, readonly=False)
    f = folder(server, "Flags")
    w.create_folder(f)
    uids = w.append(f, [AppendItem(msg(i), (), WHEN) for i in range(3)])
    r = store(server, readonly=True)
    st = r.status(f)
    assert r.condstore and st.highestmodseq is not None
    w.store_flags(f, [(uids[1], ("\\Flagged", "$Label1"))])
    r.reconnect()
    changed = r.changed_flags(f, st.highestmodseq)
    assert set(changed) == {uids[1]} and set(changed[uids[1]][0]) == {"\\Flagged", "$Label1"}
    assert set(r.flags(f)[uids[1]]) == {"\\Flagged", "$Label1"}
    assert "\\*" in {p.lower() for p in (w.storable(f) or ())}
    r.close()
    w.close()


def test_wrong_password_is_an_auth_error_without_the_password(server) -> None:
    with pytest.raises(AuthError) as e:
        ImapStore(Endpoint(server.host, server.port, "none"), Login("alice", "Wr0ng-pass"), readonly=True, label="t")
    assert "Wr0ng-pass" not in str(e.value) and "alice" in str(e.value)


def test_case_sensitive_names_asks_the_server_and_leaves_nothing_behind(server) -> None:
    w = store(server, readonly=False)
    before = {f.name for f in w.list_folders()}
    # An interrupted earlier probe left one behind: it is cleaned up too.
    w.create_folder(server.prefix + "MailferryCaseProbe-0000dead")
    # Both servers keep names apart by case (Dovecot on a case-sensitive file system, Cyrus).
    assert w.case_sensitive_names(server.prefix) is True
    assert {f.name for f in w.list_folders()} == before
    w.close()
    with pytest.raises(MailferryError, match="source"):
        store(server, readonly=True).case_sensitive_names(server.prefix)


def test_pipelined_appends_answer_in_order_and_refuse_like_append(server) -> None:
    """append_send: several APPENDs on the wire before any answer is read (the engine's writers
    keep one in flight); each answer gives that batch's UIDs, a refusal of one batch leaves the
    next one landed, and an answer after the connection was renewed is unknown (TemporaryFailure)."""
    w = store(server, readonly=False)
    f = folder(server, "Pipelined")
    w.create_folder(f)
    first = w.append_send(f, [AppendItem(msg(i), (), WHEN) for i in range(3)])
    if first is None:
        pytest.skip("no LITERAL+: append() only")
    second = w.append_send(f, [AppendItem(msg(10 + i), ("\\Flagged",), WHEN) for i in range(2)])
    try:
        too_big = w.append_send(f, [AppendItem(msg(20, 60_000), (), WHEN)])
    except ItemRefused:  # not sent at all: the server announced APPENDLIMIT
        too_big = None
    third = w.append_send(f, [AppendItem(msg(30), (), WHEN)])
    assert second is not None and third is not None
    a, b = first(), second()
    if too_big is not None:
        with pytest.raises(ItemRefused):
            too_big()
    c = third()
    landed = [u for u in a + b + c if u is not None]
    if None not in a + b + c:
        assert landed == sorted(landed) and len(set(landed)) == 6
    r = store(server, readonly=True)
    inv = r.inventory(f)
    assert [m.size for m in inv] == [len(msg(i)) for i in (0, 1, 2, 10, 11, 30)]
    assert [("\\Flagged" in m.flags) for m in inv] == [False, False, False, True, True, False]
    lost = w.append_send(f, [AppendItem(msg(40), (), WHEN)])
    assert lost is not None
    w.reconnect()
    with pytest.raises(TemporaryFailure):
        lost()


@pytest.mark.parametrize("write", [False, True])
def test_status_and_inventory_of_the_selected_folder_see_other_connections_appends(server, write: bool) -> None:
    """The engine plans a folder again (after appends that ended without an answer) on the
    connection that still has it selected: STATUS and the inventory must show what the writers'
    connections appended meanwhile. Dovecot answers STATUS of the selected mailbox from the
    session's view (MESSAGES 0 here), and a UID FETCH misses what that view has not synced."""
    planner, writer = store(server, readonly=False), store(server, readonly=False)
    f = folder(server, "Selected")
    planner.create_folder(f)
    assert planner.status(f).messages == 0
    assert planner.inventory(f, write=write) == []  # selected, as the plan leaves it
    uids = writer.append(f, [AppendItem(msg(i), (), WHEN) for i in range(3)])
    st = planner.status(f)
    assert (st.messages, st.uidnext) == (3, uids[-1] + 1)
    assert [m.uid for m in planner.inventory(f, write=write)] == uids
    planner.close()
    writer.close()
