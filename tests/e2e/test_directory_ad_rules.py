"""Directory apply between two Samba AD domains: what the target must allow before anything is
written, what the identity map may claim, what a merge keeps, references between new people,
the admin's own decisions (and undoing a merge), and new users that can log in once enabled.

The directories are those of ``test_directory_ad.build_directories`` (alice matched by SID, bob by
X500, carol by address, dave to create, erin merged from a contact, frank ambiguous, gina in
conflict), changed per test.
"""

from __future__ import annotations

import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

from helpers import cli, dir_project
from ldap3 import MODIFY_REPLACE, SUBTREE, Connection, Server, Tls
from test_directory_ad import _can_bind, _read, build_directories, directory_block

from mailferry.errors import ExitCode
from mailferry.formats.ldif import ldif_to_entry
from mailferry.sandbox.ldap_servers import SambaDC


def _admin(dc: SambaDC) -> Connection:
    """The admin over LDAPS: AD takes passwords (unicodePwd) only over an encrypted connection."""
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(dc.ca_file), valid_names=[dc.dns_name])
    return Connection(Server(dc.ip, port=636, use_ssl=True, tls=tls), dc.admin_dn, dc.admin_password, auto_bind=True)


def _enable(dc: SambaDC, dn: str, password: str) -> None:
    c = _admin(dc)
    c.modify(dn, {"unicodePwd": [(MODIFY_REPLACE, [f'"{password}"'.encode("utf-16-le")])]})
    assert c.result["description"] == "success", c.result
    c.modify(dn, {"userAccountControl": [(MODIFY_REPLACE, ["512"])]})
    assert c.result["description"] == "success", c.result
    c.unbind()


def _state(dc: SambaDC, base: str) -> list[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]]:
    """Every entry under ``base`` with the attributes apply could change, to compare before/after."""
    c = Connection(Server(dc.ip, port=389), dc.admin_dn, dc.admin_password, auto_bind=True)
    wanted = ["proxyAddresses", "mail", "mailNickname", "member", "manager", "info", "sAMAccountName"]
    c.search(base, "(objectClass=*)", SUBTREE, attributes=wanted)
    out = []
    for e in c.response:
        if e.get("type") != "searchResEntry":
            continue
        raw = e["raw_attributes"]
        attrs = tuple(sorted((k, tuple(sorted(v.decode() for v in vs))) for k, vs in raw.items() if vs))
        out.append((e["dn"].lower(), attrs))
    c.unbind()
    return sorted(out)


def _project(tmp: Path, dovecot_factory: Any, src: SambaDC, tgt: SambaDC, *, container: str | None = None,
             extra: str = "", bind: tuple[str, str] | None = None) -> Path:  # fmt: skip
    imap = dovecot_factory(style="slash", users={"x": "y"})
    block = directory_block(src, tgt).replace("[directory]\n", "[directory]\nconfirm_mailboxes = false\n" + extra, 1)
    if container is not None:
        block = block.replace(f'target_container = "OU=Staff,{tgt.base_dn}"', f'target_container = "{container}"')
    if bind is not None:
        import os

        os.environ["MF_DIR_TGT"] = bind[1]
        block = block.replace(f'bind_dn = "{tgt.admin_dn}"', f'bind_dn = "{bind[0]}"')
    return dir_project(tmp, imap, imap, block)


def _changes(project: Path) -> list[tuple[str, str]]:
    ledger = project.parent / "project.ledger.sqlite"
    if not ledger.exists():
        return []
    return [tuple(r) for r in sqlite3.connect(ledger).execute("SELECT kind, dn FROM directory_changes")]  # type: ignore[misc]


# ----------------------------------------------------------------------------- 4. preconditions


