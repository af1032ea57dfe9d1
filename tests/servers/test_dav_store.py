"""One contract suite for :class:`mailferry.connectors.dav.DavStore` against real servers:
Radicale 3.9 and Cyrus 3.6 (CalDAV/CardDAV), both on 127.0.0.1, started once per session.

Server findings recorded here (and in the connector's docstring): the admin login per server,
the sharing mechanism per server, free/busy (Cyrus: RFC 6638 outbox POST; Radicale: the
free-busy-query REPORT, with the ``f`` right for every user).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import httpx
import pytest
from imapclient import IMAPClient

from mailferry.connectors.dav import (
    DavEndpoint,
    DavLogin,
    DavStore,
    ReadOnlyViolation,
    freebusy_access_of,
    parse_freebusy,
    status_words,
)
from mailferry.connectors.imap import Endpoint, ImapStore, Login
from mailferry.errors import AuthError, ItemRefused, TemporaryFailure
from mailferry.model.dav import Collection, DavServerInfo, FreeBusyAccess, Share
from mailferry.sandbox.dav_servers import RadicaleServer
from mailferry.sandbox.servers import CyrusServer, ImipMessage, free_port

pytestmark = pytest.mark.servers

USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}


@dataclass
class Dav:
    name: str
    url: str
    server: RadicaleServer | CyrusServer

    def store(self, user: str = "alice", *, readonly: bool = False, password: str | None = None) -> DavStore:
        login = DavLogin(user, USERS[user] if password is None else password)
        return DavStore(DavEndpoint(self.url), login, readonly=readonly, label=f"{user}@{self.name}", batch_size=2)


@pytest.fixture(scope="session")
def radicale() -> Iterator[RadicaleServer]:
    with RadicaleServer.start(users=dict(USERS)) as server:
        yield server


@pytest.fixture(scope="session")
def cyrus_dav(cyrus_factory: Callable[..., CyrusServer]) -> CyrusServer:
    return cyrus_factory()


@pytest.fixture(params=["radicale", "cyrus"])
def dav(request: pytest.FixtureRequest) -> Dav:
    if request.param == "radicale":
        server: RadicaleServer | CyrusServer = request.getfixturevalue("radicale")
        return Dav("radicale", server.url, server)
    cyrus = request.getfixturevalue("cyrus_dav")
    return Dav("cyrus", cyrus.dav_url, cyrus)


@pytest.fixture
def alice(dav: Dav) -> Iterator[DavStore]:
    with dav.store("alice") as store:
        yield store


def ics(uid: str, summary: str = "Meeting", start: str = "20260310T090000Z", end: str = "20260310T100000Z") -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailferry//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:{summary}\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def vcf(uid: str, name: str = "Ann Other") -> bytes:
    return f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nN:Other;Ann;;;\r\nEND:VCARD\r\n".encode()


def new_calendar(store: DavStore, **props: object) -> Collection:
    name = "cal-" + uuid.uuid4().hex[:8]
    return store.create_collection(Collection(href="", kind="calendar", name=name, **props))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pure helpers


def test_status_words_names_the_precondition_and_its_description() -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        b"<C:valid-calendar-data/><D:responsedescription>Resource is not an iCalendar object"
        b"</D:responsedescription></D:error>"
    )
    assert status_words(403, "application/xml", body) == "valid-calendar-data: Resource is not an iCalendar object"
    html = b"<html><head><title>401 Unauthorized</title></head><body><h1>x</h1><p>Mailbox does not exist</p></body>"
    assert status_words(404, "text/html", html) == "Mailbox does not exist"
    assert status_words(400, "text/plain", b"Bad Request") == "Bad Request"
    assert len(status_words(400, "text/plain", b"x" * 1000)) == 200


def test_parse_freebusy_unfolds_and_splits_periods() -> None:
    text = (
        "BEGIN:VFREEBUSY\r\nFREEBUSY;FBTYPE=BUSY-TENTATIVE:20260310T090000Z/20260310T100000Z,\r\n"
        " 20260311T090000Z/PT1H\r\nEND:VFREEBUSY\r\n"
    )
    periods = parse_freebusy(text)
    assert [(p.start, p.end, p.fbtype) for p in periods] == [
        ("20260310T090000Z", "20260310T100000Z", "BUSY-TENTATIVE"),
        ("20260311T090000Z", "PT1H", "BUSY-TENTATIVE"),
    ]


# --------------------------------------------------------------------------- the contract


def test_discovery(dav: Dav, alice: DavStore) -> None:
    info = alice.info()
    assert info.principal.rstrip("/").endswith("/alice")
    assert info.calendar_home and info.addressbook_home
    assert "calendar-access" in info.dav
    if dav.name == "cyrus":
        assert info.outbox and "mailto:alice@internal" in info.addresses
        assert info.schedules and "resource-sharing" in info.dav
    else:
        assert "addressbook" in info.dav and info.outbox is None and not info.schedules


def test_collections_round_trip_properties(dav: Dav, alice: DavStore) -> None:
    cal = new_calendar(
        alice,
        displayname="Work & Play",
        description="team <dates>",
        color="#FF0000FF",
        order="3",
        components=("VEVENT", "VTODO"),
        transparent=True,
    )
    assert cal.href.startswith(alice.info().calendar_home or "") and cal.href.endswith(f"/{cal.name}/")
    assert (cal.displayname, cal.description, cal.color, cal.order) == ("Work & Play", "team <dates>", "#FF0000FF", "3")
    assert set(cal.components) == {"VEVENT", "VTODO"}
    # Radicale 3.9 always answers schedule-calendar-transp "opaque" (it does not keep the property)
    assert cal.transparent is (dav.name == "cyrus")
    assert cal.sync_token and cal.owner == "alice"
    book = alice.create_collection(
        Collection(
            href="", kind="addressbook", name="book-" + uuid.uuid4().hex[:6], displayname="Friends", description="d"
        )
    )
    assert (book.kind, book.displayname, book.description) == ("addressbook", "Friends", "d")
    listed = {c.href: c for c in alice.collections()}
    # The listing asks for the CTag only where a server gives no sync token (each costs the server
    # a pass over the members); both servers here give one.
    assert listed[cal.href] == replace(cal, ctag=None) and listed[book.href].kind == "addressbook"
    assert all("inbox" not in c.name.lower() and "outbox" not in c.name.lower() for c in listed.values())
    # creating one that exists updates its properties
    again = alice.create_collection(
        Collection(href="", kind="calendar", name=cal.name, displayname="Renamed", color="#00FF00FF")
    )
    assert (again.href, again.displayname, again.color) == (cal.href, "Renamed", "#00FF00FF")


def test_members_changes_fetch(dav: Dav, alice: DavStore) -> None:
    cal = new_calendar(alice, displayname="sync")
    assert alice.members(cal) == {}
    token = cal.sync_token
    assert token
    etags = {}
    uids = [f"uid-{i}-{uuid.uuid4()}" for i in range(5)]
    for i in range(5):  # more than one multiget batch (batch_size=2)
        etags[f"e{i}.ics"] = alice.put(cal, f"e{i}.ics", ics(uids[i], f"Meeting {i}"))
    members = alice.members(cal)
    assert sorted(members) == sorted(cal.href + n for n in etags)
    for name, etag in etags.items():
        if etag is not None:
            assert members[cal.href + name] == etag
    items = {i.href: i for i in alice.fetch(cal, [*sorted(members), cal.href + "gone.ics"])}
    assert set(items) == set(members)
    one = items[cal.href + "e1.ics"]
    assert b"SUMMARY:Meeting 1\r\n" in one.data and one.data.endswith(b"END:VCALENDAR\r\n")
    assert one.etag == members[cal.href + "e1.ics"]
    changes = alice.changes(cal, token)
    assert changes is not None and set(changes.changed) == set(members) and not changes.removed
    # after a change and a delete, the new token sees exactly those
    alice.put(cal, "e0.ics", ics(uids[0], "changed"), etag=alice.members(cal)[cal.href + "e0.ics"])
    alice.delete(cal.href + "e1.ics", None)
    later = alice.changes(cal, changes.token)
    assert later is not None
    assert set(later.changed) == {cal.href + "e0.ics"} and later.removed == (cal.href + "e1.ics",)
    assert alice.changes(cal, "http://example.invalid/bogus-token") is None
    assert alice.changes(cal, "data:,1-1") is None


def test_put_create_replace_and_conflict(dav: Dav, alice: DavStore) -> None:
    book = alice.create_collection(Collection(href="", kind="addressbook", name="b-" + uuid.uuid4().hex[:6]))
    etag = alice.put(book, "ann.vcf", vcf("ann-1"))
    with pytest.raises(ItemRefused) as exists:
        alice.put(book, "ann.vcf", vcf("ann-1"))
    assert exists.value.status == 412 and "alice@" in str(exists.value) and "ann.vcf" in str(exists.value)
    current = alice.members(book)[book.href + "ann.vcf"]
    assert etag is None or etag == current
    new = alice.put(book, "ann.vcf", vcf("ann-1", "Ann Changed"), etag=current)
    with pytest.raises(ItemRefused) as stale:
        alice.put(book, "ann.vcf", vcf("ann-1", "stale"), etag=current)
    assert stale.value.status == 412
    [item] = alice.fetch(book, [book.href + "ann.vcf"])
    assert b"FN:Ann Changed\r\n" in item.data and (new is None or item.etag == new)


def test_malformed_item_is_refused_with_the_servers_words(dav: Dav, alice: DavStore) -> None:
    cal = new_calendar(alice)
    with pytest.raises(ItemRefused) as refused:
        alice.put(cal, "bad.ics", b"this is not a calendar\r\n")
    assert 400 <= refused.value.status < 500
    text = str(refused.value)
    assert "bad.ics" in text and "alice@" in text
    if dav.name == "cyrus":
        assert "valid-calendar-data" in text
    else:
        assert "Bad Request" in text


def test_readonly_store_refuses_writes_before_sending(dav: Dav) -> None:
    store = dav.store("alice", readonly=True)
    cal = Collection(href="/nowhere/", kind="calendar", name="x")
    for call in (
        lambda: store.put(cal, "a.ics", ics("a")),
        lambda: store.create_collection(cal),
        lambda: store.delete("/nowhere/a.ics", None),
        lambda: store.set_share(cal, Share("bob", "read")),
    ):
        with pytest.raises(ReadOnlyViolation):
            call()
    store.close()


def test_wrong_password_and_unreachable_port(dav: Dav) -> None:
    with dav.store("alice", password="wrong-secret") as bad, pytest.raises(AuthError) as auth:
        bad.info()
    assert "wrong-secret" not in str(auth.value) and "alice" in str(auth.value)
    port = free_port()
    store = DavStore(
        DavEndpoint(f"http://127.0.0.1:{port}/", timeout=2), DavLogin("alice", "alicepw"), readonly=True, label="x"
    )
    with pytest.raises(TemporaryFailure):
        store.info()
    store.close()


def test_shares(dav: Dav, alice: DavStore) -> None:
    cal = new_calendar(alice, displayname="shared")
    alice.put(cal, "e.ics", ics("share-" + uuid.uuid4().hex))
    assert alice.shares(cal) == []
    with pytest.raises(ItemRefused) as fb:
        alice.set_share(cal, Share("bob", "freebusy"))
    assert fb.value.status == 501
    alice.set_share(cal, Share("bob", "read-write"))
    alice.set_share(cal, Share("carol", "read"))
    assert alice.shares(cal) == [Share("bob", "read-write"), Share("carol", "read")]
    if dav.name == "cyrus":
        # Cyrus applies the share at once: bob reads alice's calendar
        got = httpx.get(dav.url.rstrip("/") + cal.href + "e.ics", auth=("bob", "bobpw"), follow_redirects=True)
        assert got.status_code == 200
    else:
        # Radicale: bob must enable the map share first, then reads it under his own principal
        mapped = f"/bob/alice.{cal.name}/"
        before = httpx.get(dav.url.rstrip("/") + mapped + "e.ics", auth=("bob", "bobpw"))
        assert before.status_code != 200
        enable = httpx.post(
            dav.url.rstrip("/") + "/.sharing/v1/map/enable",
            json={"PathMapped": cal.href, "PathOrToken": mapped, "User": "bob"},
            headers={"Accept": "application/json"},
            auth=("bob", "bobpw"),
        )
        assert enable.status_code == 200, enable.text
        after = httpx.get(dav.url.rstrip("/") + mapped + "e.ics", auth=("bob", "bobpw"))
        assert after.status_code == 200 and b"BEGIN:VEVENT" in after.content


def test_freebusy_of_another_account(dav: Dav, alice: DavStore) -> None:
    with dav.store("bob") as bob:
        cal = new_calendar(bob)
        bob.put(cal, "busy.ics", ics("fb-" + uuid.uuid4().hex, start="20260410T090000Z", end="20260410T100000Z"))
        address = next(a for a in bob.info().addresses)
    periods = alice.freebusy(address, "20260409T000000Z", "20260412T000000Z")
    assert periods is not None
    assert [(p.start, p.end) for p in periods if p.fbtype == "BUSY"] == [("20260410T090000Z", "20260410T100000Z")]


_ACL = """<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:response><D:href>/dav/calendars/user/alice/Inbox/</D:href><D:propstat><D:prop><D:acl>
<D:ace><D:principal><D:self/></D:principal><D:grant><D:privilege><D:all/></D:privilege></D:grant></D:ace>
<D:ace><D:principal><D:href>/dav/principals/user/alice/</D:href></D:principal>
  <D:grant><D:privilege><D:all/></D:privilege></D:grant></D:ace>
