"""The LDAP sandbox against real servers: two Samba AD DCs, slapd, and Dovecot reading users over LDAP.

Needs the fixtures of ``tests/ldap_fixtures.py`` (registered in conftest) and ldap3.
"""

from __future__ import annotations

import ssl
import struct
import time
from collections.abc import Callable

import pytest

from ldap_fixtures import SAMBA_TGT
from mailferry.sandbox.ldap_servers import SambaDC, Slapd, ldif_attr
from mailferry.sandbox.servers import DovecotServer

ldap3 = pytest.importorskip("ldap3")
from ldap3 import BASE, MODIFY_REPLACE, Connection, Server, Tls  # noqa: E402

pytestmark = pytest.mark.servers
PAGED_OID = "1.2.840.113556.1.4.319"


def sid_bytes(sid: str) -> bytes:
    parts = sid.split("-")
    subs = [int(x) for x in parts[3:]]
    return (
        struct.pack("<BB", int(parts[1]), len(subs))
        + int(parts[2]).to_bytes(6, "big")
        + b"".join(struct.pack("<I", x) for x in subs)
    )


def admin(server: SambaDC | Slapd) -> Connection:
    return Connection(
        Server(server.host, port=server.port), user=server.admin_dn, password=server.admin_password, auto_bind=True
    )


def can_bind(server: SambaDC | Slapd, user: str, password: str) -> tuple[bool, str]:
    conn = Connection(Server(server.host, port=server.port), user=user, password=password)
    ok = conn.bind()
    message = str(conn.result.get("message", ""))
    conn.unbind()
    return ok, message


def pages(conn: Connection, base: str, flt: str, size: int) -> list[int]:
    """Sizes of the pages a paged search returns."""
    sizes: list[int] = []
    cookie: bytes | None = None
    while True:
        conn.search(base, flt, attributes=["cn"], paged_size=size, paged_cookie=cookie)
        sizes.append(len(conn.entries))
        cookie = conn.result["controls"][PAGED_OID]["value"]["cookie"]
        if not cookie:
            return sizes


# --------------------------------------------------------------------------- Samba


@pytest.fixture(scope="module")
def src_dc(samba_factory: Callable[..., SambaDC]) -> SambaDC:
    dc = samba_factory()
    print(f"\nSambaDC {dc.realm} on {dc.ip} started in {dc.start_seconds:.2f} s")
    return dc


@pytest.fixture(scope="module")
def tgt_dc(samba_factory: Callable[..., SambaDC]) -> SambaDC:
    dc = samba_factory(**SAMBA_TGT)
    print(f"\nSambaDC {dc.realm} on {dc.ip} started in {dc.start_seconds:.2f} s")
    return dc


def test_two_domains_side_by_side_with_distinct_sids(src_dc: SambaDC, tgt_dc: SambaDC) -> None:
    sids = {}
    for dc in (src_dc, tgt_dc):
        conn = admin(dc)
        assert conn.search(dc.base_dn, "(objectClass=domain)", search_scope=BASE, attributes=["objectSid"])
        sids[dc.realm] = conn.entries[0].objectSid.value
        assert sids[dc.realm] == dc.domain_sid()
        assert sids[dc.realm].startswith("S-1-5-21-")
        conn.unbind()
    assert sids["SRC.TEST"] != sids["TGT.TEST"]
    assert src_dc.base_dn == "DC=src,DC=test" and tgt_dc.admin_dn == "CN=Administrator,CN=Users,DC=tgt,DC=test"


def test_exchange_schema_attributes_exist(src_dc: SambaDC) -> None:
    conn = admin(src_dc)
    schema = f"CN=Schema,CN=Configuration,{src_dc.base_dn}"
    for attr in ("proxyAddresses", "legacyExchangeDN", "targetAddress", "mailNickname", "msExchRecipientTypeDetails"):
        assert conn.search(schema, f"(lDAPDisplayName={attr})", attributes=["cn"]), attr