def test_missing_target_container_writes_nothing_and_says_so_once(samba_factory, dovecot_factory, tmp_path) -> None:
    src, tgt = build_directories(samba_factory)
    staff = f"OU=Staff,{tgt.base_dn}"
    missing = f"OU=Migrated,{tgt.base_dn}"
    project = _project(tmp_path / "p", dovecot_factory, src, tgt, container=missing)
    before = _state(tgt, tgt.base_dn)

    plan = cli("directory", "plan", project, "--json")
    assert plan.code == ExitCode.CONFIG, plan.out + plan.err
    failed = [p for p in plan.json()["preconditions"] if p["ok"] is False]
    assert len(failed) == 1 and missing in failed[0]["message"] and "does not exist" in failed[0]["message"]
    # The readable plan says it once too, after the outcome summary.
    readable = cli("directory", "plan", project)
    assert readable.out.count("does not exist") == 1
    assert readable.out.splitlines()[0].startswith("7 source people")

    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.CONFIG, r.out + r.err
    data = r.json()
    assert data["blocked"] and data["actions"] == [] and data["created"] == 0
    assert [f["kind"] for f in data["findings"]] == ["precondition"]  # once, not once per user
    # Nothing was written: not the matched users' addresses, not the contact, not the ledger's
    # journal or identity map, not the accounts CSV.
    assert _state(tgt, tgt.base_dn) == before
    assert _read(tgt, f"CN=Erin Contact,{staff}", ["cn"]) is not None
    assert _changes(project) == []
    assert not (project.parent / "accounts.csv").exists()
    human = cli("directory", "apply", project)
    assert human.code == ExitCode.CONFIG and "nothing was written" in human.out


def test_bind_account_that_may_not_create_users_writes_nothing(samba_factory, dovecot_factory, tmp_path) -> None:
    src, tgt = build_directories(samba_factory)
    # A plain domain user: it may read the directory, and create nothing in OU=Staff.
    reader = f"CN=Reader,CN=Users,{tgt.base_dn}"
    c = _admin(tgt)
    c.add(reader, ["user"], {"sAMAccountName": "reader"})
    c.unbind()
    _enable(tgt, reader, "Passw0rd!Rdr")
    # Seen once on a loaded machine: the plan's bind refused right after the password was set.
    deadline = time.monotonic() + 10
    while not _can_bind(tgt, reader, "Passw0rd!Rdr") and time.monotonic() < deadline:
        time.sleep(0.2)
    project = _project(tmp_path / "p", dovecot_factory, src, tgt, bind=(reader, "Passw0rd!Rdr"))
    before = _state(tgt, tgt.base_dn)

    plan = cli("directory", "plan", project, "--json")
    assert plan.code == ExitCode.CONFIG, plan.out + plan.err
    (failed,) = [p for p in plan.json()["preconditions"] if p["ok"] is False]
    assert failed["check"] == "rights" and "may not create user entries" in failed["message"]
    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.CONFIG and r.json()["blocked"], r.out + r.err
    assert _state(tgt, tgt.base_dn) == before and _changes(project) == []


# ----------------------------------------------------------------------------- 5. outcomes