%s
</D:acl></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"""


def _ace(principal: str, *privileges: str, deny: bool = False) -> str:
    privs = "".join(f"<D:privilege><{p}/></D:privilege>" for p in privileges)
    how = "deny" if deny else "grant"
    return f"<D:ace><D:principal>{principal}</D:principal><D:{how}>{privs}</D:{how}></D:ace>"


def test_freebusy_access_of_reads_who_may_query() -> None:
    def read(*aces: str) -> FreeBusyAccess | None:
        from defusedxml import ElementTree

        return freebusy_access_of(ElementTree.fromstring(_ACL % "".join(aces)), "alice")

    # Cyrus' default: the aggregate schedule-deliver to everyone; the owner is never listed
    assert read(_ace("<D:all/>", "C:schedule-deliver")) == FreeBusyAccess(True)
    assert read(_ace("<D:authenticated/>", "C:schedule-query-freebusy")) == FreeBusyAccess(True)
    only_bob = read(
        _ace("<D:all/>", "C:schedule-deliver-invite", "C:schedule-deliver-reply"),
        _ace("<D:href>/dav/principals/user/bob/</D:href>", "C:schedule-query-freebusy"),
    )
    assert only_bob == FreeBusyAccess(False, frozenset({"bob"}))
    assert only_bob.describe() == "only bob"
    assert read() == FreeBusyAccess(False) and FreeBusyAccess(False).describe() == "nobody but the owner"
    assert read(_ace("<D:all/>", "C:schedule-query-freebusy", deny=True)) is None  # this reading knows grants only


def test_invite_sharees_keep_their_domain_where_logins_are_addresses() -> None:
    from defusedxml import ElementTree

    from mailferry.connectors.dav import _invite_shares

    invite = ElementTree.fromstring(
        '<D:invite xmlns:D="DAV:"><D:sharee><D:href>mailto:bob@example.com</D:href>'
        "<D:share-access><D:read-write/></D:share-access></D:sharee>"
        "<D:sharee><D:href>/dav/principals/user/carol@example.com/</D:href>"
        "<D:share-access><D:read/></D:share-access></D:sharee></D:invite>"
    )
    assert _invite_shares(invite) == [Share("bob", "read-write"), Share("carol@example.com", "read")]
    assert _invite_shares(invite, qualified=True) == [
        Share("bob@example.com", "read-write"),
        Share("carol@example.com", "read"),
    ]
    assert DavStore._sharee_address(DavServerInfo(frozenset(), "", "/p/u/a/", None, None), "bob@example.com") == (
        "mailto:bob@example.com"
    )


def test_freebusy_access_read_and_set(dav: Dav) -> None:
    """Who may see carol's free/busy: Cyrus tells (its scheduling inbox's ACL) and takes a change
    through carol's own IMAP login; Radicale tells nothing (its rights file) and takes nothing."""
    if dav.name == "radicale":
        with dav.store("carol") as carol:
            assert carol.freebusy_access() is None
            with pytest.raises(ItemRefused) as e:
                carol.set_freebusy_access(FreeBusyAccess(False, frozenset({"bob"})))
            assert e.value.status == 501 and "rights file" in e.value.message
        return
    cyrus = dav.server
    assert isinstance(cyrus, CyrusServer)

    def imap() -> ImapStore:
        return ImapStore(Endpoint("127.0.0.1", cyrus.port, "none"), Login("carol", USERS["carol"]), readonly=False)

    def carols_busy(asker: str) -> object:
        with dav.store(asker) as st:
            return st.freebusy("mailto:carol@internal", "20260101T000000Z", "20270101T000000Z")

    login = DavLogin("carol", USERS["carol"])
    with DavStore(DavEndpoint(dav.url), login, readonly=False, label="carol", imap_acl=imap) as carol:
        assert carol.freebusy_access() == FreeBusyAccess(True)
        try:
            carol.set_freebusy_access(FreeBusyAccess(False, frozenset({"bob"})))
            assert carol.freebusy_access() == FreeBusyAccess(False, frozenset({"bob"}))
            assert carols_busy("bob") is not None and carols_busy("alice") is None
        finally:
            carol.set_freebusy_access(FreeBusyAccess(True))
        assert carol.freebusy_access() == FreeBusyAccess(True)
        assert carols_busy("alice") is not None
        session = imap()
        try:  # bob's right 9 taken back left no empty entry behind (DELETEACL)
            assert "bob" not in session.get_acl(session.dav_mailbox(("#calendars", "Inbox")))
        finally:
            session.close()
    with DavStore(DavEndpoint(dav.url), login, readonly=False, label="carol") as no_imap:
        with pytest.raises(ItemRefused) as e:
            no_imap.set_freebusy_access(FreeBusyAccess(False))
        assert e.value.status == 501


