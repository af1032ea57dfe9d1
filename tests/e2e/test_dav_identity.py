"""People's addresses in meetings follow the identity map that `directory apply` made: the
directory migration matches alice to an existing target user with another login and address,
creates bob; the calendar migration then puts alice's collections into alice.t's account and
rewrites ORGANIZER and ATTENDEE to the target addresses; an outside guest is left alone."""

from __future__ import annotations

import os

import pytest
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


@pytest.mark.parametrize("direction", ["radicale-radicale", "radicale-cyrus", "cyrus-radicale", "cyrus-cyrus"])
def test_meetings_follow_the_identity_map_of_directory_apply(direction, slapd_factory, cyrus_factory, tmp_path) -> None:
    """Radicale sides are opened by the admin login; Cyrus has no DAV admin route, so there the
    admin adds each account's password reference to the accounts CSV that ``directory apply``
    wrote (as the README says), and migrates."""
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
    skind, tkind = direction.split("-")
    radicale: list[RadicaleServer] = []

    def side(kind: str, name: str) -> str:
        if kind == "cyrus":
            return cyrus_factory(users=dict(USERS)).dav_url
        r = RadicaleServer.start(tmp_path / name, users=dict(USERS))
        radicale.append(r)
        return r.url

    try:
        src_url, tgt_url = side(skind, "dav-src"), side(tkind, "dav-tgt")
        m1 = meeting("m1@t", "alice@src.test", [("bob@src.test", "ACCEPTED"), (EXTERNAL, "TENTATIVE")])
        for user in ("alice", "bob"):
            st = store(src_url, user, USERS[user])
            try:
                put_all(st, "Meetings", "calendar", [("m1", m1)], displayname="Meetings")
            finally:
                st.close()
        os.environ["MF_ID_DAV"] = "adminpw"
        for u, pw in USERS.items():
            os.environ[f"MF_ID_{u.upper().replace('.', '_')}"] = pw
        dav = ""
        for role, kind, url in (("source", skind, src_url), ("target", tkind, tgt_url)):
            dav += f'\n[{role}.dav]\nurl = "{url}"\n'
            if kind == "radicale":
                dav += f'[{role}.dav.admin]\nuser = "admin"\npassword = "env:MF_ID_DAV"\n'
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
        accounts = tmp_path / "p" / "accounts.csv"
        assert accounts.read_text().count("alice,alice.t") == 1
        if "cyrus" in direction:  # the admin adds the accounts' password references

            def ref(user: str, kind: str) -> str:
                return f"env:MF_ID_{user.upper().replace('.', '_')}" if kind == "cyrus" else ""

            rows = [line.split(",") for line in accounts.read_text().splitlines()[1:]]
            accounts.write_text(
                "source_user,target_user,source_password,target_password\n"
                + "".join(f"{s},{t},{ref(s, skind)},{ref(t, tkind)}\n" for s, t in rows)
            )
        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.OK, r.out + r.err
        moved = holdings(tgt_url, "alice.t", USERS["alice.t"])["Meetings"]["m1@t"].decode().replace("\r\n ", "")
        assert "mailto:alice.t@tgt.test" in moved and "ORGANIZER" in moved  # matched by smtp: another login and address
        organizer = next(line for line in moved.splitlines() if line.startswith("ORGANIZER"))
        assert organizer.endswith("mailto:alice.t@tgt.test"), organizer
        assert f"mailto:{EXTERNAL}" in moved and "alice@src.test" not in moved
        bobs = holdings(tgt_url, "bob", USERS["bob"])["Meetings"]["m1@t"].decode().replace("\r\n ", "")
        assert "mailto:alice.t@tgt.test" in bobs
        v = cli("verify", project, "--deep", "--json")
        assert v.code == ExitCode.OK and v.json()["clean"], v.out
    finally:
        for x in radicale:
            x.close()