def test_refused_creation_is_neither_in_the_identity_map_nor_in_the_accounts_csv(
    samba_factory, dovecot_factory, tmp_path
) -> None:
    src, tgt = build_directories(samba_factory)
    # dave's and erin's logins are taken by users outside the target bases: AD refuses both new
    # users (sAMAccountName is unique in the domain), which the plan can't see.
    c = _admin(tgt)
    for login in ("dave", "erin"):
        c.add(f"CN=Old {login},CN=Users,{tgt.base_dn}", ["user"], {"sAMAccountName": login})
        assert c.result["description"] == "success", c.result
    c.unbind()
    project = _project(tmp_path / "p", dovecot_factory, src, tgt)

    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    data = r.json()
    # Only accounts that exist: in the apply JSON, the ledger's identity map and the accounts CSV.
    logins = {row["source_login"] for row in data["identity"]}
    assert logins == {"alice", "bob", "carol"}
    ledger = sqlite3.connect(project.parent / "project.ledger.sqlite")
    assert {r[0] for r in ledger.execute("SELECT source_login FROM identity_map")} == logins
    csv_text = (project.parent / "accounts.csv").read_text()
    assert "dave" not in csv_text and "erin" not in csv_text and "alice,alice.t" in csv_text
    # Each action with its outcome.
    assert (data["created"], data["failed"], data["not_attempted"], data["merged"]) == (0, 2, 1, 0)
    outcome = {(a["action"], a["source"].split(",")[0]): a["outcome"] for a in data["actions"]}
    assert outcome[("create", "CN=Dave Doe")] == outcome[("create", "CN=Erin Elk")] == "refused"
    assert outcome[("merge-contact", "CN=Erin Elk")] == "not attempted"  # its user does not exist
    assert outcome[("add-addresses", "CN=Alice Ant")] == "done"
    refused = [f for f in data["findings"] if f["kind"] == "refused"]
    assert len(refused) == 2 and all("already in use" in f["message"] for f in refused)
    # The refusals are findings of the run in the ledger too.
    kinds = [r[0] for r in ledger.execute("SELECT kind FROM findings")]
    assert kinds.count("directory-refused") == 2 and kinds.count("directory-not-attempted") == 1
    assert _read(tgt, f"CN=Erin Contact,OU=Staff,{tgt.base_dn}", ["cn"]) is not None  # not merged into nothing


# ----------------------------------------------------------------------------- 6. merges


def test_merge_keeps_every_attribute_the_contact_had(samba_factory, dovecot_factory, tmp_path) -> None:
    src, tgt = build_directories(samba_factory)
    staff = f"OU=Staff,{tgt.base_dn}"
    tgt.modify_ldif(
        f"dn: CN=Erin Contact,{staff}\nchangetype: modify\n"
        "add: info\ninfo: met at the partner fair\n-\n"
        "add: wWWHomePage\nwWWHomePage: https://erin.partner.example\n-\n"
        "add: notes\nnotes: only contacts have notes\n-\n"
        "add: targetAddress\ntargetAddress: SMTP:erin@partner.example\n-\n"
        "add: department\ndepartment: Partners\n-\n"
        # carol (matched by address) has a contact too, carrying her old address.
        f"\ndn: CN=Carol Contact,{staff}\nchangetype: add\nobjectClass: contact\nmail: carol.old@src.test\n"
        "info: prefers phone\nwWWHomePage: https://carol.example\n"
    )
    project = _project(tmp_path / "p", dovecot_factory, src, tgt)

    plan = cli("directory", "plan", project, "--json")
    merges = {a["contact"].split(",")[0]: a for a in plan.json()["actions"] if a["action"] == "merge-contact"}
    erin = merges["CN=Erin Contact"]
    # title and phone: the user has its own; cn, mail, addresses: the merge carries them otherwise.
    assert set(erin["copy"]) == {"info", "wWWHomePage", "department", "description"}
    assert sorted(n.split(":")[0] for n in erin["not_copied"]) == ["notes", "targetAddress"]
    assert set(merges["CN=Carol Contact"]["copy"]) == {"info", "wWWHomePage"}

    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.FINDINGS and r.json()["merged"] == 2, r.out + r.err
    attrs = ["info", "wWWHomePage", "department", "telephoneNumber", "targetAddress", "notes"]
    user = _read(tgt, f"CN=Erin Elk,{staff}", attrs)
    assert user is not None
    assert user["info"] == ["met at the partner fair"] and user["wWWHomePage"] == ["https://erin.partner.example"]
    assert user["department"] == ["Partners"]
    assert user["telephoneNumber"] == ["+41 44 000 00 00"]  # the user's own, not the contact's
    assert not user.get("targetAddress") and not user.get("notes")  # named in the plan, not copied
    carol = _read(tgt, f"CN=Carol T,{staff}", ["info", "wWWHomePage"])
    assert carol is not None and carol["info"] == ["prefers phone"]
    assert carol["wWWHomePage"] == ["https://carol.example"]
    again = cli("directory", "apply", project, "--json").json()
    assert (again["merged"], again["created"], again["failed"]) == (0, 0, 0)