def test_users_contacts_groups_and_sid_history(src_dc: SambaDC, tgt_dc: SambaDC) -> None:
    conn = admin(src_dc)
    ou = f"OU=People,{src_dc.base_dn}"
    assert conn.add(ou, ["top", "organizationalUnit"]), conn.result
    user = f"CN=Alice Ant,{ou}"
    x500 = "X500:/o=OldOrg/ou=First Administrative Group/cn=Recipients/cn=alice"
    legacy = "/o=SrcOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice"
    assert conn.add(
        user,
        ["top", "person", "organizationalPerson", "user"],
        {
            "sAMAccountName": "alice",
            "userPrincipalName": "alice@src.test",
            "mail": "alice@src.test",
            "givenName": "Alice",
            "sn": "Ant",
            "userAccountControl": 512,
            "legacyExchangeDN": legacy,
            "proxyAddresses": ["SMTP:alice@src.test", "smtp:a.ant@src.test", x500],
            "mailNickname": "alice",
            "msExchRecipientTypeDetails": 1,
        },
    ), conn.result
    contact = f"CN=Ext One,{ou}"
    assert conn.add(
        contact,
        ["top", "person", "organizationalPerson", "contact"],
        {"mail": "ext1@partner.example", "targetAddress": "SMTP:ext1@partner.example"},
    ), conn.result
    group = f"CN=Sales,{ou}"
    assert conn.add(group, ["top", "group"], {"sAMAccountName": "sales", "member": [user, contact]}), conn.result

    assert conn.search(user, "(objectClass=*)", search_scope=BASE, attributes=["*", "memberOf", "objectSid"])
    entry = conn.entries[0]
    assert entry.objectSid.value.startswith(src_dc.domain_sid() + "-")
    assert x500 in entry.proxyAddresses.values
    assert entry.legacyExchangeDN.value == legacy
    assert entry.memberOf.value == group
    assert conn.search(src_dc.base_dn, f"(proxyAddresses={x500})", attributes=["cn"])
    assert [e.entry_dn for e in conn.entries] == [user]

    # sIDHistory: refused over LDAP (as in AD), written locally, then visible and searchable over LDAP.
    old_sids = [tgt_dc.domain_sid() + "-1105", "S-1-5-21-1-2-3-1106"]
    assert not conn.modify(user, {"sIDHistory": [(MODIFY_REPLACE, [sid_bytes(old_sids[0])])]})
    assert conn.result["description"] == "unwillingToPerform"
    started = time.monotonic()
    src_dc.set_sid_history(user, old_sids)
    assert time.monotonic() - started < 5
    assert conn.search(user, "(objectClass=*)", search_scope=BASE, attributes=["sIDHistory"])
    assert sorted(conn.entries[0].sIDHistory.values) == sorted(sid_bytes(s) for s in old_sids)
    for flt in (
        f"(sIDHistory={old_sids[1]})",
        "(sIDHistory=" + "".join(f"\\{b:02x}" for b in sid_bytes(old_sids[0])) + ")",
    ):
        assert conn.search(src_dc.base_dn, flt, attributes=["cn"])
        assert [e.entry_dn for e in conn.entries] == [user]


def test_ldaps_verifies_with_samba_ca_and_passwords_and_disabled_accounts(src_dc: SambaDC) -> None:
    assert src_dc.ca_file is not None and src_dc.ca_file.exists()
    # Samba's auto-generated certificate names dc1.SRC.TEST in its CN only (no subjectAltName):
    # verify the chain with ca.pem and the name with valid_names (we connect by IP).
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(src_dc.ca_file), valid_names=[src_dc.dns_name])
    conn = Connection(
        Server(src_dc.ip, port=src_dc.ldaps_port, use_ssl=True, tls=tls),
        user=src_dc.admin_dn,
        password=src_dc.admin_password,
        auto_bind=True,
    )
    dn = f"CN=Dan Dis,CN=Users,{src_dc.base_dn}"
    assert conn.add(
        dn, ["top", "person", "organizationalPerson", "user"], {"sAMAccountName": "dan", "userAccountControl": 514}
    )
    assert conn.modify(dn, {"unicodePwd": [(MODIFY_REPLACE, ['"Str0ng!Pass1"'.encode("utf-16-le")])]}), conn.result
    ok, message = can_bind(src_dc, dn, "Str0ng!Pass1")
    assert not ok and "data 533" in message  # 533 = ACCOUNT_DISABLED
    assert conn.modify(dn, {"userAccountControl": [(MODIFY_REPLACE, [512])]})
    assert can_bind(src_dc, "dan@src.test", "Str0ng!Pass1")[0]
    ok, message = can_bind(src_dc, dn, "wrong")
    assert not ok and "data 52e" in message  # 52e = bad password
    # The default password policy (complexity, 7 chars) applies.
    assert not conn.modify(dn, {"unicodePwd": [(MODIFY_REPLACE, ['"abc"'.encode("utf-16-le")])]})
    assert conn.result["description"] == "constraintViolation"


def test_samba_pages_and_ignores_maxpagesize(src_dc: SambaDC) -> None:
    ou = f"OU=Bulk,{src_dc.base_dn}"
    ldif = ldif_attr("dn", ou) + "objectClass: organizationalUnit\n\n"
    ldif += "".join(f"dn: CN=c{i:04d},{ou}\nobjectClass: contact\nmail: c{i}@partner.example\n\n" for i in range(1100))
    started = time.monotonic()
    src_dc.ldb_add(ldif)
    print(f"\n1,100 contacts into Samba by ldbadd in {time.monotonic() - started:.2f} s")
    conn = admin(src_dc)
    assert pages(conn, ou, "(objectClass=contact)", 500) == [500, 500, 100]
    assert pages(conn, ou, "(objectClass=contact)", 1000) == [1000, 100]
    # The Default Query Policy says MaxPageSize=1000, but Samba 4.17 does not enforce it: a
    # larger page, or no paging at all, returns everything (real AD would stop at 1,000).
    assert pages(conn, ou, "(objectClass=contact)", 5000) == [1100]
    assert conn.search(ou, "(objectClass=contact)", attributes=["cn"]) and len(conn.entries) == 1100


