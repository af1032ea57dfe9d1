"""Directory preparation (ForestPrep/DomainPrep): the ``directory`` area of ``check`` and
``directory prepare`` against a real slapd with cn=config, and what it can't do on Samba AD.

The slapd target lacks the container (and its parent) and the attribute ``favouriteColour`` that
``[directory.create]`` writes; ``[directory.create] objectClass`` names ``mailferryRecipient``, an
auxiliary class the target doesn't know yet (prepare defines it, allowing the attribute).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, write_project
from ldap3 import BASE, Connection, Server

from mailferry.errors import ExitCode
from mailferry.sandbox.ldap_servers import Slapd

CONTAINER = "ou=Migrated,ou=People,dc=tgt,dc=test"


class ConfigSlapd(Slapd):
    """A sandbox slapd whose cn=config the root DN of the data may manage (in memory: slapd.conf
    stays as written, which is what a throw-away server needs)."""

    def _prepare(self) -> None:
        super()._prepare()
        text = self.config_path.read_text()
        config = f'database config\naccess to * by dn.exact="{self.root_dn}" manage by * none\n\n'
        self.config_path.write_text(text.replace("database        mdb", config + "database        mdb", 1))


def _toml(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _block(src: Slapd, tgt: Slapd, container: str = CONTAINER) -> str:
    os.environ["MF_PREP_SRC"] = src.root_pw
    os.environ["MF_PREP_TGT"] = tgt.root_pw
    return f"""
[directory]
target_container = "{_toml(container)}"
rules = ["smtp", "login"]
confirm_mailboxes = false

[directory.source]
url = "ldap://127.0.0.1:{src.port}"
bind_dn = "{src.root_dn}"
password = "env:MF_PREP_SRC"
dialect = "generic"
bases = ["{src.users_dn}"]

[directory.target]
url = "ldap://127.0.0.1:{tgt.port}"
bind_dn = "{tgt.root_dn}"
password = "env:MF_PREP_TGT"
dialect = "generic"
bases = ["{tgt.suffix}"]

[directory.create]
objectClass = "top person organizationalPerson inetOrgPerson mailAlternateRecipient mailferryRecipient"
favouriteColour = "blue"