# ----------------------------------------------------------------------------- 7. cycles


def test_new_people_managing_each_other_are_both_linked(samba_factory, dovecot_factory, tmp_path) -> None:
    src, tgt = build_directories(samba_factory)
    s_ou, t_ou = f"OU=Staff,{src.base_dn}", f"OU=Staff,{tgt.base_dn}"
    src.add_ldif(
        "".join(
            f"dn: CN={cn},{s_ou}\nobjectClass: user\nsAMAccountName: {login}\nmail: {login}@src.test\n"
            f"proxyAddresses: SMTP:{login}@src.test\n\n"
            for cn, login in [("Hank Hog", "hank"), ("Ivy Ibis", "ivy"), ("Jo Jay", "jo")]
        )
    )
    # hank and ivy manage each other; jo is managed by alice (matched); dave by hank (both new).
    src.modify_ldif(
        f"dn: CN=Hank Hog,{s_ou}\nchangetype: modify\nreplace: manager\nmanager: CN=Ivy Ibis,{s_ou}\n-\n\n"
        f"dn: CN=Ivy Ibis,{s_ou}\nchangetype: modify\nreplace: manager\nmanager: CN=Hank Hog,{s_ou}\n-\n\n"
        f"dn: CN=Jo Jay,{s_ou}\nchangetype: modify\nreplace: manager\nmanager: CN=Alice Ant,{s_ou}\n-\n\n"
        f"dn: CN=Dave Doe,{s_ou}\nchangetype: modify\nreplace: manager\nmanager: CN=Hank Hog,{s_ou}\n-\n"
    )
    project = _project(tmp_path / "p", dovecot_factory, src, tgt)
    plan = cli("directory", "plan", project, "--json").json()
    assert not any("cycle" in n for a in plan["actions"] for n in a.get("notes", []))  # nothing cut

    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    assert r.json()["failed"] == 0 and r.json()["managers_set"] == 3, r.json()["findings"]

    def manager(cn: str) -> list[str]:
        return (_read(tgt, f"CN={cn},{t_ou}", ["manager"]) or {}).get("manager", [])

    assert manager("Hank Hog") == [f"CN=Ivy Ibis,{t_ou}"] and manager("Ivy Ibis") == [f"CN=Hank Hog,{t_ou}"]
    assert manager("Dave Doe") == [f"CN=Hank Hog,{t_ou}"]
    assert manager("Jo Jay") == [f"CN=Alice T,{t_ou}"]  # an existing manager: set in the add itself
    again = cli("directory", "apply", project, "--json").json()
    assert (again["managers_set"], again["created"]) == (0, 0)


# ----------------------------------------------------------------------------- 8. the admin decides


def test_admin_resolves_ambiguous_and_conflicting_people(samba_factory, dovecot_factory, tmp_path) -> None:
    src, tgt = build_directories(samba_factory)
    s_ou, t_ou = f"OU=Staff,{src.base_dn}", f"OU=Staff,{tgt.base_dn}"
    resolve = (
        f'\n[[directory.resolve]]\nsource = "CN=Frank Fox,{s_ou}"\ntarget = "CN=Frank One,{t_ou}"\n'
        f'\n[[directory.resolve]]\nsource = "CN=Gina Gnu,{s_ou}"\ntarget = "create"\n'
    )
    project = _project(tmp_path / "p", dovecot_factory, src, tgt)
    project.write_text(project.read_text() + resolve)

    plan = cli("directory", "plan", project, "--json")
    assert plan.code == ExitCode.OK, plan.out + plan.err  # nobody is left for the admin to decide
    by = {p["login"]: p for p in plan.json()["people"]}
    assert (by["frank"]["status"], by["frank"]["rule"], by["frank"]["target"]) == (
        "matched", "resolved", f"CN=Frank One,{t_ou}",
    )  # fmt: skip
    assert (by["gina"]["status"], by["gina"]["rule"]) == ("to_create", "resolved")

    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    assert r.json()["created"] == 3  # dave, erin, gina
    frank = _read(tgt, f"CN=Frank One,{t_ou}", ["proxyAddresses"])
    assert frank is not None and "smtp:frank.old@src.test" in frank["proxyAddresses"]
    gina = _read(tgt, f"CN=Gina Gnu,{t_ou}", ["sAMAccountName", "userAccountControl"])
    assert gina is not None and gina["sAMAccountName"] == ["gina"] and int(gina["userAccountControl"][0]) & 2
    csv_text = (project.parent / "accounts.csv").read_text()
    assert "frank,frank1" in csv_text and "gina,gina" in csv_text

    again = cli("directory", "apply", project, "--json")  # the decisions hold: nothing twice
    assert again.code == ExitCode.OK, again.out
    assert (again.json()["created"], again.json()["addresses_added"]) == (0, 0)
    assert _read(tgt, f"CN=Gina Gnu (gina),{t_ou}", ["cn"]) is None


