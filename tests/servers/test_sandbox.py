"""The throw-away servers behave as the rest of the test suite assumes (mailferry.sandbox)."""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time
from collections.abc import Callable

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from conftest import corpus_messages
from mailferry.sandbox.servers import (
    CyrusServer,
    DovecotServer,
    TcpProxy,
    free_port,
    seed_messages,
)

pytestmark = pytest.mark.servers

MSG = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"


def connect(port: int, user: str = "alice", password: str = "alicepw") -> IMAPClient:
    client = IMAPClient("127.0.0.1", port, ssl=False, timeout=10)
    client.login(user, password)
    return client


def big_message(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    return MSG + line * (size // len(line))


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("style", "prefix", "sep", "nested"),
    [("dotted", "INBOX.", ".", "INBOX.Projects.2024"), ("slash", "", "/", "Projects/2024")],
)
def test_dovecot_style_namespace_and_folders(
    dovecot_factory: Callable[..., DovecotServer], style: str, prefix: str, sep: str, nested: str
) -> None:
    server = dovecot_factory(style=style)
    assert (server.prefix, server.separator) == (prefix, sep)
    assert server.folder("Projects", "2024") == nested
    client = connect(server.port)
    try:
        caps = set(client.capabilities())
        for cap in (
            b"CONDSTORE",
            b"QRESYNC",
            b"MULTIAPPEND",
            b"LITERAL+",
            b"UIDPLUS",
            b"SPECIAL-USE",
            b"NAMESPACE",
            b"QUOTA",
        ):
            assert cap in caps
        ns = client.namespace()
        assert ns.personal == ((prefix, sep),)
        client.create_folder(nested)
        client.create_folder(server.folder("Café"))  # modified UTF-7 on the wire, str here
        client.create_folder(server.folder("Sent"))
        listed = {name: flags for flags, _, name in client.list_folders()}
        assert nested in listed and server.folder("Café") in listed
        # declared special-use, not auto-created: only the folder we created exists
        assert b"\\Sent" in listed[server.folder("Sent")]
        assert server.folder("Trash") not in listed
    finally:
        client.logout()
    # every folder is a maildir under the user's home
    assert (server.maildir("alice") / "cur").is_dir()
    assert "Projects" in server.doveadm("mailbox", "list", "-u", "alice")


def test_dovecot_without_special_use(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory(style="dotted", special_use=False, master=None)
    client = connect(server.port)
    try:
        client.create_folder("INBOX.Sent")
        flags = {name: f for f, _, name in client.list_folders()}["INBOX.Sent"]
        assert b"\\Sent" not in flags
    finally:
        client.logout()
    with pytest.raises(LoginError):
        connect(server.port, "alice*admin", "adminpw")


def test_dovecot_master_user_login_both_ways(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory()
    seed_messages(server.host, server.port, "alice", "alicepw", "INBOX", [MSG])

    client = connect(server.port, "alice*admin", "adminpw")  # LOGIN user*master
    assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
    client.logout()

    client = IMAPClient("127.0.0.1", server.port, ssl=False, timeout=10)
    client.plain_login(identity="admin", password="adminpw", authorization_identity="alice")
    assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1  # alice's, not admin's
    client.logout()

    client = IMAPClient("127.0.0.1", server.port, ssl=False, timeout=10)
    with pytest.raises(LoginError):
        client.plain_login(identity="admin", password="wrong", authorization_identity="alice")
    with pytest.raises(LoginError):
        connect(server.port, "bob*alice", "alicepw")  # ordinary users are not masters


def test_dovecot_tls_verifies_only_with_ca_file(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory(tls=True)
    assert server.tls_port is not None and server.ca_file is not None
    trusted = ssl.create_default_context(cafile=str(server.ca_file))
    for host in (server.cert_hostname, "127.0.0.1"):
        client = IMAPClient(host, server.tls_port, ssl=True, ssl_context=trusted, timeout=10)
        client.login("alice", "alicepw")
        client.logout()
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient("127.0.0.1", server.tls_port, ssl=True, ssl_context=ssl.create_default_context(), timeout=10)


def test_dovecot_refuses_big_message_and_reports_quota(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory(max_message_size=10_000, quota_mb=1)
    imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    try:
        imap.login("alice", "alicepw")
        typ, data = imap.append("INBOX", "", None, big_message(20_000))
        assert typ == "NO", data  # a tagged NO, not BAD, not a dropped connection
        typ, _ = imap.append("INBOX", "", None, big_message(5_000))
        assert typ == "OK"
    finally:
        imap.logout()
    client = connect(server.port)
    try:
        _, quotas = client.get_quota_root("INBOX")
        assert [(q.resource, q.limit) for q in quotas] == [("STORAGE", 1024)]
    finally:
        client.logout()


def test_dovecot_restart_keeps_data_and_drops_clients(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory(tls=True)
    uids = seed_messages(server.host, server.port, "alice", "alicepw", "Archive", [MSG, MSG])
    assert len(uids) == 2
    before = connect(server.port)
    validity = before.select_folder("Archive")[b"UIDVALIDITY"]
    ports = (server.port, server.tls_port)
    server.restart()
    assert (server.port, server.tls_port) == ports
    with pytest.raises((IMAPClientError, OSError)):
        before.noop()
    after = connect(server.port)
    try:
        assert after.select_folder("Archive")[b"UIDVALIDITY"] == validity
        assert after.search() == uids
    finally:
        after.logout()


def test_dovecot_add_user(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory()
    server.add_user("dave", "davepw")
    connect(server.port, "dave", "davepw").logout()
    connect(server.port, "dave*admin", "adminpw").logout()


def test_proxy_forwards_and_cut_all_drops_live_connection(
    dovecot_factory: Callable[..., DovecotServer],
) -> None:
    server = dovecot_factory()
    seed_messages(server.host, server.port, "alice", "alicepw", "INBOX", [big_message(50_000)])
    with TcpProxy.start(server.host, server.port) as proxy:
        client = connect(proxy.port)
        client.select_folder("INBOX")
        body = client.fetch([1], ["BODY.PEEK[]"])[1][b"BODY[]"]
        assert body == big_message(50_000)
        assert proxy.live_connections == 1
        assert proxy.cut_all() == 1
        with pytest.raises((IMAPClientError, OSError)):
            client.noop()
        # new connections still pass; a byte budget cuts them mid-transfer
        connect(proxy.port).logout()
        proxy.set_cut_after_bytes(5_000)
        client = connect(proxy.port)
        client.select_folder("INBOX")
        with pytest.raises((IMAPClientError, OSError)):
            client.fetch([1], ["BODY.PEEK[]"])
        proxy.set_cut_after_bytes(None)
        connect(proxy.port).logout()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()


def test_cyrus_namespace_admin_authzid_and_8bit(cyrus_factory: Callable[..., CyrusServer]) -> None:
    started = time.monotonic()
    server = cyrus_factory()
    assert time.monotonic() - started < 10
    client = connect(server.port)
    try:
        assert client.namespace().personal == (("INBOX/", "/"),)
        assert [name for _, _, name in client.list_folders()] == ["INBOX"]  # autocreated at start
    finally:
        client.logout()

    corpus = dict(corpus_messages())
    utf8 = crlf(corpus["rfc6532/utf8_headers.eml"])
    assert any(b > 0x7F for b in utf8.split(b"\r\n\r\n")[0])  # 8-bit bytes in the header
    invalid = crlf(corpus["rfc2822/example13.eml"])  # "From  :" obsolete header syntax
    uids = seed_messages(server.host, server.port, "alice", "alicepw", "INBOX", [utf8])

    client = IMAPClient("127.0.0.1", server.port, ssl=False, timeout=10)
    client.plain_login(identity="cyrus", password="cyruspw", authorization_identity="alice")
    try:
        client.select_folder("INBOX")
        assert client.fetch(uids, ["BODY.PEEK[]"])[uids[0]][b"BODY[]"] == utf8  # munge8bit: no
        with pytest.raises(IMAPClientError, match="invalid header"):
            client.append("INBOX", invalid)
    finally:
        client.logout()

    client = IMAPClient("127.0.0.1", server.port, ssl=False, timeout=10)
    with pytest.raises(LoginError):
        client.plain_login(identity="bob", password="bobpw", authorization_identity="alice")


def test_cyrus_refuses_big_message(cyrus_factory: Callable[..., CyrusServer]) -> None:
    server = cyrus_factory(users={"alice": "alicepw"}, max_message_size=10_000)
    imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    try:
        imap.login("alice", "alicepw")
        typ, data = imap.append("INBOX", "", None, big_message(20_000))
        assert typ == "NO", data
    finally:
        imap.logout()
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
