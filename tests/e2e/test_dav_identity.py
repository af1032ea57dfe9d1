"""People's addresses in meetings follow the identity map that `directory apply` made: the
directory migration matches alice to an existing target user with another login and address,
creates bob; the calendar migration then puts alice's collections into alice.t's account and
rewrites ORGANIZER and ATTENDEE to the target addresses; an outside guest is left alone."""

from __future__ import annotations

import os

from dav_org import EXTERNAL, holdings, meeting, put_all, store
from helpers import cli
from test_directory_ldap import block, person

from mailferry.errors import ExitCode
from mailferry.sandbox.dav_servers import RadicaleServer
from mailferry.sandbox.servers import free_port

USERS = {"alice": "alicepw", "bob": "bobpw", "alice.t": "alicetpw"}


class Closed:  # the mail side of a project that moves no mail: never contacted
    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = free_port()


def test_meetings_follow_the_identity_map_of_directory_apply(slapd_factory, tmp_path) -> None:
    from helpers import write_project

    src, tgt = (
        slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw"),
        slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw"),
    )
    src.add_ldif(
        person(src.users_dn, "Alice Ant", "alice", "alice@src.test")
        + "\n"
        + person(src.users_dn, "Bob Bee", "bob", "bob@src.test")
    )
    tgt.add_ldif(person(tgt.users_dn, "Alice T", "alice.t", "alice.t@tgt.test", ["alice@src.test"]))
    dav_src = RadicaleServer.start(tmp_path / "dav-src", users=dict(USERS))
    dav_tgt = RadicaleServer.start(tmp_path / "dav-tgt", users=dict(USERS))
    try:
        m1 = meeting("m1@t", "alice@src.test", [("bob@src.test", "ACCEPTED"), (EXTERNAL, "TENTATIVE")])
        for user in ("alice", "bob"):
            st = store(dav_src.url, user, USERS[user])
            try:
                put_all(st, "Meetings", "calendar", [("m1", m1)], displayname="Meetings")
            finally:
                st.close()
        os.environ["MF_ID_DAV"] = "adminpw"
        dav = (
            f'\n[source.dav]\nurl = "{dav_src.url}"\n[source.dav.admin]\nuser = "admin"\npassword = "env:MF_ID_DAV"\n'
            f'\n[target.dav]\nurl = "{dav_tgt.url}"\n[target.dav.admin]\nuser = "admin"\npassword = "env:MF_ID_DAV"\n'
        )
        project = write_project(
            tmp_path / "p",
            Closed(),
            Closed(),
            [],
            extra=block(src, tgt, extra='account_key = "login"\nconfirm_mailboxes = false') + dav,
            write_accounts=False,
        )
        text = project.read_text().replace(
            '[project]\nname = "t"', '[project]\nname = "t"\nitems = ["calendars", "contacts"]'
        )
        project.write_text(text)
        applied = cli("directory", "apply", project, "--json")
        assert applied.code == ExitCode.OK, applied.out + applied.err
        assert (tmp_path / "p" / "accounts.csv").read_text().count("alice,alice.t") == 1
        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.OK, r.out + r.err
        moved = holdings(dav_tgt.url, "alice.t", USERS["alice.t"])["Meetings"]["m1@t"].decode().replace("\r\n ", "")
        assert "ORGANIZER;CN=Alice:mailto:alice.t@tgt.test" in moved  # matched by smtp to another login and address
        assert f"mailto:{EXTERNAL}" in moved and "alice@src.test" not in moved
        bobs = holdings(dav_tgt.url, "bob", USERS["bob"])["Meetings"]["m1@t"].decode().replace("\r\n ", "")
        assert "mailto:alice.t@tgt.test" in bobs
        v = cli("verify", project, "--deep", "--json")
        assert v.code == ExitCode.OK and v.json()["clean"], v.out
    finally:
        dav_src.close()
        dav_tgt.close()