def test_restore_puts_a_merged_contact_back(samba_factory, dovecot_factory, tmp_path) -> None:
    src, tgt = build_directories(samba_factory)
    t_ou = f"OU=Staff,{tgt.base_dn}"
    contact, user, group = f"CN=Erin Contact,{t_ou}", f"CN=Erin Elk,{t_ou}", f"CN=Partners,{t_ou}"
    tgt.modify_ldif(f"dn: {contact}\nchangetype: modify\nadd: info\ninfo: met at the fair\n-\n")
    project = _project(tmp_path / "p", dovecot_factory, src, tgt)
    assert cli("directory", "apply", project, "--json").json()["merged"] == 1
    assert _read(tgt, contact, ["cn"]) is None
    assert (_read(tgt, user, ["info"]) or {}).get("info") == ["met at the fair"]

    r = cli("directory", "restore", project, "--contact", contact, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    (done,) = r.json()["restored"]
    assert done["contact"] == contact and done["user"] == user and group in done["groups"]
    back = _read(tgt, contact, ["mail", "proxyAddresses", "telephoneNumber", "description", "info", "memberOf"])
    assert back is not None and back["mail"] == ["erin@src.test"] and back["info"] == ["met at the fair"]
    assert back["description"] == ["GAL sync"] and back["memberOf"] == [group]
    after = _read(tgt, user, ["info", "memberOf", "proxyAddresses"])
    assert after is not None and not after.get("info") and group not in after.get("memberOf", [])
    assert "smtp:erin.old@src.test" in after["proxyAddresses"]  # the user's own addresses stay
    # The LDIF beside the report: the contact without the server's operational attributes.
    ldif = Path(r.json()["ldif"]).read_text()
    dn, attrs = ldif_to_entry(ldif)
    assert dn == contact and {"objectguid", "whencreated", "usncreated", "instancetype"}.isdisjoint(
        k.lower() for k in attrs
    )
    assert Path(r.json()["ldif"]).parent == project.parent / "reports"

    plan = cli("directory", "plan", project, "--json").json()  # never merged again
    assert not [a for a in plan["actions"] if a["action"] == "merge-contact"]
    (erin,) = [p for p in plan["people"] if p["login"] == "erin"]
    assert erin["status"] == "matched" and "restored after a merge" in erin["reason"]
    again = cli("directory", "restore", project, "--json")
    assert again.code == ExitCode.FINDINGS and "exists again" in again.json()["findings"][0]["message"]
    assert cli("directory", "restore", project, "--contact", f"CN=Nobody,{t_ou}").code == ExitCode.USAGE


# ----------------------------------------------------------------------------- 9. AD users that can log in


def test_created_ad_users_can_log_in_once_enabled(samba_factory, dovecot_factory, tmp_path) -> None:
    src, tgt = build_directories(samba_factory)
    s_ou, t_ou = f"OU=Staff,{src.base_dn}", f"OU=Staff,{tgt.base_dn}"
    src.modify_ldif(
        f"dn: CN=Dave Doe,{s_ou}\nchangetype: modify\nreplace: userPrincipalName\n"
        "userPrincipalName: dave.doe@src.test\n-\n"
    )
    # A login AD's own tools can't take (over 20 characters), and no given name, surname or
    # display name: only a cn.
    src.add_ldif(
        f"dn: CN=Christopher Long,{s_ou}\nobjectClass: user\nsAMAccountName: christopher.alexander.long\n"
        "mail: christopher.long@src.test\nproxyAddresses: SMTP:christopher.long@src.test\n"
    )
    project = _project(tmp_path / "p", dovecot_factory, src, tgt)
    r = cli("directory", "apply", project, "--json")
    assert r.code == ExitCode.FINDINGS and r.json()["failed"] == 0, r.out + r.err

    attrs = ["userPrincipalName", "sAMAccountName", "displayName", "givenName", "sn", "userAccountControl"]
    dave = _read(tgt, f"CN=Dave Doe,{t_ou}", attrs)
    assert dave is not None and dave["userPrincipalName"] == ["dave.doe@tgt.test"]  # the target's suffix
    assert (dave["displayName"], dave["givenName"], dave["sn"]) == (["Dave Doe"], ["Dave"], ["Doe"])
    long = _read(tgt, f"CN=Christopher Long,{t_ou}", attrs)
    assert long is not None and long["sAMAccountName"] == ["christopher.alexande"]
    assert long["userPrincipalName"] == ["christopher.alexande@tgt.test"]
    assert (long["displayName"], long["givenName"], long["sn"]) == (["Christopher Long"], ["Christopher"], ["Long"])
    assert int(dave["userAccountControl"][0]) & 2  # created disabled: no login yet

    assert not _can_bind(tgt, "dave.doe@tgt.test", "Passw0rd!Dave")
    _enable(tgt, f"CN=Dave Doe,{t_ou}", "Passw0rd!Dave")  # what the admin does at cut-over
    assert _can_bind(tgt, "dave.doe@tgt.test", "Passw0rd!Dave")
    _enable(tgt, f"CN=Christopher Long,{t_ou}", "Passw0rd!Chr1s")
    assert _can_bind(tgt, "TGT\\christopher.alexande", "Passw0rd!Chr1s")
    csv_text = (project.parent / "accounts.csv").read_text()
    assert "christopher.alexander.long,christopher.alexande" in csv_text


# ----------------------------------------------------------------------------- readable output


def test_readable_plan_opens_with_the_summary_and_the_people_to_decide(
    samba_factory, dovecot_factory, tmp_path
) -> None:
    src, tgt = build_directories(samba_factory)
    t_ou = f"OU=Staff,{tgt.base_dn}"
    project = _project(tmp_path / "p", dovecot_factory, src, tgt)
    r = cli("directory", "plan", project)
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    lines = r.out.splitlines()
    assert lines[0] == (
        "7 source people, 9 target people: ambiguous 1, conflict 1, contact_to_merge 1, to_create 1, matched 3"
    )
    people = [ln for ln in lines if ln.split(" ", 1)[0].rstrip(":") in ("ambiguous", "conflict", "matched",
                                                                        "to_create", "contact_to_merge")]  # fmt: skip
    assert [ln.split(" ", 1)[0].rstrip(":") for ln in people[:2]] == ["ambiguous", "conflict"]
    # Reasons in full, however long: both of frank's candidates, every DN whole.
    assert f"CN=Frank One,{t_ou}; CN=Frank Two,{t_ou}" in people[0]
    assert "…" not in r.out

    only = cli("directory", "plan", project, "--json", "--outcome", "conflict", "--outcome", "ambiguous")
    data = only.json()
    assert sorted(p["login"] for p in data["people"]) == ["frank", "gina"]
    assert data["counts"]["matched"] == 3  # the summary stays whole
    assert {a["source"] for a in data["actions"]} == {p["source"] for p in data["people"]}
    assert cli("directory", "plan", project, "--outcome", "maybe").code == ExitCode.USAGE
