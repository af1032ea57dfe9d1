"""Directory migration between two Samba AD domains, then the mailboxes of the people it found.

Source SRC.TEST (127.0.0.11), target TGT.TEST (127.0.0.12). In the source OU=Staff:

- alice: the target has her as alice.t, with her source objectSid in sIDHistory (ADMT style);
- bob: the target's bob.t carries bob's legacyExchangeDN as an X500 proxy address;
- carol: the target's carol.t has carol's address as a secondary SMTP address;
- dave: nobody in the target: created disabled;
- erin: the target has a contact for her address, member of a group: merged into a new user;
- frank: two target users carry his address: ambiguous, left alone;
- gina: SID history says gina.a, her address says gina.b: conflict, left alone.
"""

from __future__ import annotations

import base64
import os

from helpers import cli, dir_project, holdings, seed_sample
from ldap3 import BASE, Connection, Server

from mailferry.errors import ExitCode
from mailferry.formats.ldif import ldif_to_entry
from mailferry.sandbox.ldap_servers import SambaDC
from mailferry.sandbox.servers import DovecotServer

LEGACY = "/o=SrcOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn="


def _user(dn_ou: str, cn: str, login: str, mails: list[str], *, legacy: str | None = None, extra: str = "") -> str:
    lines = [f"dn: CN={cn},{dn_ou}", "objectClass: user", f"sAMAccountName: {login}", f"mail: {mails[0]}"]
    lines += [f"proxyAddresses: SMTP:{mails[0]}"] + [f"proxyAddresses: smtp:{m}" for m in mails[1:]]
    if legacy:
        lines.append(f"legacyExchangeDN: {legacy}")
    lines += [
        f"givenName: {cn.split()[0]}",
        f"sn: {cn.split()[-1]}",
        "title: Engineer",
        "telephoneNumber: +41 44 000 00 00",
    ]
    return "\n".join(lines) + ("\n" + extra if extra else "") + "\n"


def _sid(dc: SambaDC, dn: str) -> str:
    from mailferry.formats.sid import sid_to_str

    c = Connection(Server(dc.ip, port=389), dc.admin_dn, dc.admin_password, auto_bind=True)
    c.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["objectSid"])
    sid = sid_to_str(c.response[0]["raw_attributes"]["objectSid"][0])
    c.unbind()
    return sid


def _read(dc: SambaDC, dn: str, attrs: list[str]) -> dict[str, list[str]] | None:
    c = Connection(Server(dc.ip, port=389), dc.admin_dn, dc.admin_password, auto_bind=True)
    ok = c.search(dn, "(objectClass=*)", search_scope=BASE, attributes=attrs)
    out = None
    if ok and c.response:
        raw = c.response[0]["raw_attributes"]
        out = {k: [v.decode() for v in vs] for k, vs in raw.items()}
    c.unbind()
    return out


def _can_bind(dc: SambaDC, dn: str, password: str) -> bool:
    c = Connection(Server(dc.ip, port=389), dn, password)
    ok = bool(c.bind())
    c.unbind()
    return ok


def build_directories(samba_factory) -> tuple[SambaDC, SambaDC]:
    from ldap_fixtures import SAMBA_TGT

    src = samba_factory()
    tgt = samba_factory(**SAMBA_TGT)
    s_ou, t_ou = f"OU=Staff,{src.base_dn}", f"OU=Staff,{tgt.base_dn}"
    src.add_ldif(
        f"dn: {s_ou}\nobjectClass: organizationalUnit\n\n"
        + "\n".join(
            _user(s_ou, cn, login, [f"{login}@src.test", f"{login}.old@src.test"], legacy=LEGACY + login)
            for cn, login in [
                ("Alice Ant", "alice"),
                ("Bob Bee", "bob"),
                ("Carol Cat", "carol"),
                ("Dave Doe", "dave"),
                ("Erin Elk", "erin"),
                ("Frank Fox", "frank"),
                ("Gina Gnu", "gina"),
            ]
        )  # fmt: skip
    )
    tgt.add_ldif(
        f"dn: {t_ou}\nobjectClass: organizationalUnit\n\n"
        + _user(t_ou, "Alice T", "alice.t", ["alice.t@tgt.test"]) + "\n"
        + _user(t_ou, "Bob T", "bob.t", ["bob.t@tgt.test"], extra=f"proxyAddresses: X500:{LEGACY}bob") + "\n"
        + _user(t_ou, "Carol T", "carol.t", ["carol.t@tgt.test", "carol@src.test"]) + "\n"
        + f"dn: CN=Erin Contact,{t_ou}\nobjectClass: contact\nmail: erin@src.test\n"
          "proxyAddresses: SMTP:erin@src.test\ntelephoneNumber: +41 44 111 11 11\ndescription: GAL sync\n\n"
        + f"dn: CN=Partners,{t_ou}\nobjectClass: group\nmember: CN=Erin Contact,{t_ou}\n\n"
        + _user(t_ou, "Frank One", "frank1", ["frank1@tgt.test", "frank@src.test"]) + "\n"
        + _user(t_ou, "Frank Two", "frank2", ["frank2@tgt.test", "frank@src.test"]) + "\n"
        + _user(t_ou, "Gina A", "gina.a", ["gina.a@tgt.test"]) + "\n"
        + _user(t_ou, "Gina B", "gina.b", ["gina.b@tgt.test", "gina@src.test"])
    )  # fmt: skip
    tgt.set_sid_history(f"CN=Alice T,{t_ou}", [_sid(src, f"CN=Alice Ant,{s_ou}")])
    tgt.set_sid_history(f"CN=Gina A,{t_ou}", [_sid(src, f"CN=Gina Gnu,{s_ou}")])
    return src, tgt