# --------------------------------------------------------------------------- admin logins


def test_radicale_admin_opens_every_account_by_path(radicale: RadicaleServer) -> None:
    admin = DavStore(
        DavEndpoint(radicale.url),
        DavLogin("carol", radicale.admin[1], admin=radicale.admin[0]),
        readonly=False,
        label="carol via admin",
    )
    with admin:
        assert admin.info().principal == "/carol/"
        cal = new_calendar(admin, displayname="by admin")
        assert cal.href.startswith("/carol/")
        admin.put(cal, "a.ics", ics("adm-" + uuid.uuid4().hex))
    with DavStore(DavEndpoint(radicale.url), DavLogin("carol", "carolpw"), readonly=True, label="carol") as carol:
        assert cal.href in {c.href for c in carol.collections()}
        assert list(carol.members(cal)) == [cal.href + "a.ics"]


def test_cyrus_admin_needs_an_acl_and_authorize_as_is_refused(cyrus_dav: CyrusServer) -> None:
    """Cyrus 3.6 standalone: Authorize-As -> 401 (proxy authorization only on a Murder backend);
    the admin's PUT into alice's calendar -> 403 until alice's calendar grants the admin rights
    (IMAP SETACL); then it works through the admin's view (redirect to /user/<admin>/alice.X/)."""
    base = cyrus_dav.dav_url.rstrip("/")
    admin_name, admin_pw = cyrus_dav.admin
    with (
        DavStore(
            DavEndpoint(cyrus_dav.dav_url),
            DavLogin("alice", admin_pw, admin=admin_name, admin_method="authorize-as"),
            readonly=True,
            label="alice via authorize-as",
        ) as proxied,
        pytest.raises(AuthError),
    ):
        proxied.info()
    with DavStore(DavEndpoint(cyrus_dav.dav_url), DavLogin("alice", "alicepw"), readonly=False, label="alice") as a:
        cal = new_calendar(a)  # also makes sure alice's DAV homes exist
    put_url = base + cal.href + "by-admin.ics"
    headers = {"Content-Type": "text/calendar", "If-None-Match": "*"}
    with httpx.Client(auth=(admin_name, admin_pw), follow_redirects=True) as client:
        refused = client.put(put_url, content=ics("adm-1"), headers=headers)
        assert refused.status_code == 403 and "need-privileges" in refused.text
        imap = IMAPClient("127.0.0.1", cyrus_dav.port, ssl=False)
        imap.login(admin_name, admin_pw)
        imap.setacl(f"user/alice/#calendars/{cal.name}", admin_name, "lrswipkxtecdan")
        imap.logout()
        done = client.put(put_url, content=ics("adm-1"), headers=headers)
        assert done.status_code == 201
        assert f"/user/{admin_name}/alice.{cal.name}/" in str(done.url)


