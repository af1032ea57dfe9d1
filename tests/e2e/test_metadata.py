"""Folder METADATA (RFC 5464 comments) carried between real servers, both ways: values arrive
byte for byte, a second pass sends no SETMETADATA, changes and removals on the source arrive,
verify compares, and a target without METADATA is a finding."""

from __future__ import annotations

from typing import Any

from helpers import cli, write_project

from mailferry.connectors.imap import Endpoint, ImapStore, Login
from mailferry.errors import ExitCode
from mailferry.plan.metadata import ENTRIES
from mailferry.sandbox.servers import TcpProxy

USERS = {"alice": "alicepw"}
CYRUS_ADMIN = ("cyrus", "cyruspw")


def store(server: Any, *, readonly: bool = False) -> ImapStore:
    return ImapStore(Endpoint(server.host, server.port, "none"), Login("alice", "alicepw"), readonly=readonly)


def values(server: Any, folder: str) -> dict[str, bytes | None]:
    st = store(server, readonly=True)
    try:
        return st.get_metadata(folder, ENTRIES)
    finally:
        st.close()


def put(server: Any, folder: str, entries: dict[str, bytes | None], *, create: bool = False) -> None:
    st = store(server)
    try:
        if create:
            st.create_folder(folder)
        for entry, value in entries.items():
            st.set_metadata(folder, entry, value)
    finally:
        st.close()


def carry(src: Any, tgt: Any, src_team: str, tgt_team: str, tmp_path: Any, **kw: Any) -> None:
    put(src, src_team, {"/shared/comment": "Équipe (team)".encode(), "/private/comment": b"mine"}, create=True)
    put(src, "INBOX", {"/private/comment": b"inbox note"})
    proxy = TcpProxy.start(tgt.host, tgt.port, record=True)
    try:
        project = write_project(tmp_path / "p", src, tgt, USERS, target_port=proxy.port, **kw)
        plan = cli("plan", project, "--json")
        assert {c["entry"] for c in plan.json()["accounts"][0]["metadata"]["changes"]} == set(ENTRIES)
        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.OK, r.out
        assert r.json()["metadata"]["set"] == 3
        assert values(tgt, tgt_team) == values(src, src_team)
        assert values(tgt, "INBOX") == {"/private/comment": b"inbox note", "/shared/comment": None}
        before = len(proxy.transcript("up"))
        again = cli("migrate", project, "--json")
        assert again.code == ExitCode.OK and b"SETMETADATA" not in proxy.transcript("up")[before:].upper()
        v = cli("verify", project, "--json")
        assert v.code == ExitCode.OK and v.json()["accounts"][0]["metadata"]["differences"] == [], v.out
        put(src, src_team, {"/shared/comment": b"renamed", "/private/comment": None})
        d = cli("migrate", project, "--json")
        assert d.code == ExitCode.OK and (d.json()["metadata"]["set"], d.json()["metadata"]["removed"]) == (1, 1)
        assert values(tgt, tgt_team) == {"/shared/comment": b"renamed", "/private/comment": None}
        put(tgt, tgt_team, {"/shared/comment": b"changed by hand"})
        v = cli("verify", project, "--json")
        assert v.json()["accounts"][0]["metadata"]["differences"] == [
            {
                "source_folder": src_team,
                "target_folder": tgt_team,
                "entry": "/shared/comment",
                "source_value": "renamed",
                "target_value": "changed by hand",
            }
        ]
    finally:
        proxy.stop()


def test_dovecot_to_cyrus(dovecot_factory: Any, cyrus_factory: Any, tmp_path: Any) -> None:
    src = dovecot_factory(style="slash", users=USERS, metadata=True)
    tgt = cyrus_factory(users=USERS)
    carry(src, tgt, "Team", "INBOX/Team", tmp_path, target_admin=CYRUS_ADMIN)


def test_cyrus_to_dovecot(dovecot_factory: Any, cyrus_factory: Any, tmp_path: Any) -> None:
    src = cyrus_factory(users=USERS)
    tgt = dovecot_factory(style="dotted", users=USERS, metadata=True)
    carry(src, tgt, "INBOX/Team", "INBOX.Team", tmp_path, source_admin=CYRUS_ADMIN)


def test_target_without_metadata_is_a_finding(dovecot_factory: Any, tmp_path: Any) -> None:
    src = dovecot_factory(style="slash", users=USERS, metadata=True)
    tgt = dovecot_factory(style="slash", users=USERS)
    put(src, "Team", {"/shared/comment": b"c"}, create=True)
    r = cli("migrate", write_project(tmp_path / "p", src, tgt, USERS), "--json")
    assert r.code == ExitCode.FINDINGS, r.out
    (f,) = [f for f in r.json()["findings"] if f["kind"].startswith("metadata")]
    assert f["kind"] == "metadata-unsupported" and f["source_folder"] == "Team" and "/shared/comment" in f["message"]