[directory.lock]
employeeType = "locked"
"""


def _exists(server: Slapd, dn: str) -> bool:
    c = Connection(Server("127.0.0.1", port=server.port), server.root_dn, server.root_pw, auto_bind=True)
    ok = c.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["1.1"])
    found = bool(ok and c.response)
    c.unbind()
    return found


def _area(data: dict[str, Any]) -> dict[str, Any]:
    (area,) = [a for a in data["areas"] if a["area"] == "directory"]
    return area


def test_slapd_check_blocks_prepare_shows_then_applies_and_check_is_ready(
    slapd_factory: Any, dovecot_factory: Any, tmp_path: Path
) -> None:
    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    src.add_ldif(
        f"dn: cn=Carl Crow,{src.users_dn}\nobjectClass: inetOrgPerson\ncn: Carl Crow\nsn: Crow\nuid: carl\n"
        "mail: carl@src.test\n"
    )
    tgt = ConfigSlapd.start(tmp_path / "tgt", suffix="dc=tgt,dc=test", root_pw="tgtpw")
    try:
        imap = dovecot_factory(style="slash", users={"x": "y"})
        project = write_project(tmp_path / "p", imap, imap, ["x"], extra=_block(src, tgt))

        # check: the directory area is blocked, each check with its fix.
        r = cli("check", project, "--json")
        area = _area(r.json())
        assert area["verdict"] == "blocked", area
        blocked = {c["subject"]: c for c in area["checks"] if c["status"] == "blocked"}
        assert f"container {CONTAINER}" in blocked and "attribute" in blocked and "object class" in blocked
        assert all("directory prepare" in c["fix"] and "--apply" in c["fix"] for c in blocked.values())
        assert "favouriteColour" in blocked["attribute"]["what"]
        assert r.code == ExitCode.CONFIG, r.out + r.err

        # prepare without --apply: the LDIF, and nothing changed.
        shown = cli("directory", "prepare", project, "--json")
        assert shown.code == ExitCode.CONFIG, shown.out + shown.err
        d = shown.json()
        assert not d["applied"] and d["server"] == "openldap" and d["admin_ldif"] == ""
        assert {(s["kind"], s["by"], s["state"]) for s in d["steps"]} == {
            ("container", "mailferry", "to do"),
            ("schema", "mailferry", "to do"),
        }
        ldif = d["ldif"]
        assert "dn: ou=People,dc=tgt,dc=test" in ldif and f"dn: {CONTAINER}" in ldif
        assert ldif.index("dn: ou=People") < ldif.index(f"dn: {CONTAINER}")  # the parent first
        assert ",cn=schema,cn=config" in ldif and "olcSchemaConfig" in ldif
        assert "NAME 'favouriteColour'" in ldif and "NAME 'mailferryRecipient'" in ldif and "AUXILIARY" in ldif
        assert not _exists(tgt, "ou=People,dc=tgt,dc=test")
        human = cli("directory", "prepare", project)
        assert human.code == ExitCode.CONFIG and "--apply" in human.out and f"dn: {CONTAINER}" in human.out

        # --apply: added, looked at again, nothing left.
        done = cli("directory", "prepare", project, "--apply", "--json")
        assert done.code == ExitCode.OK, done.out + done.err
        dd = done.json()
        assert {s["state"] for s in dd["steps"]} == {"done"} and dd["remaining"] == []
        assert all(c["status"] == "ok" for c in dd["checks"]), dd["checks"]
        assert _exists(tgt, CONTAINER)
        again = cli("directory", "prepare", project, "--json")
        assert again.code == ExitCode.OK and again.json()["steps"] == [] and again.json()["ldif"] == ""

        r = cli("check", project, "--json")
        area = _area(r.json())
        assert area["verdict"] == "ready", area
        assert r.code == ExitCode.OK, r.out + r.err
        plan = cli("directory", "plan", project, "--json")
        assert [p for p in plan.json()["preconditions"] if p["ok"] is False] == []
        assert plan.code == ExitCode.OK, plan.out
        created = cli("directory", "apply", project, "--json")
        assert created.code == ExitCode.OK and created.json()["created"] == 1, created.out
    finally:
        tgt.stop()


BROKEN = {
    # item: (what the project file says differently, the blocked check's subject, words its fix must have)
    "container": ({"container": "ou=Missing,dc=tgt,dc=test"}, "container ou=Missing,dc=tgt,dc=test",
                  ["directory prepare", "--apply"]),
    "attribute": ({"colour": True}, "attribute", ["directory prepare", "--apply"]),
    "attribute, class not named": ({"colour": True, "aux": False}, "attribute",
                                   ["directory prepare", "--apply", "add mailferryRecipient to [directory.create]"]),
    "object class": ({"aux": True}, "object class", ["directory prepare", "--apply"]),
    "lock marker": ({"lock": "pwdAccountLockedTime"}, "lock marker", ["ppolicy overlay"]),
}  # fmt: skip


def _variant(src: Slapd, tgt: Slapd, container: str = "", colour: bool = False, aux: bool = False,
             lock: str = "") -> str:  # fmt: skip
    text = _block(src, tgt, container=container or tgt.users_dn)
    if not aux:
        text = text.replace(" mailferryRecipient", "")
    if not colour:
        text = text.replace('favouriteColour = "blue"\n', "")
    if lock:
        text = text.replace('employeeType = "locked"', f'{lock} = "000001010000Z"')
    return text


@pytest.mark.parametrize("item", [None, *BROKEN])
def test_each_broken_item_is_blocked_in_check_with_its_fix(
    item: str | None, slapd_factory: Any, dovecot_factory: Any, tmp_path: Path
) -> None:
    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = ConfigSlapd.start(tmp_path / "tgt", suffix="dc=tgt,dc=test", root_pw="tgtpw")
    try:
        imap = dovecot_factory(style="slash", users={"x": "y"})
        change, subject, words = BROKEN[item] if item else ({}, "", [])
        project = write_project(tmp_path / "p", imap, imap, ["x"], extra=_variant(src, tgt, **change))
        r = cli("check", project, "--json")
        area = _area(r.json())
        blocked = [c for c in area["checks"] if c["status"] == "blocked"]
        if item is None:
            assert area["verdict"] == "ready" and blocked == [], area
            assert r.code == ExitCode.OK, r.out + r.err
            return
        assert area["verdict"] == "blocked" and [c["subject"] for c in blocked] == [subject], area
        assert all(w in blocked[0]["fix"] for w in words), blocked[0]["fix"]
        assert str(project) in blocked[0]["fix"] or "--apply" not in words
        assert r.json()["verdict"] == "blocked" and r.code == ExitCode.CONFIG, r.out + r.err
    finally:
        tgt.stop()


def test_slapd_without_cn_config_and_an_overlay_lock_marker_are_the_admins(
    slapd_factory: Any, dovecot_factory: Any, tmp_path: Path
) -> None:
    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")  # cn=config not served
    imap = dovecot_factory(style="slash", users={"x": "y"})
    block = _block(src, tgt, container=tgt.users_dn).replace('employeeType = "locked"', 'pwdAccountLockedTime = "1"')
    project = write_project(tmp_path / "p", imap, imap, ["x"], extra=block)
    r = cli("directory", "prepare", project, "--apply", "--json")
    assert r.code == ExitCode.CONFIG, r.out + r.err
    d = r.json()
    by = {s["kind"]: s for s in d["steps"]}
    assert set(by) == {"schema", "lock marker"} and all(s["state"] == "admin" for s in d["steps"])
    assert "ldapmodify -Y EXTERNAL" in by["schema"]["fix"] and "olcSchemaConfig" in d["admin_ldif"]
    assert "ppolicy" in by["lock marker"]["fix"]
    assert d["ldif"] == ""  # nothing mailferry could add itself

    area = _area(cli("check", project, "--json").json())
    lock = [c for c in area["checks"] if c["subject"] == "lock marker"]
    assert lock and lock[0]["status"] == "blocked" and "ppolicy" in lock[0]["fix"]


def test_a_refusal_is_reported_and_nothing_else_is_claimed(slapd_factory: Any, dovecot_factory: Any,
                                                          tmp_path: Path) -> None:  # fmt: skip
    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    # A bind account that may read but not write (slapd: access to * by * read).
    tgt.add_ldif(f"dn: cn=reader,{tgt.suffix}\nobjectClass: person\ncn: reader\nsn: reader\nuserPassword: readerpw\n")
    imap = dovecot_factory(style="slash", users={"x": "y"})
    block = _variant(src, tgt, container="ou=Sales\\, EMEA,dc=tgt,dc=test").replace(
        f'bind_dn = "{tgt.root_dn}"\npassword = "env:MF_PREP_TGT"',
        f'bind_dn = "cn=reader,{tgt.suffix}"\npassword = "env:MF_PREP_RDR"',
    )
    os.environ["MF_PREP_RDR"] = "readerpw"
    project = write_project(tmp_path / "p", imap, imap, ["x"], extra=block)
    r = cli("directory", "prepare", project, "--apply", "--json")
    assert r.code == ExitCode.CONFIG, r.out + r.err
    (step,) = r.json()["steps"]
    assert (step["kind"], step["state"]) == ("container", "refused") and "insufficientAccessRights" in step["message"]
    assert "ou: Sales, EMEA" in step["ldif"]  # the escaped comma is the value's own
    assert [x["kind"] for x in r.json()["remaining"]] == ["container"]
    assert not _exists(tgt, "ou=Sales\\, EMEA,dc=tgt,dc=test")


def test_samba_ad_schema_extension_is_shown_for_the_schema_admin(
    samba_factory: Any, dovecot_factory: Any, tmp_path: Path
) -> None:
    from ldap_fixtures import SAMBA_TGT

    tgt = samba_factory(**SAMBA_TGT)
    container = f"OU=Migrated,{tgt.base_dn}"
    os.environ["MF_PREP_AD"] = tgt.admin_password
    block = f"""