# --------------------------------------------------------------------------- Cyrus scheduling
# Cyrus 3.6 schedules only occurrences that are not over (caldav_historical_age, 7 days): the
# meetings are a month from now. Internal attendees are at the server's mail_domain; others are
# external and get iMIP mail (recorded by the sandbox's sendmail, never sent).

EXTERNAL = "guest@partner.example"


def meeting(uid: str, domain: str, *, attendee_param: str = "") -> bytes:
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y%m%d")
    p = f";{attendee_param}" if attendee_param else ""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailferry//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{day}T090000Z\r\nDTEND:{day}T100000Z\r\n"
        f"SUMMARY:Planning\r\nORGANIZER;CN=Alice:mailto:alice@{domain}\r\n"
        f"ATTENDEE;PARTSTAT=ACCEPTED;ROLE=CHAIR{p}:mailto:alice@{domain}\r\n"
        f"ATTENDEE;RSVP=TRUE;PARTSTAT=NEEDS-ACTION{p}:mailto:bob@{domain}\r\n"
        f"ATTENDEE;RSVP=TRUE;PARTSTAT=NEEDS-ACTION{p}:mailto:{EXTERNAL}\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def put_meeting(server: CyrusServer, name: str, **kwargs: str) -> str:
    """alice PUTs a meeting (organizer alice, internal attendee bob, one external attendee)
    into a new calendar; returns its UID."""
    uid = f"{name}-{uuid.uuid4().hex}"
    with DavStore(DavEndpoint(server.dav_url), DavLogin("alice", "alicepw"), readonly=False, label="alice") as a:
        a.put(new_calendar(a), f"{name}.ics", meeting(uid, server.mail_domain, **kwargs))
    return uid


