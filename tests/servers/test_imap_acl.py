"""ImapStore's ACL side (RFC 4314) against real servers: GETACL, LISTRIGHTS, MYRIGHTS, the
refusal when the ACL may not be read, SETACL/DELETEACL, and the sandbox's ACL setups (Dovecot's
ACL plugin with a shared namespace and groups, Cyrus' groups from a system group)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from mailferry.connectors.imap import AclRefused, Endpoint, ImapStore, Login
from mailferry.formats.acl import STANDARD, parse_rights, target_rights
from mailferry.sandbox.servers import CyrusServer, DovecotServer, system_group

pytestmark = pytest.mark.servers

USERS = {"alice": "alicepw", "bob": "bobpw", "dave": "davepw"}


def store(server: DovecotServer | CyrusServer, user: str, *, readonly: bool = False) -> ImapStore:
    return ImapStore(Endpoint(server.host, server.port, "none"), Login(user, USERS[user]), readonly=readonly)


@pytest.fixture(scope="module")
def group() -> Iterator[str]:
    with system_group(f"mfacl{uuid.uuid4().hex[:6]}", ["dave"]) as name:
        yield name


@pytest.fixture(scope="module")
def dovecot(dovecot_factory: Callable[..., DovecotServer], group: str) -> DovecotServer:
    return dovecot_factory(
        style="slash", users=USERS, acl=True, acl_groups={"dave": [group]}, acl_global="Locked owner lrwstipekxe\n"
    )


@pytest.fixture(scope="module")
def cyrus(cyrus_factory: Callable[..., CyrusServer]) -> CyrusServer:
    return cyrus_factory(users=USERS)


def test_dovecot_acl_rights_and_refusal(dovecot: DovecotServer, group: str) -> None:
    alice = store(dovecot, "alice")
    try:
        assert alice.acl and alice.server_product == "Dovecot"
        alice.create_folder("Team")
        alice.create_folder("Locked")
        assert parse_rights(alice.get_acl("Team")["alice"]) == frozenset(STANDARD)
        alice.set_acl("Team", f"${group}", "lrs")
        alice.set_acl("Team", "-dave", "s")
        assert alice.get_acl("Team")[f"${group}"] == "lrs"
        words = alice.list_rights("Team", "anyone")
        support = target_rights(alice.capabilities, words)
        assert support.rfc4314 and support.known == frozenset(STANDARD)
        assert parse_rights(alice.my_rights("Team")) == frozenset(STANDARD)
        with pytest.raises(AclRefused, match="Locked"):
            alice.get_acl("Locked")  # the global ACL denies the owner 'a' there
        alice.set_acl("Team", "-dave", "")  # DELETEACL
        assert "-dave" not in alice.get_acl("Team")
    finally:
        alice.close()
    dave = store(dovecot, "dave", readonly=True)
    try:
        names = {f.name for f in dave.list_folders()}
        assert "shared/alice/Team" in names  # the group member sees it through the shared namespace
        assert dave.my_rights("shared/alice/Team") == "lrs"
        assert {f.name for f in dave.own_folders()} == {"INBOX"}  # neither "shared" nor alice's
        with pytest.raises(AclRefused):
            dave.get_acl("shared/alice/Team")  # no 'a' there
    finally:
        dave.close()


def test_source_store_refuses_acl_writes(dovecot: DovecotServer) -> None:
    alice = store(dovecot, "alice", readonly=True)
    try:
        with pytest.raises(Exception, match="read-only"):
            alice.set_acl("INBOX", "bob", "lr")
    finally:
        alice.close()


def test_cyrus_acl_and_groups(cyrus: CyrusServer, group: str) -> None:
    alice = store(cyrus, "alice")
    try:
        assert alice.acl and alice.server_product == "Cyrus IMAP"
        alice.create_folder("INBOX/Team")
        alice.set_acl("INBOX/Team", f"group:{group}", "lrsi")
        alice.set_acl("INBOX/Team", "bob", "lrc")
        assert parse_rights(alice.get_acl("INBOX/Team")["bob"]) == frozenset("lrkx")  # Cyrus: c is k and x
        support = target_rights(alice.capabilities, alice.list_rights("INBOX/Team", "anyone"))
        assert support.rfc4314 and {"n", "0", "9"} <= support.known
    finally:
        alice.close()
    dave = store(cyrus, "dave", readonly=True)
    try:
        assert parse_rights(dave.my_rights("user/alice/Team")) == frozenset("lrsi")  # through the group
    finally:
        dave.close()