# --------------------------------------------------------------------------- slapd


@pytest.fixture(scope="module")
def slapd(slapd_factory: Callable[..., Slapd]) -> Slapd:
    server = slapd_factory()
    print(f"\nSlapd on {server.uri} started in {server.start_seconds:.2f} s")
    return server


def test_slapd_ad_lookalike_and_paging(slapd: Slapd) -> None:
    conn = admin(slapd)
    assert slapd.root_dn == "cn=admin,dc=src,dc=test" and slapd.uri.startswith("ldap://127.0.0.1:")
    sid = sid_bytes("S-1-5-21-1-2-3-1100")
    assert conn.add(
        f"cn=Alice Ant,{slapd.users_dn}",
        ["top", "person", "organizationalPerson", "user"],
        {"sn": "Ant", "sAMAccountName": "alice", "objectSid": sid, "proxyAddresses": ["SMTP:alice@src.test"]},
    ), conn.result
    assert conn.search(slapd.suffix, "(objectSid=" + "".join(f"\\{b:02x}" for b in sid) + ")", attributes=["entryUUID"])
    assert conn.entries[0].entryUUID.value

    ou = f"ou=Bulk,{slapd.suffix}"
    ldif = ldif_attr("dn", ou) + "objectClass: organizationalUnit\nou: Bulk\n\n"
    ldif += "".join(
        f"dn: uid=u{i:04d},{ou}\nobjectClass: inetOrgPerson\nobjectClass: mailAlternateRecipient\nuid: u{i:04d}\n"
        f"cn: User {i}\nsn: {i}\nmail: u{i}@src.test\nmailAlternateAddress: old{i}@old.test\n\n"
        for i in range(1100)
    )
    started = time.monotonic()
    slapd.add_ldif(ldif)
    print(f"\n1,100 entries into slapd by ldapadd in {time.monotonic() - started:.2f} s")
    assert pages(conn, ou, "(objectClass=inetOrgPerson)", 1000) == [1000, 100]
    assert conn.search(ou, "(objectClass=inetOrgPerson)", attributes=["uid"]) and len(conn.entries) == 1100
    assert conn.search(ou, "(mailAlternateAddress=old7@old.test)", attributes=["uid"])
    assert conn.entries[0].uid.value == "u0007"


# --------------------------------------------------------------------------- Dovecot over LDAP


def test_dovecot_reads_users_from_slapd(slapd: Slapd, dovecot_factory: Callable[..., DovecotServer]) -> None:
    from imapclient import IMAPClient
    from imapclient.exceptions import LoginError

    slapd.add_ldif(
        f"dn: uid=dave,{slapd.users_dn}\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave Dee\nsn: Dee\n"
        "mail: dave@src.test\nuserPassword: davepw\n"
    )
    started = time.monotonic()
    dovecot = dovecot_factory(users={"alice": "alicepw"}, ldap=slapd.dovecot_userdb())
    print(f"\nDovecot with LDAP userdb started in {time.monotonic() - started:.2f} s")

    def login(user: str, password: str) -> str:
        client = IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
        try:
            client.login(user, password)
            client.select_folder("INBOX")
            return client.namespace().personal[0][0] or "ok"
        finally:
            client.logout()

    for user, password in (
        ("dave", "davepw"),
        ("dave@src.test", "davepw"),
        ("dave*admin", "adminpw"),
        ("alice", "alicepw"),
    ):
        assert login(user, password)
    with pytest.raises(LoginError):
        login("dave", "wrong")
    assert (dovecot.home("dave") / "Maildir").is_dir()
    assert not (dovecot.home("dave@src.test")).exists()


def test_dovecot_reads_users_from_samba(src_dc: SambaDC, dovecot_factory: Callable[..., DovecotServer]) -> None:
    from imapclient import IMAPClient
    from imapclient.exceptions import LoginError

    conn = admin(src_dc)
    for sam, uac in (("erin", 512), ("fred", 514)):
        dn = f"CN={sam},CN=Users,{src_dc.base_dn}"
        assert conn.add(
            dn,
            ["top", "person", "organizationalPerson", "user"],
            {"sAMAccountName": sam, "mail": f"{sam}@src.test", "userAccountControl": uac},
        ), conn.result
        assert conn.modify(dn, {"unicodePwd": [(MODIFY_REPLACE, ['"Str0ng!Pass1"'.encode("utf-16-le")])]})
    dovecot = dovecot_factory(users={}, ldap=src_dc.dovecot_userdb())

    def login(user: str, password: str) -> None:
        client = IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
        try:
            client.login(user, password)
            client.select_folder("INBOX")
        finally:
            client.logout()

    login("erin", "Str0ng!Pass1")
    login("erin@src.test", "Str0ng!Pass1")
    login("erin*admin", "adminpw")
    with pytest.raises(LoginError):
        login("fred", "Str0ng!Pass1")  # disabled: the DC refuses the bind
    assert (dovecot.home("erin") / "Maildir").is_dir()