def imip_about(server: CyrusServer, uid: str) -> list[ImipMessage]:
    return [m for m in server.imip_messages() if f"UID:{uid}".encode() in m.data]


def inbox_about(server: CyrusServer, user: str, uid: str) -> list[bytes]:
    return [data for data in server.inbox_items(user).values() if f"UID:{uid}".encode() in data]


def test_cyrus_meeting_mails_the_external_attendee_and_delivers_to_the_internal_one(cyrus_dav: CyrusServer) -> None:
    uid = put_meeting(cyrus_dav, "live")
    [sent] = imip_about(cyrus_dav, uid)
    assert sent.recipients == (EXTERNAL,) and sent.sender == f"alice@{cyrus_dav.mail_domain}"
    assert sent.method == "REQUEST" and b"Subject: Invitation: Planning" in sent.data
    [request] = inbox_about(cyrus_dav, "bob", uid)
    assert b"METHOD:REQUEST\r\n" in request
    assert inbox_about(cyrus_dav, "carol", uid) == []


def test_cyrus_schedule_agent_client_sends_nothing(cyrus_dav: CyrusServer) -> None:
    uid = put_meeting(cyrus_dav, "client", attendee_param="SCHEDULE-AGENT=CLIENT")
    assert imip_about(cyrus_dav, uid) == []
    assert inbox_about(cyrus_dav, "bob", uid) == []


