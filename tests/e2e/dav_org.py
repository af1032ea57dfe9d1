"""A small organization of calendars and contacts for the DAV end-to-end tests, seeded through
mailferry's own connector as each user, plus readers of what a DAV server really holds."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailferry.connectors.dav import DavEndpoint, DavLogin, DavStore
from mailferry.errors import ItemRefused
from mailferry.formats import ical, vcard
from mailferry.model.dav import Collection
from mailferry.sandbox.dav_sample import calendar, event

CRLF = "\r\n"
OLD = "old.example"  # the people's mail domain on the source, in ORGANIZER/ATTENDEE
EXTERNAL = "ext@partner.example"
DATA = Path(__file__).parent.parent / "data" / "dav"


BERLIN = [
    "BEGIN:VTIMEZONE",
    "TZID:Europe/Berlin",
    "BEGIN:DAYLIGHT",
    "TZOFFSETFROM:+0100",
    "TZOFFSETTO:+0200",
    "TZNAME:CEST",
    "DTSTART:19700329T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
    "END:DAYLIGHT",
    "BEGIN:STANDARD",
    "TZOFFSETFROM:+0200",
    "TZOFFSETTO:+0100",
    "TZNAME:CET",
    "DTSTART:19701025T030000",
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
    "END:STANDARD",
    "END:VTIMEZONE",
]


def meeting(uid: str, organizer: str, attendees: Iterable[tuple[str, str]], start: str = "20271104T100000Z") -> bytes:
    people = [f"ORGANIZER;CN={organizer.split('@')[0].title()}:mailto:{organizer}"] + [
        f"ATTENDEE;CN={a.split('@')[0].title()};PARTSTAT={p};ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:{a}"
        for a, p in attendees
    ]
    return event(uid, f"Meeting {uid}", start, "SEQUENCE:0", *people)


def recurring(uid: str) -> bytes:
    return calendar(
        *BERLIN,
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260101T090000Z",
        "DTSTART;TZID=Europe/Berlin:20270104T090000",
        "DTEND;TZID=Europe/Berlin:20270104T093000",
        "RRULE:FREQ=WEEKLY;COUNT=10",
        "EXDATE;TZID=Europe/Berlin:20270118T090000",
        "SUMMARY:Weekly stand-up",
        "CATEGORIES:work,daily",
        "CLASS:PRIVATE",
        "X-MAILFERRY-TEST:kept as it is",
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "DESCRIPTION:Stand-up",
        "TRIGGER:-PT10M",
        "END:VALARM",
        "END:VEVENT",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260101T090000Z",
        "RECURRENCE-ID;TZID=Europe/Berlin:20270111T090000",
        "DTSTART;TZID=Europe/Berlin:20270111T100000",
        "DTEND;TZID=Europe/Berlin:20270111T103000",
        "SUMMARY:Weekly stand-up (moved)",
        "END:VEVENT",
    )


def todo(uid: str) -> bytes:
    return calendar(
        "BEGIN:VTODO",
        f"UID:{uid}",
        "DTSTAMP:20260101T090000Z",
        "SUMMARY:File the report",
        "STATUS:NEEDS-ACTION",
        "END:VTODO",
    )


def journal(uid: str) -> bytes:
    return calendar(
        "BEGIN:VJOURNAL",
        f"UID:{uid}",
        "DTSTAMP:20260101T090000Z",
        "DTSTART;VALUE=DATE:20260105",
        "SUMMARY:Notes",
        "DESCRIPTION:Line one\\nline two",
        "END:VJOURNAL",
    )


PHOTO = base64.b64encode(bytes(range(256)) * 4).decode()


def card(uid: str, name: str, email: str, *, photo: bool = False) -> bytes:
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", f"FN:{name}", f"N:{name.split()[-1]};{name.split()[0]};;;"]
    lines += [
        f"EMAIL;TYPE=INTERNET,WORK:{email}",
        "TEL;TYPE=CELL:+49 30 1234567",
        "ORG:Acme;Sales",
        "CATEGORIES:friends,work",
    ]
    if photo:
        lines.append(f"PHOTO;ENCODING=b;TYPE=PNG:{PHOTO}")
    lines.append("END:VCARD")
    return (CRLF.join(lines) + CRLF).encode()


def group(uid: str, members: Iterable[str]) -> bytes:
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", "FN:Team", "N:Team;;;;", "X-ADDRESSBOOKSERVER-KIND:group"]
    lines += [f"X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:{m}" for m in members]
    lines.append("END:VCARD")
    return (CRLF.join(lines) + CRLF).encode()


def real_calendar_files(limit: int = 40) -> list[tuple[str, bytes]]:
    """Calendar objects from the icalendar and vobject test suites that mailferry reads (one UID
    per resource, split where a file holds several), with the names they came from."""
    out: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for path in sorted(DATA.rglob("*.ics")):
        raw = path.read_bytes()
        if b"BEGIN:VCALENDAR" not in raw:
            continue
        try:
            parts = ical.split(raw)
        except ical.BadItem:
            continue
        for part in parts:
            try:
                obj = ical.inspect(part)
            except ical.BadItem:
                continue
            if obj.uid in seen or obj.problems or len(part) > 200_000:
                continue
            seen.add(obj.uid)
            out.append((path.relative_to(DATA).as_posix(), part))
    return out[:limit]


def real_vcards(limit: int = 20) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for path in sorted(DATA.rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        if not raw.lstrip().startswith(b"BEGIN:VCARD") or raw.count(b"BEGIN:VCARD") != 1:
            continue
        try:
            vcard.inspect(raw)
        except vcard.BadItem:
            continue
        out.append((path.relative_to(DATA).as_posix(), raw))
    return out[:limit]


@dataclass
class Seeded:
    """What was put on the source: account -> collection name -> {UID: bytes}."""

    items: dict[str, dict[str, dict[str, bytes]]]


def store(url: str, user: str, password: str, *, readonly: bool = False) -> DavStore:
    return DavStore(DavEndpoint(base_url=url), DavLogin(user=user, password=password), readonly=readonly, label=user)


REFUSED_BY_SOURCE: list[str] = []  # real files the source server itself refused: left out, listed


def put_all(st: DavStore, name: str, kind: str, items: Iterable[tuple[str, bytes]], **props: object) -> Collection:
    info = st.info()
    home = info.calendar_home if kind == "calendar" else info.addressbook_home
    assert home is not None
    existing = {c.name: c for c in st.collections()}
    coll = existing.get(name) or st.create_collection(
        Collection(href=home + name + "/", kind=kind, name=name, **props)  # type: ignore[arg-type]
    )
    for i, (label, data) in enumerate(items):
        try:
            st.put(coll, f"item-{i:03d}.{'ics' if kind == 'calendar' else 'vcf'}", data)
        except ItemRefused as e:
            if "/" not in label:  # our own items must land; real files may be refused: listed
                raise
            REFUSED_BY_SOURCE.append(f"{label}: {e.message}")
    return coll


def seed_org(url: str, passwords: dict[str, str], *, real: bool = True) -> None:
    """alice: Work (events, a recurring event with an override, meetings she organizes with bob
    and an outside person), Tasks (VTODO), Journal (VJOURNAL), Contacts (vCards with a photo and
    a group); bob: Team (his meeting with alice), shared with alice read-write by the tests."""
    alice = store(url, "alice", passwords["alice"])
    try:
        work = [
            ("e1", event("e1@t", "Dentist", "20270301T080000Z", "TRANSP:OPAQUE")),
            ("e2", recurring("e2@t")),
            ("m1", meeting("m1@t", f"alice@{OLD}", [(f"bob@{OLD}", "ACCEPTED"), (EXTERNAL, "TENTATIVE")])),
            ("m2", meeting("m2@t", f"alice@{OLD}", [(f"bob@{OLD}", "NEEDS-ACTION")], "20271105T140000Z")),
        ]
        if real:
            work += real_calendar_files()
        put_all(alice, "Work", "calendar", work, displayname="Work", description="Alice at work", color="#FF0000FF")
        put_all(alice, "Tasks", "calendar", [("t1", todo("t1@t"))], displayname="Tasks", components=("VTODO",))
        put_all(
            alice, "Journal", "calendar", [("j1", journal("j1@t"))], displayname="Journal", components=("VJOURNAL",)
        )
        contacts = [
            ("c1", card("c1", "Ann Example", "ann@partner.example", photo=True)),
            ("c2", card("c2", "Ben Example", "ben@partner.example")),
            ("g1", group("g1", ["c1", "c2"])),
        ]
        if real:
            contacts += real_vcards()
        put_all(alice, "Contacts", "addressbook", contacts, displayname="Contacts")
    finally:
        alice.close()
    bob = store(url, "bob", passwords["bob"])
    try:
        put_all(
            bob,
            "Team",
            "calendar",
            [("b1", meeting("b1@t", f"bob@{OLD}", [(f"alice@{OLD}", "ACCEPTED")]))],
            displayname="Team",
        )
    finally:
        bob.close()


def holdings(url: str, user: str, password: str) -> dict[str, dict[str, bytes]]:
    """collection name -> {UID: bytes} of what the server holds for ``user``."""
    st = store(url, user, password, readonly=True)
    try:
        out: dict[str, dict[str, bytes]] = {}
        for c in st.collections():
            members = st.members(c)
            got: dict[str, bytes] = {}
            for item in st.fetch(c, sorted(members)):
                uid = ical.inspect(item.data).uid if c.kind == "calendar" else vcard.inspect(item.data).uid
                got[uid] = item.data
            out[c.name] = got
        return out
    finally:
        st.close()


# -- helpers of the DAV fault and bad-input tests (test_dav_faults.py, test_dav_bad_input.py) ----


def radicale_write_raw(root: Path, user: str, collection: str, name: str, data: bytes) -> None:
    """Put an item straight into a Radicale's storage (``<base_dir>/collections/collection-root/
    <user>/<collection>/<name>``), past the validation of its PUT: for what a server holds
    although it would refuse it today (a duplicate UID, say). The collection must exist (made
    through DAV: its ``.Radicale.props``); Radicale 3.9 lists the file at the next request."""
    folder = root / "collections" / "collection-root" / user / collection
    assert (folder / ".Radicale.props").is_file(), f"no Radicale collection {folder}"
    (folder / name).write_bytes(data)


def vcard21(uid: str, first: str, last: str) -> bytes:
    """A vCard 2.1 the way old phones and Outlook export it: QUOTED-PRINTABLE with CHARSET,
    bare TYPE parameters."""
    qp = qp_text(f"{first} {last}")
    lines = [
        "BEGIN:VCARD",
        "VERSION:2.1",
        f"N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{qp_text(last)};{qp_text(first)}",
        f"FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:{qp}",
        "TEL;CELL:+49 30 7654321",
        "EMAIL;INTERNET:juergen@partner.example",
        f"UID:{uid}",
        "END:VCARD",
    ]
    return (CRLF.join(lines) + CRLF).encode()


def qp_text(text: str) -> str:
    return "".join(chr(b) if 33 <= b < 127 and b not in (59, 61) else f"={b:02X}" for b in text.encode())


def dav_only_project(
    tmp: Path,
    imap_source: object,
    imap_target: object,
    source_url: str,
    target_url: str,
    users: dict[str, str],
    *,
    source_passwords: dict[str, str] | None = None,
    target_passwords: dict[str, str] | None = None,
    extra: str = "",
) -> Path:
    """A project whose DAV sides log in as each account (its own password, by env: reference;
    ``source_passwords``/``target_passwords`` override one side's, e.g. a wrong one), with the
    mail servers it needs as well (a project always has them; ``--only`` narrows a run)."""
    import os

    from helpers import write_project

    tag = "".join(ch if ch.isalnum() else "_" for ch in tmp.name.upper())
    src_pw = {**users, **(source_passwords or {})}
    tgt_pw = {**users, **(target_passwords or {})}
    for u in users:
        os.environ[f"MF_{tag}_S_{u.upper()}"] = src_pw[u]
        os.environ[f"MF_{tag}_T_{u.upper()}"] = tgt_pw[u]
    csv = "source_user,target_user,source_password,target_password\n" + "".join(
        f"{u},{u},env:MF_{tag}_S_{u.upper()},env:MF_{tag}_T_{u.upper()}\n" for u in users
    )
    dav = f'\n[source.dav]\nurl = "{source_url}"\n\n[target.dav]\nurl = "{target_url}"\n'
    return write_project(
        tmp, imap_source, imap_target, users, source_admin=None, target_admin=None, csv_text=csv, extra=dav + extra
    )


class DavProxy:
    """A small HTTP proxy on 127.0.0.1 in front of a DAV server, for faults no real server makes
    on demand. ``answer(method, path_regex, status, body)``: answer such requests itself (the
    server never sees them); ``rewrite(pattern, repl)``: regex on the bodies of REPORT answers (a
    source that serves malformed data); ``drop_puts_after(n)``: after n PUTs forwarded, close
    every connection without an answer (the target gone mid-run); ``lose_answers(n)``: see there;
    ``throttle_puts(every, status, retry_after)``: answer every ``every``-th PUT itself with
    ``status`` (429, 503) and that ``Retry-After`` (None: no header) instead of forwarding it;
    ``heal()`` undoes the faults.
    ``seen``: (method, path, status) of every request; ``put_times``: (monotonic time, status)
    of every PUT: for one forwarded (status 0) when its headers arrived, for one throttled when
    its answer had gone out (the client cannot pause before it has that answer)."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import re
        import threading

        import httpx

        self.upstream = upstream.rstrip("/")
        self.rules: list[tuple[str, re.Pattern[str], int, bytes]] = []
        self.rewrites: list[tuple[re.Pattern[bytes], bytes]] = []
        self.puts_left: int | None = None
        self.lose_every: int | None = None  # see lose_answers
        self.puts_seen = 0
        self.lost_once: set[str] = set()
        self.seen: list[tuple[str, str, int]] = []
        self.put_times: list[tuple[float, int]] = []
        self.puts_counted = 0  # every PUT, throttled or not (which ones to throttle)
        self.throttle: tuple[int, int, str | None] | None = None
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=self.upstream, timeout=30, follow_redirects=False)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

        methods = "GET HEAD PUT POST DELETE OPTIONS PROPFIND PROPPATCH REPORT MKCOL MKCALENDAR MOVE COPY"
        for m in methods.split():
            setattr(Handler, f"do_{m}", Handler._any)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def answer(self, method: str, path: str, status: int, body: bytes = b"") -> None:
        import re

        self.rules.append((method, re.compile(path), status, body))

    def rewrite(self, pattern: bytes, repl: bytes) -> None:
        import re

        self.rewrites.append((re.compile(pattern, re.S), repl))

    def drop_puts_after(self, n: int) -> None:
        self.puts_left = n

    def lose_answers(self, every: int) -> None:
        """Every ``every``-th PUT's connection is closed without an answer, alternately before
        and after the server got it (a kept-alive connection the server dropped as the request
        went out; an answer lost on the way back)."""
        self.lose_every = every

    def throttle_puts(self, every: int, status: int = 429, retry_after: str | None = "1") -> None:
        self.throttle = (every, status, retry_after)

    def heal(self) -> None:
        self.throttle = None
        self.rules.clear()
        self.puts_left = None
        self.lose_every = None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def _handle(self, h: object) -> None:
        from http.server import BaseHTTPRequestHandler

        assert isinstance(h, BaseHTTPRequestHandler)
        import time

        arrived = time.monotonic()
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        for m, rx, status, words in list(self.rules):
            if m == method and rx.search(path):
                self._reply(h, method, path, status, {"Content-Type": "application/xml; charset=utf-8"}, words)
                return
        if method == "PUT":
            with self._lock:
                throttle = self.throttle
                self.puts_counted += 1
                refuse = throttle is not None and self.puts_counted % throttle[0] == 0
                if not refuse:
                    self.put_times.append((arrived, 0))
            if refuse and throttle is not None:
                extra = {"Retry-After": throttle[2]} if throttle[2] is not None else {}
                self._reply(h, method, path, throttle[1], {"Content-Type": "text/plain", **extra}, b"slow down")
                with self._lock:
                    self.put_times.append((time.monotonic(), throttle[1]))
                return
            with self._lock:
                gone = self.puts_left is not None and self.puts_left <= 0
                if self.puts_left is not None:
                    self.puts_left -= 1
                self.puts_seen += 1
                n = self.puts_seen
                lose = self.lose_every is not None and n % self.lose_every == 0 and path not in self.lost_once
                if lose:
                    self.lost_once.add(path)  # a one-off: never the same request twice
            if gone or (lose and (n // self.lose_every) % 2 == 0):  # type: ignore[operator]
                self.seen.append((method, path, 0))
                h.close_connection = True
                return
        skip = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}
        headers = {k: v for k, v in h.headers.items() if k.lower() not in skip}
        r = self._client.request(method, path, content=body, headers=headers)
        if method == "PUT" and lose:
            self.seen.append((method, path, -r.status_code))  # landed, its answer lost
            h.close_connection = True
            return
        content = r.content
        if method == "REPORT":
            for rx, repl in self.rewrites:
                content = rx.sub(repl, content)
        drop = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}
        out = {k: v for k, v in r.headers.items() if k.lower() not in drop}
        if "location" in out:
            out["location"] = out["location"].replace(self.upstream + "/", self.url)
        self._reply(h, method, path, r.status_code, out, content)

    def _reply(self, h: object, method: str, path: str, status: int, headers: dict[str, str], body: bytes) -> None:
        from http.server import BaseHTTPRequestHandler

        assert isinstance(h, BaseHTTPRequestHandler)
        self.seen.append((method, path, status))
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)


def put_named(st: DavStore, name: str, kind: str, items: Iterable[tuple[str, bytes]], **props: object) -> Collection:
    """Like :func:`put_all`, each item at ``<label>.ics``/``<label>.vcf`` (hrefs a test can name)."""
    coll = put_all(st, name, kind, [], **props)
    for label, data in items:
        st.put(coll, f"{label}.{'ics' if kind == 'calendar' else 'vcf'}", data)
    return coll