def directory_block(src: SambaDC, tgt: SambaDC, *, rules: str = '["sid", "x500", "smtp", "login"]') -> str:
    os.environ["MF_DIR_SRC"] = src.admin_password
    os.environ["MF_DIR_TGT"] = tgt.admin_password
    return f"""
[directory]
target_container = "OU=Staff,{tgt.base_dn}"
rules = {rules}

[directory.source]
url = "ldap://{src.ip}"
bind_dn = "{src.admin_dn}"
password = "env:MF_DIR_SRC"
bases = ["OU=Staff,{src.base_dn}"]

[directory.target]
url = "ldaps://{tgt.ip}"
bind_dn = "{tgt.admin_dn}"
password = "env:MF_DIR_TGT"
ca_file = "{tgt.ca_file}"
tls_server_name = "{tgt.dns_name}"
bases = ["OU=Staff,{tgt.base_dn}"]

[directory.mail_attributes]
mailNickname = "${{login}}"
"""


def test_directory_migration_between_two_ad_domains_then_mailboxes(samba_factory, dovecot_factory, tmp_path) -> None:
    src, tgt = build_directories(samba_factory)
    t_ou = f"OU=Staff,{tgt.base_dn}"
    # Source mailboxes live on a plain Dovecot (logins = source sAMAccountName); the target Dovecot
    # reads its users from the target directory over LDAP, as real deployments do.
    src_imap = dovecot_factory(style="dotted", users={u: f"{u}pw" for u in ("alice", "bob", "carol", "dave", "erin")},
                               special_use=False)  # fmt: skip
    tgt_imap = DovecotServer.start(tmp_path / "tgt-imap", style="slash", users={}, ldap=tgt.dovecot_userdb())
    try:
        for u in ("alice", "dave", "erin"):
            seed_sample(src_imap, u, f"{u}pw", messages=8)
        project = dir_project(tmp_path / "p", src_imap, tgt_imap, directory_block(src, tgt))

        disc = cli("directory", "discover", project, "--json")
        assert disc.code == ExitCode.OK, disc.err
        staff = [c for c in disc.json()["source"]["containers"] if c["dn"].startswith("OU=Staff")]
        assert staff and staff[0]["users"] == 7

        plan = cli("directory", "plan", project, "--json")
        assert plan.code == ExitCode.FINDINGS, plan.err + plan.out  # ambiguous and conflict are findings
        by = {p["login"]: p for p in plan.json()["people"]}
        assert (by["alice"]["status"], by["alice"]["rule"], by["alice"]["target"]) == (
            "matched",
            "sid",
            f"CN=Alice T,{t_ou}",
        )
        assert (by["bob"]["status"], by["bob"]["rule"]) == ("matched", "x500")
        assert (by["carol"]["status"], by["carol"]["rule"]) == ("matched", "smtp")
        assert by["dave"]["status"] == "to_create"
        assert by["erin"]["status"] == "contact_to_merge" and by["erin"]["target"] == f"CN=Erin Contact,{t_ou}"
        assert by["frank"]["status"] == "ambiguous" and len(by["frank"]["candidates"]) == 2
        assert by["gina"]["status"] == "conflict"
        assert not (tmp_path / "p" / "accounts.csv").exists()  # plan writes nothing

        r = cli("directory", "apply", project, "--json")
        assert r.code == ExitCode.FINDINGS, r.err + r.out
        data = r.json()
        assert data["created"] == 2 and data["merged"] == 1 and data["failed"] == 0, data["findings"]
        kinds = sorted(f["kind"] for f in data["findings"])
        assert kinds == ["skipped", "skipped"]  # frank (ambiguous) and gina (conflict), left alone

        dave = _read(tgt, f"CN=Dave Doe,{t_ou}", ["userAccountControl", "proxyAddresses", "title", "sAMAccountName"])
        assert dave is not None and int(dave["userAccountControl"][0]) & 2  # created disabled
        assert f"X500:{LEGACY}dave" in dave["proxyAddresses"] and "smtp:dave.old@src.test" in dave["proxyAddresses"]
        assert dave["title"] == ["Engineer"]
        erin = _read(tgt, f"CN=Erin Elk,{t_ou}", ["memberOf", "telephoneNumber", "description"])
        assert erin is not None and f"CN=Partners,{t_ou}" in erin.get("memberOf", [])
        assert _read(tgt, f"CN=Erin Contact,{t_ou}", ["cn"]) is None  # the contact is gone ...
        ledger_dump = project.parent / "project.ledger.sqlite"
        import sqlite3

        ldif = sqlite3.connect(ledger_dump).execute("SELECT contact_ldif FROM directory_merges").fetchone()[0]
        dn, attrs = ldif_to_entry(ldif)  # ... but restorable from the ledger
        assert dn == f"CN=Erin Contact,{t_ou}" and "mail" in {k.lower() for k in attrs}
        alice = _read(tgt, f"CN=Alice T,{t_ou}", ["proxyAddresses", "mailNickname"])
        assert alice is not None and f"X500:{LEGACY}alice" in alice["proxyAddresses"]
        assert "smtp:alice@src.test" in alice["proxyAddresses"] and alice["mailNickname"] == ["alice.t"]
        frank1 = _read(tgt, f"CN=Frank One,{t_ou}", ["proxyAddresses"])
        assert frank1 is not None and not any("X500" in v for v in frank1["proxyAddresses"])  # left alone

        again = cli("directory", "apply", project, "--json").json()
        assert (again["created"], again["merged"], again["addresses_added"], again["mail_attributes_set"]) == (
            0,
            0,
            0,
            0,
        )

        csv_text = (tmp_path / "p" / "accounts.csv").read_text()
        assert "alice,alice.t" in csv_text and "dave,dave" in csv_text and "erin,erin" in csv_text
        assert "frank" not in csv_text and "gina" not in csv_text
        assert data["mailboxes_confirmed"] == 5 and data["mailboxes_not_alive"] == 0

        # Now the mailboxes: no hand-made account list.
        m = cli("migrate", project, "--json")
        assert m.code == ExitCode.OK, m.out + m.err
        moved = {a["account"]: a["copied"] for a in m.json()["accounts"]}
        assert moved["alice"] == 10 and moved["dave"] == 10 and moved["erin"] == 10 and moved["bob"] == 0
        assert cli("verify", project, "--deep", "--json").json()["clean"]
        assert holdings(tgt_imap, "dave*admin", "adminpw")["INBOX"]
        assert not _can_bind(tgt, f"CN=Dave Doe,{t_ou}", "whatever")  # disabled: no login
    finally:
        tgt_imap.close()


def test_a_bind_that_fails_is_a_clear_auth_error(samba_factory, dovecot_factory, tmp_path) -> None:
    from ldap_fixtures import SAMBA_TGT

    src = samba_factory()
    tgt = samba_factory(**SAMBA_TGT)
    imap = dovecot_factory(style="slash", users={"x": "y"})
    block = directory_block(src, tgt)
    project = dir_project(tmp_path / "p", imap, imap, block)
    os.environ["MF_DIR_SRC"] = "not-the-password-" + base64.b16encode(os.urandom(4)).decode()
    r = cli("directory", "plan", project, "--json")
    assert r.code == ExitCode.AUTH
    assert "source directory" in r.err and "invalidCredentials" in r.err
    assert os.environ["MF_DIR_SRC"] not in r.err + r.out
