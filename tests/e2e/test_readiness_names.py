"""End to end against a real DNS server (dnsmasq) and real Dovecot servers: ``mailferry check``
judges the mail domain's names (area ``names``) and reaches every server (area ``network``);
``cutover check``'s DNS area names what still leads to the old server.

A good zone says ready; each broken item, introduced one at a time, is reported with its area,
status, fix and the exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import cli, write_project

from mailferry.config.load import load_project
from mailferry.engine.names import cutover_dns_checks
from mailferry.engine.readiness import Context
from mailferry.errors import ExitCode
from mailferry.sandbox.servers import free_port

D = "new.test"
GOOD = [
    ("mail.new.test", "A", "127.0.0.1"),
    ("mail.old.test", "A", "127.0.0.3"),
    (D, "MX", "10 mail.new.test"),
    (f"_imaps._tcp.{D}", "SRV", "0 1 993 mail.new.test"),
    (f"_submission._tcp.{D}", "SRV", "0 1 587 mail.new.test"),
    (f"autoconfig.{D}", "CNAME", "mail.new.test"),
    (f"autodiscover.{D}", "CNAME", "mail.new.test"),
    (D, "TXT", "v=spf1 mx -all"),
    (f"_dmarc.{D}", "TXT", "v=DMARC1; p=none"),
    (f"mail._domainkey.{D}", "TXT", "v=DKIM1; k=rsa; p=MIIBIjANBg"),
]


def without(name: str, rtype: str) -> list[tuple[str, str, str]]:
    return [r for r in GOOD if (r[0], r[1]) != (name, rtype)]


def replaced(name: str, rtype: str, value: str) -> list[tuple[str, str, str]]:
    return [*without(name, rtype), (name, rtype, value)]


@pytest.fixture(scope="module")
def org(dovecot_factory: Any, dns_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    src = dovecot_factory(style="slash")
    tgt = dovecot_factory(style="slash")
    dns = dns_factory(GOOD, ["new.test", "old.test"])
    return {"src": src, "tgt": tgt, "dns": dns, "tmp": tmp_path_factory.mktemp("names")}


def project(org: dict[str, Any], name: str, *, target_port: int | None = None) -> Path:
    extra = (
        "\n[organization]\n"
        f'domains = ["{D}"]\nresolver = "{org["dns"].address}"\n'
        'source_names = ["mail.old.test"]\ntarget_names = ["mail.new.test"]\ndkim_selectors = ["mail"]\n'
    )
    return write_project(org["tmp"] / name, org["src"], org["tgt"], ["alice"], extra=extra, target_port=target_port)


def area(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in data["areas"] if a["area"] == name)


def check_of(data: dict[str, Any], area_name: str, subject: str) -> dict[str, Any]:
    return next(c for c in area(data, area_name)["checks"] if c["subject"] == subject)


def test_a_good_zone_says_ready(org: dict[str, Any]) -> None:
    org["dns"].set_records(GOOD)
    r = cli("check", project(org, "good"), "--json")
    data = r.json()
    assert area(data, "names")["verdict"] == "ready", area(data, "names")
    assert area(data, "network")["verdict"] == "ready"
    assert check_of(data, "names", f"MX {D}")["what"] == f"mail to {D} goes to mail.new.test"
    assert check_of(data, "names", "A/AAAA mail.new.test")["facts"]["addresses"] == ["127.0.0.1"]
    assert all(c["facts"]["rtt_ms"] >= 0 for c in area(data, "network")["checks"])
    assert data["verdict"] == "ready" and r.code == 0, r.out


# (records, subject, status, words in what, words in fix, exit code)
BROKEN = {
    "no MX": (without(D, "MX"), f"MX {D}", "blocked", "no MX record", f"{D}. IN MX 10 mail.new.test.", 1),
    "MX still at the source": (
        replaced(D, "MX", "10 mail.old.test"),
        f"MX {D}",
        "warning",
        "still leads to the source (mail.old.test)",
        "at cut-over, replace it by",
        0,
    ),
    "MX at an address of the source": (
        [*replaced(D, "MX", "10 relay.new.test"), ("relay.new.test", "A", "127.0.0.3")],
        f"MX {D}",
        "warning",
        "still leads to the source (relay.new.test)",
        "replace it by",
        0,
    ),
    "no IMAP SRV": (
        without(f"_imaps._tcp.{D}", "SRV"),
        f"SRV _imaps._tcp.{D}",
        "warning",
        "no _imaps._tcp record",
        f"_imaps._tcp.{D}. IN SRV 0 1 993 mail.new.test.",
        0,
    ),
    "IMAP SRV at another port than the target's": (
        [*without(f"_imaps._tcp.{D}", "SRV"), (f"_imap._tcp.{D}", "SRV", "0 1 143 mail.new.test")],
        f"SRV _imaps._tcp.{D}",
        "warning",
        "sends clients to port 143",
        f"change it to _imap._tcp.{D}. IN SRV 0 1 ",
        0,
    ),
    "no DMARC": (without(f"_dmarc.{D}", "TXT"), f"DMARC {D}", "warning", "no DMARC record", "v=DMARC1", 0),
    "no SPF": (without(D, "TXT"), f"SPF {D}", "warning", "no SPF record", "v=spf1", 0),
    "no DKIM key": (
        without(f"mail._domainkey.{D}", "TXT"),
        f"DKIM mail._domainkey.{D}",
        "warning",
        "no DKIM key",
        "v=DKIM1",
        0,
    ),
    "no autoconfig": (
        without(f"autoconfig.{D}", "CNAME"),
        f"autoconfig autoconfig.{D}",
        "warning",
        "does not resolve",
        f"autoconfig.{D}. IN CNAME mail.new.test.",
        0,
    ),
    "the target's name does not resolve": (
        without("mail.new.test", "A"),
        "A/AAAA mail.new.test",
        "blocked",
        "does not resolve",
        "add mail.new.test. IN A",
        1,
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_name_is_reported_with_its_fix(org: dict[str, Any], case: str) -> None:
    records, subject, status, what, fix, code = BROKEN[case]
    org["dns"].set_records(records)
    try:
        r = cli("check", project(org, case.replace(" ", "_")), "--json")
        data = r.json()
        c = check_of(data, "names", subject)
        assert c["status"] == status and what in c["what"] and fix in c["fix"], c
        others = [x for x in area(data, "names")["checks"] if x["subject"] != subject and x["status"] != "ok"]
        assert others == [], others  # only the planted item is reported
        want = {"blocked": "blocked", "warning": "ready with warnings"}[status]
        assert area(data, "names")["verdict"] == want and data["verdict"] == want
        assert r.code == code, r.out
        if status == "warning":
            assert cli("check", project(org, case.replace(" ", "_") + "_s"), "--strict").code == ExitCode.FINDINGS
    finally:
        org["dns"].set_records(GOOD)


def test_a_dns_server_that_does_not_answer_is_a_temporary_failure(org: dict[str, Any]) -> None:
    p = project(org, "nodns")
    p.write_text(p.read_text().replace(org["dns"].address, f"127.0.0.1:{free_port()}"))
    r = cli("check", p, "--json")
    c = check_of(r.json(), "names", f"MX {D}")
    assert c["status"] == "blocked" and "did not answer" in c["what"] and "resolver" in c["fix"]
    assert r.code == ExitCode.TEMPFAIL


def test_an_unreachable_target_is_blocked_with_exit_75(org: dict[str, Any]) -> None:
    port = free_port()  # nothing listens there
    r = cli("check", project(org, "down", target_port=port), "--json")
    c = check_of(r.json(), "network", f"target IMAP 127.0.0.1:{port}")
    assert c["status"] == "blocked" and "can't be reached" in c["what"] and f"127.0.0.1:{port}" in c["fix"]
    assert area(r.json(), "network")["verdict"] == "blocked" and r.code == ExitCode.TEMPFAIL


def test_cutover_dns_names_what_still_leads_to_the_source(org: dict[str, Any]) -> None:
    old = [
        *replaced(D, "MX", "10 mail.old.test"),
        (f"_submission._tcp.{D}", "SRV", "0 1 587 mail.old.test"),
        (f"autodiscover.{D}", "CNAME", "mail.old.test"),
    ]
    old = [r for r in old if not (r[0] == f"_submission._tcp.{D}" and r[2].endswith("new.test"))]
    old = [r for r in old if not (r[0] == f"autodiscover.{D}" and r[2].endswith("new.test"))]
    org["dns"].set_records(old)
    try:
        proj = load_project(project(org, "cutover"))
        checks = cutover_dns_checks(proj, proj.accounts, Context())
        blocked = {c.subject: c for c in checks if c.status == "blocked"}
        assert set(blocked) == {f"MX {D}", f"SRV _submission._tcp.{D}", f"autodiscover autodiscover.{D}"}
        assert all(c.area == "dns" and "mail.new.test" in c.fix for c in blocked.values())
        assert "lost to users once it is switched off" in blocked[f"MX {D}"].what
        org["dns"].set_records(GOOD)
        assert [c for c in cutover_dns_checks(proj, proj.accounts, Context()) if c.status != "ok"] == []
    finally:
        org["dns"].set_records(GOOD)


def test_cutover_dns_names_a_target_name_that_is_still_an_alias_of_the_source(org: dict[str, Any]) -> None:
    org["dns"].set_records([*without("mail.new.test", "A"), ("mail.new.test", "CNAME", "mail.old.test")])
    try:
        proj = load_project(project(org, "alias"))
        checks = cutover_dns_checks(proj, proj.accounts, Context())
        blocked = [c for c in checks if c.status == "blocked"]
        assert [c.subject for c in blocked] == ["CNAME mail.new.test"], blocked
        assert blocked[0].area == "dns" and "mail.old.test" in blocked[0].what
        assert "delete the CNAME and add mail.new.test. IN A" in blocked[0].fix
        r = cli("check", project(org, "alias_check"), "--json")
        c = check_of(r.json(), "names", "CNAME mail.new.test")
        assert c["status"] == "warning" and c["fix"].startswith("at cut-over, ") and r.code == 0
    finally:
        org["dns"].set_records(GOOD)