[directory]
target_container = "{container}"
rules = ["sid", "x500", "smtp", "login"]

[directory.source]
url = "ldap://{tgt.ip}"
bind_dn = "{tgt.admin_dn}"
password = "env:MF_PREP_AD"

[directory.target]
url = "ldap://{tgt.ip}"
bind_dn = "{tgt.admin_dn}"
password = "env:MF_PREP_AD"

[directory.mail_attributes]
mailferryFavouriteColour = "blue"
"""
    imap = dovecot_factory(style="slash", users={"x": "y"})
    project = write_project(tmp_path / "p", imap, imap, ["x"], extra=block)
    r = cli("directory", "prepare", project, "--apply", "--json")
    assert r.code == ExitCode.CONFIG, r.out + r.err
    d = r.json()
    assert d["server"] == "ad"
    by = {s["kind"]: s for s in d["steps"]}
    assert by["container"]["state"] == "done"  # the administrator may create an OU: mailferry did
    schema = by["schema"]
    assert schema["by"] == "admin" and schema["state"] == "admin"
    assert "Schema Admins" in schema["fix"] and "schema master" in schema["fix"] and "ldbmodify" in schema["fix"]
    assert "attributeSchema" in d["admin_ldif"] and "lDAPDisplayName: mailferryFavouriteColour" in d["admin_ldif"]
    assert "CN=Mail-Recipient,CN=Schema,CN=Configuration," in d["admin_ldif"]
    assert [x["kind"] for x in d["remaining"]] == ["schema"]
    c = Connection(Server(tgt.ip, port=389), tgt.admin_dn, tgt.admin_password, auto_bind=True)
    assert c.search(container, "(objectClass=organizationalUnit)", search_scope=BASE, attributes=["1.1"])
    c.search(f"CN=Schema,CN=Configuration,{tgt.base_dn}", "(lDAPDisplayName=mailferryFavouriteColour)")
    assert c.response == [] or all(e.get("type") != "searchResEntry" for e in c.response)  # no schema change
    c.unbind()

    # The LDIF is what a Schema Admin can apply as it is (this throw-away DC allows schema updates).
    tgt.modify_ldif(d["admin_ldif"])
    after = cli("directory", "prepare", project, "--json")
    assert after.code == ExitCode.OK and after.json()["steps"] == [], after.out
    assert all(x["status"] == "ok" for x in after.json()["checks"]), after.json()["checks"]

    # A plain domain user as the bind account: it may create nothing, and can't give itself the right.
    import time

    from test_directory_ad import _can_bind
    from test_directory_ad_rules import _admin, _enable

    reader = f"CN=Reader,CN=Users,{tgt.base_dn}"
    a = _admin(tgt)
    a.add(reader, ["user"], {"sAMAccountName": "reader"})
    a.unbind()
    _enable(tgt, reader, "Passw0rd!Rdr")
    deadline = time.monotonic() + 10
    while not _can_bind(tgt, reader, "Passw0rd!Rdr") and time.monotonic() < deadline:
        time.sleep(0.2)
    os.environ["MF_PREP_RDR"] = "Passw0rd!Rdr"
    limited = block.replace(
        f'[directory.target]\nurl = "ldap://{tgt.ip}"\nbind_dn = "{tgt.admin_dn}"\npassword = "env:MF_PREP_AD"',
        f'[directory.target]\nurl = "ldap://{tgt.ip}"\nbind_dn = "{reader}"\npassword = "env:MF_PREP_RDR"',
    )
    assert limited != block
    project = write_project(tmp_path / "reader", imap, imap, ["x"], extra=limited)
    r = cli("check", project, "--json")
    area = _area(r.json())
    (rights,) = [c for c in area["checks"] if c["status"] == "blocked"]
    assert rights["subject"] == f"rights {container}" and "may not create user entries" in rights["what"]
    assert "Delegate Control" in rights["fix"] and reader in rights["fix"]
    assert r.code == ExitCode.CONFIG, r.out + r.err
    other = write_project(tmp_path / "other", imap, imap, ["x"],
                          extra=limited.replace(container, f"OU=Other,{tgt.base_dn}"))  # fmt: skip
    p = cli("directory", "prepare", other, "--apply", "--json")
    assert p.code == ExitCode.CONFIG, p.out + p.err
    (step,) = p.json()["steps"]
    assert (step["kind"], step["by"], step["state"]) == ("container", "admin", "admin")
    assert "may not create organizationalUnit entries" in step["what"] and "OU=Other" in step["ldif"]
