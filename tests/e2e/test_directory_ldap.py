"""Directory migration with the generic LDAP dialect, between two OpenLDAP servers, and bad input.

Source ou=Users,dc=src,dc=test; target ou=Users,dc=tgt,dc=test. Addresses: ``mail`` and
``mailAlternateAddress``; a target "contact" is an inetOrgPerson without uid (an address-book
entry); created users are locked with ``employeeType: locked`` (the configured lock marker).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from helpers import cli, dir_project, seed_sample
from ldap3 import BASE, Connection, Server

from mailferry.errors import ExitCode
from mailferry.formats.ldif import entry_to_ldif, rdn
from mailferry.sandbox.ldap_servers import Slapd
from mailferry.sandbox.servers import DovecotServer


def person(ou: str, cn: str, uid: str | None, mail: str, aliases: Sequence[str] = ()) -> str:
    attrs: dict[str, list[str]] = {
        "objectClass": ["inetOrgPerson", "mailAlternateRecipient"],
        "cn": [cn],
        "sn": [cn.split()[-1]],
        "mail": [mail],
    }
    if aliases:
        attrs["mailAlternateAddress"] = list(aliases)
    if uid:
        attrs |= {"uid": [uid], "title": ["Accountant"]}
    return entry_to_ldif(f"{rdn('cn', cn)},{ou}", attrs)


def block(src: Slapd, tgt: Slapd, *, bind_dn: str | None = None, create: str = "", extra: str = "") -> str:
    os.environ["MF_GEN_SRC"] = src.root_pw
    os.environ.setdefault("MF_GEN_TGT", tgt.root_pw)
    return f"""
[directory]
target_container = "{tgt.users_dn}"
rules = ["smtp", "login"]
{extra}
[directory.source]
url = "ldap://127.0.0.1:{src.port}"
bind_dn = "{src.root_dn}"
password = "env:MF_GEN_SRC"
dialect = "generic"
bases = ["{src.users_dn}"]

[directory.target]
url = "ldap://127.0.0.1:{tgt.port}"
bind_dn = "{bind_dn or tgt.root_dn}"
password = "env:MF_GEN_TGT"
dialect = "generic"
bases = ["{tgt.users_dn}"]

