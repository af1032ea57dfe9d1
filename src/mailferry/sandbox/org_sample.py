"""What the demo organization shares and sets beyond its mail (issue 9): delegations by folder
ACL, a group's folder, public folders with their own ACL, a folder comment and a Sieve script
with an out-of-office reply. Seeded on a Dovecot started with ``acl``, ``acl_groups``,
``metadata``, ``public`` and ``sieve`` (see :class:`mailferry.sandbox.servers.DovecotServer`)."""

from __future__ import annotations

from typing import Any

from mailferry.sandbox.servers import seed_messages

GROUP = "team"
#: Group membership of the demo's users (Dovecot's userdb field acl_groups).
GROUPS = {"bob": [GROUP], "dave": [GROUP]}
#: The public folders' publisher: the global ACL gives it every right on the public tree.
PUBLISHER = ("publisher", "publisherpw")
GLOBAL_ACL = f"Public* user={PUBLISHER[0]} lrwstipekxa\n"

VACATION = """require ["fileinto", "vacation"];
# project mail goes to its folder
if header :contains "subject" "[project]" {{
  fileinto "{projects}";
  stop;
}}
vacation :days 1 :from "{address}" :addresses ["{address}"] :subject "Out of office" text:
I am out of the office this week; your mail will be read when I am back.
.
;
"""


def _imap(server: Any, user: str, password: str) -> Any:
    from imapclient import IMAPClient

    c = IMAPClient(server.host, server.port, ssl=False, timeout=20)
    c.login(user, password)
    return c


def seed_sharing(server: Any, passwords: dict[str, str], *, address: str) -> dict[str, int]:
    """alice lets bob read her INBOX, carol lets the group "team" write her Projects folder,
    the publisher fills Public/Announcements (everyone reads) and Public/Team (the group
    writes), alice's Projects folder has a comment, and alice has an active Sieve script with
    an out-of-office reply. Returns what was seeded, by kind."""
    from mailferry.connectors.imap import Endpoint, ImapStore, Login
    from mailferry.connectors.sieve import SieveEndpoint, SieveLogin, SieveStore

    sep, prefix = server.separator, server.prefix
    projects = prefix + "Projects"
    c = _imap(server, "alice", passwords["alice"])
    try:
        c.setacl("INBOX", "bob", "lrs")
    finally:
        c.logout()
    st = ImapStore(Endpoint(server.host, server.port, "none"), Login("alice", passwords["alice"]), readonly=False)
    try:
        st.set_metadata(projects, "/shared/comment", b"Projects of the whole team")
    finally:
        st.close()
    c = _imap(server, "carol", passwords["carol"])
    try:
        c.setacl(projects, f"${GROUP}", "lrswi")
    finally:
        c.logout()
    public = server.public + sep
    announcements, team = public + "Announcements", public + "Team"
    c = _imap(server, *PUBLISHER)
    try:
        for folder in (announcements, team):
            c.create_folder(folder)
        c.setacl(announcements, "anyone", "lr")
        c.setacl(team, f"${GROUP}", "lrswi")
    finally:
        c.logout()
    notes = [
        b"From: it@old.example\r\nTo: all@old.example\r\nSubject: Server move on Saturday\r\n"
        b"Message-ID: <move@old.example>\r\nDate: Mon, 2 Mar 2026 09:00:00 +0000\r\n\r\nThe mail server moves.\r\n",
        b"From: hr@old.example\r\nTo: all@old.example\r\nSubject: Holidays\r\n"
        b"Message-ID: <holidays@old.example>\r\nDate: Tue, 3 Mar 2026 09:00:00 +0000\r\n\r\nSee the calendar.\r\n",
    ]
    seed_messages(server.host, server.port, PUBLISHER[0], PUBLISHER[1], announcements, notes)
    store = SieveStore(
        SieveEndpoint(server.host, server.sieve_port, "none", timeout=20),
        SieveLogin("alice", passwords["alice"]),
        readonly=False,
    )
    try:
        store.put("out-of-office", VACATION.format(projects=projects, address=address).encode())
        store.set_active("out-of-office")
    finally:
        store.close()
    return {
        "acl entries": 4,
        "folder comments": 1,
        "public folders": 2,
        "public messages": len(notes),
        "sieve scripts": 1,
    }