def test_cyrus_scheduling_switch_keeps_data_and_paused_sends_nothing(
    cyrus_factory: Callable[..., CyrusServer],
) -> None:
    server = cyrus_factory(scheduling=False)
    assert "caldav_allowscheduling: off" in server.config_path.read_text()
    paused, live = f"paused-{uuid.uuid4().hex}", f"live-{uuid.uuid4().hex}"
    with DavStore(DavEndpoint(server.dav_url), DavLogin("alice", "alicepw"), readonly=False, label="alice") as a:
        cal = new_calendar(a)
        a.put(cal, "paused.ics", meeting(paused, server.mail_domain))
    assert server.imip_messages() == [] and inbox_about(server, "bob", paused) == []
    server.set_scheduling(True)
    assert "caldav_allowscheduling: on" in server.config_path.read_text()
    with DavStore(DavEndpoint(server.dav_url), DavLogin("alice", "alicepw"), readonly=False, label="alice") as a:
        a.put(cal, "live.ics", meeting(live, server.mail_domain))
        assert set(a.members(cal)) == {cal.href + "paused.ics", cal.href + "live.ics"}
    # switched on, the same kind of meeting is scheduled: the paused one stays unsent
    assert [m.recipients for m in server.imip_messages()] == [(EXTERNAL,)] and imip_about(server, live)
    assert inbox_about(server, "bob", paused) == [] and len(inbox_about(server, "bob", live)) == 1
