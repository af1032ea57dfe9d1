"""Cyrus IMAP as a second implementation: Dovecot -> Cyrus and Cyrus -> Dovecot.

Cyrus shows ``INBOX/`` as its personal prefix with ``/``, answers special-use in lower case
(``\\sent``), has CREATE-SPECIAL-USE, and refuses some malformed headers that Dovecot stores.
"""

from __future__ import annotations

from collections import Counter

from helpers import cli, folder_names, holdings, seed_sample, write_project

from conftest import corpus_messages
from mailferry.errors import ExitCode

USERS = {"alice": "alicepw", "bob": "bobpw"}
CYRUS_ADMIN = ("cyrus", "cyruspw")

# Refused by Cyrus 3.6 with "NO Message contains invalid header" (seen in the sandbox probe).
CYRUS_REFUSES = {
    "error_emails/multiple_references_with_one_invalid.eml",
    "plain_emails/raw_email_incorrect_header.eml",
    "rfc2822/example13.eml",
}


def special_uses(server, user, pw) -> dict[str, str | None]:
    from mailferry.connectors.imap import Endpoint, ImapStore, Login

    st = ImapStore(Endpoint(server.host, server.port, "none"), Login(user, pw), readonly=True)
    try:
        return {f.name: f.special_use for f in st.list_folders()}
    finally:
        st.close()


def everything(server, user, pw) -> Counter:
    return Counter(x for msgs in holdings(server, user, pw).values() for x in msgs)


def test_dovecot_to_cyrus_verifies_deep(dovecot_factory, cyrus_factory, tmp_path) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    tgt = cyrus_factory(users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=40)
    seed_sample(src, "bob", USERS["bob"], messages=10)
    project = write_project(tmp_path / "p", src, tgt, USERS, target_admin=CYRUS_ADMIN)
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    names = folder_names(tgt, "alice", USERS["alice"])
    assert "INBOX/Projects/2024" in names and "INBOX/Ärger & Ökonomie" in names and "INBOX/Empty" in names
    assert "INBOX/a_b test" in names  # '/' inside a name meets Cyrus' '/' separator
    assert special_uses(tgt, "alice", USERS["alice"])["INBOX/Sent"] == "\\Sent"
    for user, pw in USERS.items():
        assert everything(tgt, user, pw) == everything(src, user, pw)
    v = cli("verify", project, "--deep", "--json")
    assert v.code == ExitCode.OK and v.json()["clean"], v.out
    assert cli("migrate", project, "--json").json()["copied"] == 0


def test_cyrus_to_dovecot_verifies_deep(dovecot_factory, cyrus_factory, tmp_path) -> None:
    src = cyrus_factory(users=USERS, autocreate_folders=("Drafts", "Sent", "Trash", "Junk"))
    tgt = dovecot_factory(style="dotted", users=USERS, special_use=True)
    seed_sample(src, "alice", USERS["alice"], messages=40)
    project = write_project(tmp_path / "p", src, tgt, ["alice"], source_admin=CYRUS_ADMIN)
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    names = folder_names(tgt, "alice", USERS["alice"])
    assert "INBOX.Projects.2024" in names and "INBOX.Ärger & Ökonomie" in names
    assert "INBOX.v1_2 release" in names  # '.' inside a Cyrus name meets Dovecot's '.' separator
    assert everything(tgt, "alice", USERS["alice"]) == everything(src, "alice", USERS["alice"])
    v = cli("verify", project, "--deep", "--json")
    assert v.code == ExitCode.OK and v.json()["clean"], v.out


def test_corpus_into_cyrus_names_each_refusal(dovecot_factory, cyrus_factory, tmp_path) -> None:
    corpus = corpus_messages()
    src = dovecot_factory(style="slash", users=USERS)
    tgt = cyrus_factory(users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=2, corpus=[b for _, b in corpus])
    project = write_project(tmp_path / "p", src, tgt, ["alice"], target_admin=CYRUS_ADMIN)
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    refused = [f for f in r.json()["findings"] if f["kind"] == "refused"]
    assert len(refused) == len(CYRUS_REFUSES)
    for f in refused:
        assert "invalid header" in f["details"]["server"] and f["source_folder"] == "INBOX"
    # Everything else arrived byte for byte, and verify names exactly the refused ones.
    v = cli("verify", project, "--deep", "--json").json()
    kinds = Counter(d["kind"] for a in v["accounts"] for fo in a["folders"] for d in fo["discrepancies"])
    assert kinds == Counter({"refused": len(CYRUS_REFUSES)})