[directory.create]
objectClass = "top person organizationalPerson inetOrgPerson mailAlternateRecipient"
{create}
[directory.lock]
employeeType = "locked"
"""


def read(server: Slapd, dn: str, attrs: list[str]) -> dict[str, list[str]] | None:
    c = Connection(Server("127.0.0.1", port=server.port), server.root_dn, server.root_pw, auto_bind=True)
    ok = c.search(dn, "(objectClass=*)", search_scope=BASE, attributes=attrs)
    out = None
    if ok and c.response:
        out = {k: [v.decode() for v in vs] for k, vs in c.response[0]["raw_attributes"].items()}
    c.unbind()
    return out


def test_generic_ldap_flow_then_mailboxes(slapd_factory, dovecot_factory, tmp_path) -> None:
    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    s, t = src.users_dn, tgt.users_dn
    src.add_ldif(
        "\n".join(
            [
                person(s, "Alice Ant", "alice", "alice@src.test", ["alice.old@src.test"]),
                person(s, "Bob Bee", "bob", "bob@src.test"),
                person(s, "Smith, John", "jsmith", "john.smith@src.test"),
                person(s, "Zoë #1+2", "zoe", "zoe@src.test"),
                person(s, "Frank Fox", "frank", "frank@src.test"),
            ]
        )
        # Paging: more than 1,000 address-book entries (no uid: contacts, not migrated).
        + "\n"
        + "\n".join(person(s, f"Partner {i:04d}", None, f"p{i}@partner.example") for i in range(1100))
    )
    tgt.add_ldif(
        person(t, "Alice T", "alice.t", "alice.t@tgt.test", ["alice@src.test"])
        + "\n"
        + person(t, "Bob Contact", None, "bob@src.test")
        + f"\ndn: cn=Finance,{t}\nobjectClass: groupOfNames\ncn: Finance\nmember: cn=Bob Contact,{t}\n"
        + "\n"
        + person(t, "Frank One", "frank1", "frank1@tgt.test", ["frank@src.test"])
        + "\n"
        + person(t, "Frank Two", "frank2", "frank2@tgt.test", ["frank@src.test"])
        # An address-book entry without mail stands for nobody: never merged, never touched.
        + f"\ndn: cn=No Mail,{t}\nobjectClass: inetOrgPerson\ncn: No Mail\nsn: Mail\n"
    )
    imap_src = dovecot_factory(style="slash", users={u: f"{u}pw" for u in ("alice", "bob", "jsmith", "zoe")})
    imap_tgt = DovecotServer.start(
        tmp_path / "tgt-imap", style="dotted", users={}, special_use=False, ldap=tgt.dovecot_userdb()
    )
    try:
        for u in ("alice", "jsmith"):
            seed_sample(imap_src, u, f"{u}pw", messages=6)
        project = dir_project(tmp_path / "p", imap_src, imap_tgt, block(src, tgt, extra='account_key = "login"'))

        plan = cli("directory", "plan", project, "--json")
        assert plan.code == ExitCode.FINDINGS, plan.err + plan.out  # frank is ambiguous
        pd = plan.json()
        assert pd["source_people"] >= 1104  # paged past 1,000
        by = {p["login"]: p for p in pd["people"]}
        assert (by["alice"]["status"], by["alice"]["rule"]) == ("matched", "smtp")
        assert by["bob"]["status"] == "contact_to_merge"
        assert by["jsmith"]["status"] == by["zoe"]["status"] == "to_create"
        assert by["frank"]["status"] == "ambiguous" and len(by["frank"]["candidates"]) == 2

        r = cli("directory", "apply", project, "--json")
        assert r.code == ExitCode.FINDINGS, r.out + r.err
        d = r.json()
        assert (d["created"], d["merged"], d["failed"]) == (3, 1, 0), d["findings"]
        assert [f["kind"] for f in d["findings"]] == ["skipped"] and "frank" in d["findings"][0]["dn"].lower()
        assert read(tgt, f"cn=No Mail,{t}", ["cn"]) is not None
        frank1 = read(tgt, f"cn=Frank One,{t}", ["mailAlternateAddress"])
        assert frank1 is not None and frank1["mailAlternateAddress"] == ["frank@src.test"]  # left alone
        john = read(tgt, f"cn=Smith\\, John,{t}", ["uid", "employeeType", "mail", "mailAlternateAddress", "title"])
        assert john is not None and john["uid"] == ["jsmith"] and john["employeeType"] == ["locked"]
        assert john["title"] == ["Accountant"]
        zoe = [p for p in pd["actions"] if p["action"] == "create" and "zoe" in str(p["attributes"].get("uid"))]
        assert zoe and read(tgt, zoe[0]["dn"], ["uid"]) is not None  # '#' and '+' escaped in the DN
        alice = read(tgt, f"cn=Alice T,{t}", ["mailAlternateAddress"])
        assert alice is not None and "alice.old@src.test" in alice["mailAlternateAddress"]  # old address kept
        assert read(tgt, f"cn=Bob Contact,{t}", ["cn"]) is None
        finance = read(tgt, f"cn=Finance,{t}", ["member"])
        assert finance is not None and f"cn=Bob Bee,{t}".lower() in [m.lower() for m in finance["member"]]

        again = cli("directory", "apply", project, "--json").json()
        assert (again["created"], again["merged"], again["addresses_added"], again["failed"]) == (0, 0, 0, 0)

        m = cli("migrate", project, "--json")
        assert m.code == ExitCode.OK, m.out + m.err
        moved = {a["account"]: (a["target_account"], a["copied"]) for a in m.json()["accounts"]}
        assert moved["alice"] == ("alice.t", 8) and moved["jsmith"] == ("jsmith", 8)
        assert cli("verify", project, "--deep", "--json").json()["clean"]
    finally:
        imap_tgt.close()


def test_bad_input_is_reported_and_nothing_is_half_created(slapd_factory, dovecot_factory, tmp_path) -> None:
    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    s, t = src.users_dn, tgt.users_dn
    src.add_ldif(
        person(s, "Carl Crow", "carl", "carl@src.test") + "\n" + person(s, "Dana Dove", "dana", "dana@src.test")
    )
    # A bind account that may read but not write (slapd: access to * by * read).
    tgt.add_ldif(f"dn: cn=reader,{tgt.suffix}\nobjectClass: person\ncn: reader\nsn: reader\nuserPassword: readerpw\n")
    imap = dovecot_factory(style="slash", users={"x": "y"})

    os.environ["MF_GEN_TGT"] = "readerpw"
    project = dir_project(tmp_path / "ro", imap, imap, block(src, tgt, bind_dn=f"cn=reader,{tgt.suffix}"))
    early = cli("migrate", project)  # no accounts CSV yet: say what to do
    assert early.code == ExitCode.USAGE and "directory apply" in early.err
    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    refused = [f for f in r.json()["findings"] if f["kind"] == "refused"]
    assert len(refused) == 2 and all("insufficientAccessRights" in f["message"] for f in refused)
    assert all("write rights" in f["hint"] for f in refused)
    assert read(tgt, f"cn=Carl Crow,{t}", ["cn"]) is None

    os.environ["MF_GEN_TGT"] = tgt.root_pw
    project = dir_project(tmp_path / "schema", imap, imap, block(src, tgt, create='favouriteColour = "blue"\n'))
    # The schema lacks the attribute: the plan says so once (not once per user), apply writes nothing.
    plan = cli("directory", "plan", project, "--json")
    assert plan.code == ExitCode.CONFIG, plan.out + plan.err
    failed = [p for p in plan.json()["preconditions"] if p["ok"] is False]
    assert len(failed) == 1 and "favouriteColour" in failed[0]["message"]
    assert "2 users to create" in failed[0]["message"]
    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.CONFIG, r.out + r.err
    assert r.json()["blocked"] and r.json()["actions"] == [] and r.json()["accounts_csv"] is None
    assert [f["kind"] for f in r.json()["findings"]] == ["precondition"]
    assert read(tgt, f"cn=Carl Crow,{t}", ["cn"]) is None  # not created at all, not half
    assert not (tmp_path / "schema" / "accounts.csv").exists()
    ledger = sqlite3.connect(tmp_path / "schema" / "project.ledger.sqlite")
    assert ledger.execute("SELECT COUNT(*) FROM directory_changes WHERE kind='create'").fetchone()[0] == 0


def test_malformed_sid_is_reported_with_its_entry(slapd_factory, dovecot_factory, tmp_path) -> None:
    # The AD dialect against slapd's AD look-alike schema, where any bytes can be stored as objectSid.
    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    s = src.users_dn
    src.add_ldif(
        f"dn: cn=Odd Sid,{s}\nobjectClass: user\ncn: Odd Sid\nsn: Sid\nsAMAccountName: odd\nmail: odd@src.test\n"
        "objectSid:: AQUAAAAAAAU=\n"  # revision 1 with 5 sub-authorities announced but none there
    )
    imap = dovecot_factory(style="slash", users={"x": "y"})
    dir_block = block(src, tgt).replace('dialect = "generic"\nbases = ["' + s, 'dialect = "ad"\nbases = ["' + s, 1)
    project = dir_project(tmp_path / "p", imap, imap, dir_block)
    r = cli("directory", "plan", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    problems = r.json()["problems"]
    assert len(problems) == 1 and "cn=Odd Sid" in problems[0] and "malformed" in problems[0]
    people = r.json()["people"]
    assert [p["status"] for p in people] == ["to_create"]  # still planned, by its other attributes


def _load_org(src: Slapd, tgt: Slapd, n: int) -> None:
    s, t = src.users_dn, tgt.users_dn
    src.add_ldif("\n".join(person(s, f"Person {i:03d}", f"p{i:03d}", f"p{i:03d}@src.test", [f"old{i:03d}@src.test"])
                           for i in range(n)))  # fmt: skip
    # A third match by alias, a third are address-book contacts in a group, a third are new.
    tgt.add_ldif(
        "\n".join(
            person(t, f"Target {i:03d}", f"t{i:03d}", f"t{i:03d}@tgt.test", [f"p{i:03d}@src.test"])
            for i in range(0, n, 3)
        )  # fmt: skip
        + "\n"
        + "\n".join(person(t, f"Contact {i:03d}", None, f"p{i:03d}@src.test") for i in range(1, n, 3))
        + f"\ndn: cn=All Contacts,{t}\nobjectClass: groupOfNames\ncn: All Contacts\n"
        + "".join(f"member: cn=Contact {i:03d},{t}\n" for i in range(1, n, 3))
    )


def _target_state(tgt: Slapd) -> list[tuple[str, ...]]:
    c = Connection(Server("127.0.0.1", port=tgt.port), tgt.root_dn, tgt.root_pw, auto_bind=True)
    c.search(
        tgt.users_dn, "(objectClass=*)", attributes=["uid", "mail", "mailAlternateAddress", "member", "employeeType"]
    )
    out = []
    for e in c.response:
        a = e["raw_attributes"]
        out.append((e["dn"].lower(), *(",".join(sorted(v.decode().lower() for v in a.get(k, []))) for k in sorted(a))))
    c.unbind()
    return sorted(out)


def test_interrupted_apply_resumes_to_the_same_end_and_plan_is_what_apply_does(
    slapd_factory, dovecot_factory, tmp_path
) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    n = 90
    imap = dovecot_factory(style="slash", users={"x": "y"})
    ref_src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    ref_tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    _load_org(ref_src, ref_tgt, n)
    os.environ["MF_GEN_TGT"] = ref_tgt.root_pw
    ref = dir_project(tmp_path / "ref", imap, imap, block(ref_src, ref_tgt, extra="confirm_mailboxes = false"))
    planned = cli("directory", "plan", ref, "--json").json()["actions"]
    assert cli("directory", "apply", ref, "--json").code == ExitCode.OK
    journal = sqlite3.connect(tmp_path / "ref" / "project.ledger.sqlite").execute(
        "SELECT kind, dn FROM directory_changes ORDER BY id"
    )
    # The journal holds each change as planned (and a merge's intent before its changes).
    changes = [(k, dn) for k, dn in journal if k != "merge-intent"]
    assert changes == [(a["action"], a["dn"]) for a in planned if a["action"] != "skip"]

    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    _load_org(src, tgt, n)
    os.environ["MF_GEN_TGT"] = tgt.root_pw
    project = dir_project(tmp_path / "killed", imap, imap, block(src, tgt, extra="confirm_mailboxes = false"))
    ledger = tmp_path / "killed" / "project.ledger.sqlite"
    rng = random.Random(11)
    kills = 0
    for _ in range(4):
        threshold = rng.randint(1, len(planned))
        proc = subprocess.Popen([sys.executable, "-m", "mailferry", "directory", "apply", str(project), "--json"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                done = (
                    sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
                    .execute("SELECT COUNT(*) FROM directory_changes")
                    .fetchone()[0]
                )
            except sqlite3.Error:
                done = 0
            if done >= threshold:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
    assert kills >= 2, f"only {kills} kills landed"
    final = cli("directory", "apply", project, "--json")
    assert final.code == ExitCode.OK, final.out + final.err
    got, want = _target_state(tgt), _target_state(ref_tgt)  # both servers use the same suffix
    assert got == want, (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    again = cli("directory", "apply", project, "--json").json()
    assert (again["created"], again["merged"], again["addresses_added"]) == (0, 0, 0)


class _Crash(BaseException):
    """Stands for the process dying right before one more directory write."""


def test_a_crash_before_any_single_write_then_resume_ends_like_an_uninterrupted_apply(
    slapd_factory, dovecot_factory, tmp_path, monkeypatch
) -> None:
    from mailferry import api
    from mailferry.config.load import load_project
    from mailferry.connectors import ldap as connector

    imap = dovecot_factory(style="slash", users={"x": "y"})
    os.environ["MF_GEN_TGT"] = "tgtpw"

    def org(tag: str) -> tuple[Slapd, Slapd, Path]:
        src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
        tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
        _load_org(src, tgt, 9)
        return src, tgt, dir_project(tmp_path / tag, imap, imap, block(src, tgt, extra="confirm_mailboxes = false"))

    _s, ref_tgt, ref = org("ref")
    assert cli("directory", "apply", ref, "--json").code == ExitCode.OK
    want = _target_state(ref_tgt)

    writes = {"done": 0, "allowed": 0}
    for name in ("add", "modify", "delete"):
        original = getattr(connector.LdapDirectory, name)

        def guarded(self, *args, _original=original, **kw):  # type: ignore[no-untyped-def]
            if writes["allowed"] and writes["done"] >= writes["allowed"]:
                raise _Crash()
            writes["done"] += 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(connector.LdapDirectory, name, guarded)

    k = 0
    while True:
        k += 1
        _s, tgt, project = org(f"crash-{k}")
        writes.update(done=0, allowed=k)
        try:
            api.directory_apply(load_project(project))
            finished = True
        except _Crash:
            finished = False
        writes.update(done=0, allowed=0)
        again = cli("directory", "apply", project, "--json")
        assert again.code == ExitCode.OK, again.out + again.err
        got = _target_state(tgt)
        assert got == want, (k, sorted(set(got) - set(want)), sorted(set(want) - set(got)))
        if finished:
            break
    assert k > 10  # every write of the apply was a crash point once


def test_a_lock_marker_the_target_schema_lacks_stops_apply_before_any_write(
    slapd_factory, dovecot_factory, tmp_path
) -> None:
    # pwdAccountLockedTime exists only with slapd's ppolicy overlay, which this target lacks.
    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    s, t = src.users_dn, tgt.users_dn
    src.add_ldif(
        person(s, "Alice Ant", "alice", "alice@src.test", ["alice.old@src.test"])
        + "\n"
        + person(s, "Carl Crow", "carl", "carl@src.test")
    )
    tgt.add_ldif(person(t, "Alice T", "alice.t", "alice.t@tgt.test", ["alice@src.test"]))
    imap = dovecot_factory(style="slash", users={"x": "y"})
    os.environ["MF_GEN_TGT"] = tgt.root_pw
    locked = block(src, tgt).replace('employeeType = "locked"', 'pwdAccountLockedTime = "000001010000Z"')
    project = dir_project(tmp_path / "p", imap, imap, locked)

    plan = cli("directory", "plan", project, "--json")
    assert plan.code == ExitCode.CONFIG, plan.out + plan.err
    (failed,) = [p for p in plan.json()["preconditions"] if p["ok"] is False]
    assert failed["check"] == "lock marker" and "pwdAccountLockedTime" in failed["message"]
    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.CONFIG and r.json()["blocked"], r.out + r.err
    alice = read(tgt, f"cn=Alice T,{t}", ["mailAlternateAddress"])
    assert alice is not None and alice["mailAlternateAddress"] == ["alice@src.test"]  # no old address added
    assert read(tgt, f"cn=Carl Crow,{t}", ["cn"]) is None


def test_apply_reports_progress_through_the_reporter(slapd_factory, dovecot_factory, tmp_path) -> None:
    from mailferry import api
    from mailferry.config.load import load_project

    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    _load_org(src, tgt, 9)
    imap = dovecot_factory(style="slash", users={"x": "y"})
    os.environ["MF_GEN_TGT"] = tgt.root_pw
    project = dir_project(tmp_path / "p", imap, imap, block(src, tgt, extra="confirm_mailboxes = false"))

    class Recorder:
        def __init__(self) -> None:
            self.total = -1
            self.seen: list[tuple[str, str, str]] = []

        def started(self, actions: int) -> None:
            self.total = actions

        def action(self, kind: str, dn: str, outcome: str) -> None:
            self.seen.append((kind, dn, outcome))

    rec = Recorder()
    result = api.directory_apply(load_project(project), reporter=rec)
    assert result.exit_code == ExitCode.OK
    assert rec.total == len(rec.seen) == len(result.data["actions"]) > 0
    assert [(a["action"], a["dn"], a["outcome"]) for a in result.data["actions"]] == rec.seen
    assert {o for _k, _d, o in rec.seen} == {"done"}
