"""The DNS judge (verify.names) on tables of answers: what is blocked, what is a warning, and
that a source-side name is told from a target-side one by name, CNAME and address."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from mailferry.model.readiness import Answer, Check, exit_code
from mailferry.verify.names import Names, cutover, reach, readiness

D = "new.test"
ZONE = {
    ("mail.new.test", "A"): ("127.0.0.1",),
    ("mail.old.test", "A"): ("192.0.2.9",),
    (D, "MX"): ("10 mail.new.test",),
    (f"_imaps._tcp.{D}", "SRV"): ("0 1 993 mail.new.test",),
    (f"_submission._tcp.{D}", "SRV"): ("0 1 587 mail.new.test",),
    (f"autoconfig.{D}", "CNAME"): ("mail.new.test",),
    (f"autoconfig.{D}", "A"): ("127.0.0.1",),
    (f"autodiscover.{D}", "CNAME"): ("mail.new.test",),
    (f"autodiscover.{D}", "A"): ("127.0.0.1",),
    (D, "TXT"): ("v=spf1 mx -all",),
    (f"_dmarc.{D}", "TXT"): ("v=DMARC1; p=none",),
    (f"s1._domainkey.{D}", "TXT"): ("v=DKIM1; p=abc",),
}
NAMES = Names((D,), frozenset({"mail.new.test"}), frozenset({"mail.old.test"}), ("s1",))


def lookup_in(zone: dict[tuple[str, str], tuple[str, ...]]):  # type: ignore[no-untyped-def]
    def lookup(name: str, rtype: str) -> Answer:
        if (name, rtype) in zone:
            return Answer(name, rtype, "ok", zone[(name, rtype)])
        known = any(n == name for n, _ in zone)
        return Answer(name, rtype, "nodata" if known else "nxdomain")

    return lookup


def test_a_complete_zone_is_all_ok() -> None:
    checks = readiness(NAMES, lookup_in(ZONE))
    assert checks and all(c.status == "ok" for c in checks), [c for c in checks if c.status != "ok"]
    assert cutover(NAMES, lookup_in(ZONE)) and all(c.status == "ok" for c in cutover(NAMES, lookup_in(ZONE)))


def test_an_mx_by_another_name_at_the_sources_address_is_at_the_source() -> None:
    zone = dict(ZONE)
    zone[(D, "MX")] = ("10 mx1.new.test",)
    zone[("mx1.new.test", "A")] = ("192.0.2.9",)
    [mx] = [c for c in cutover(NAMES, lookup_in(zone)) if c.subject == f"MX {D}"]
    assert mx.status == "blocked" and mx.area == "dns" and "mx1.new.test" in mx.what


def test_a_dns_error_is_a_temporary_failure() -> None:
    def broken(name: str, rtype: str) -> Answer:
        return Answer(name, rtype, "error", error="127.0.0.1:1 did not answer in time")

    checks = readiness(NAMES, broken)
    assert checks and all(c.status == "blocked" and c.exit_code == 75 for c in checks)


OPTIONAL = sorted({k[0] for k in ZONE if k[1] in ("SRV", "TXT") or k[0].startswith("auto")} - {D})


@given(st.sets(st.sampled_from(OPTIONAL)))
def test_missing_optional_records_are_warnings_never_blockers(gone: set[str]) -> None:
    zone = {k: v for k, v in ZONE.items() if k[0] not in gone}
    checks = readiness(NAMES, lookup_in(zone))
    assert not [c for c in checks if c.status == "blocked"]
    assert all(c.fix for c in checks if c.status != "ok")
    # Each missing record is named once, with the record to add.
    warned = {c.subject for c in checks if c.status == "warning"}
    assert len(warned) <= len(gone)
    assert (len(warned) == 0) == (len(gone) == 0)


def _srv_check(names: Names, zone: dict[tuple[str, str], tuple[str, ...]], label: str) -> Check:
    return next(c for c in readiness(names, lookup_in(zone)) if c.subject == f"SRV {label}.{D}")


def test_an_srv_port_other_than_the_target_servers_is_a_warning_with_the_right_record() -> None:
    names = replace(NAMES, ports={"_imaps._tcp": ("mail.new.test", 9993)})
    c = _srv_check(names, ZONE, "_imaps._tcp")
    assert c.status == "warning" and "port 993" in c.what and "port 9993" in c.what
    assert c.fix == f"change it to _imaps._tcp.{D}. IN SRV 0 1 9993 mail.new.test."


def test_an_srv_port_is_compared_when_the_project_reaches_the_target_by_its_address() -> None:
    by_address = replace(NAMES, ports={"_submission._tcp": ("127.0.0.1", 1587)})
    c = _srv_check(by_address, ZONE, "_submission._tcp")
    assert c.status == "warning" and "0 1 1587 mail.new.test." in c.fix
    elsewhere = replace(NAMES, ports={"_submission._tcp": ("192.0.2.77", 1587)})  # another machine: not comparable
    assert _srv_check(elsewhere, ZONE, "_submission._tcp").status == "ok"


def test_a_matching_srv_port_or_an_unknown_service_is_ok() -> None:
    same = replace(NAMES, ports={"_imaps._tcp": ("mail.new.test", 993), "_submission._tcp": ("mail.new.test", 587)})
    assert _srv_check(same, ZONE, "_imaps._tcp").status == "ok"
    assert _srv_check(same, ZONE, "_submission._tcp").status == "ok"
    # The project reaches IMAP with STARTTLS (_imap._tcp): the _imaps._tcp record is not its to judge.
    other = replace(NAMES, ports={"_imap._tcp": ("mail.new.test", 143)})
    assert _srv_check(other, ZONE, "_imaps._tcp").status == "ok"


def test_an_unreachable_target_is_blocked_with_exit_75_and_a_slow_one_is_a_warning() -> None:
    down = reach("target", "IMAP", "127.0.0.1", 1993, None, "Connection refused")
    assert down.status == "blocked" and down.exit_code == 75 and down.area == "network"
    assert "Connection refused" in down.what and "127.0.0.1:1993" in down.fix
    assert exit_code([down]) == 75
    slow = reach("source", "DAV", "dav.old.test", 443, 1200.0)
    assert slow.status == "warning" and "1200 ms" in slow.what and slow.fix
    fine = reach("target", "LDAP", "ldap.new.test", 389, 3.2)
    assert fine.status == "ok" and fine.facts == {"rtt_ms": 3.2}


@given(st.floats(min_value=0, max_value=60_000, allow_nan=False), st.floats(min_value=1, max_value=10_000))
def test_a_reachable_server_is_ok_up_to_the_threshold_and_a_warning_above(rtt: float, slow: float) -> None:
    c = reach("target", "IMAP", "h", 1, rtt, slow_ms=slow)
    assert c.status == ("ok" if rtt <= slow else "warning")
    assert c.exit_code == 0 and c.facts["rtt_ms"] == rtt


def test_a_target_name_that_is_an_alias_of_a_source_name_blocks_the_cutover() -> None:
    zone = {k: v for k, v in ZONE.items() if k != ("mail.new.test", "A")}
    zone[("mail.new.test", "CNAME")] = ("hop.new.test",)
    zone[("hop.new.test", "CNAME")] = ("mail.old.test",)
    [c] = [c for c in cutover(NAMES, lookup_in(zone)) if c.subject == "CNAME mail.new.test"]
    assert c.status == "blocked" and c.area == "dns" and "mail.old.test" in c.what
    assert "delete the CNAME and add mail.new.test. IN A" in c.fix
    [w] = [c for c in readiness(NAMES, lookup_in(zone)) if c.subject == "CNAME mail.new.test"]
    assert w.status == "warning" and w.fix.startswith("at cut-over, ")
    # Fixed: a plain address again, no alias check left that is not ok.
    assert [c.status for c in cutover(NAMES, lookup_in(ZONE)) if c.subject == "CNAME mail.new.test"] == ["ok"]


def test_an_alias_loop_does_not_hang() -> None:
    zone = dict(ZONE)
    zone[("mail.new.test", "CNAME")] = ("a.new.test",)
    zone[("a.new.test", "CNAME")] = ("mail.new.test",)
    assert all(c.status == "ok" for c in cutover(NAMES, lookup_in(zone)) if c.subject == "CNAME mail.new.test")


DAV_ZONE = {
    **ZONE,
    (f"_caldavs._tcp.{D}", "SRV"): ("0 1 443 mail.new.test",),
    (f"_caldavs._tcp.{D}", "TXT"): ("path=/dav/",),
    (f"_carddavs._tcp.{D}", "SRV"): ("0 1 443 mail.new.test",),
    (f"_carddavs._tcp.{D}", "TXT"): ("path=/dav/",),
}
DAV_NAMES = replace(NAMES, dav=True, dav_path="/dav/")


def test_dav_srv_records_with_their_path_are_ok_and_say_the_path() -> None:
    checks = readiness(DAV_NAMES, lookup_in(DAV_ZONE))
    assert all(c.status == "ok" for c in checks), [c for c in checks if c.status != "ok"]
    [cal] = [c for c in checks if c.subject == f"SRV _caldavs._tcp.{D}"]
    assert cal.facts["path"] == "/dav/"


def test_a_dav_srv_record_without_its_txt_path_is_a_warning_naming_the_path() -> None:
    zone = {k: v for k, v in DAV_ZONE.items() if k != (f"_carddavs._tcp.{D}", "TXT")}
    bad = [c for c in readiness(DAV_NAMES, lookup_in(zone)) if c.status != "ok"]
    assert [(c.subject, c.status) for c in bad] == [(f"TXT _carddavs._tcp.{D}", "warning")]
    assert bad[0].fix == f'add _carddavs._tcp.{D}. IN TXT "path=/dav/"'
    # The cut-over doesn't care how clients find the path, only whether they reach the source.
    assert all(c.status == "ok" for c in cutover(DAV_NAMES, lookup_in(zone)))


def test_without_dav_items_no_dav_srv_is_asked_for() -> None:
    assert not [c for c in readiness(NAMES, lookup_in(ZONE)) if "dav" in c.subject]
    missing = [c for c in readiness(DAV_NAMES, lookup_in(ZONE)) if c.status != "ok"]
    assert {c.subject for c in missing} == {f"SRV _caldavs._tcp.{D}", f"SRV _carddavs._tcp.{D}"}
    assert all("IN SRV 0 1 443 mail.new.test." in c.fix for c in missing)


#: each record that can lead clients somewhere -> (its subject in the report, the value at the source)
MOVABLE = {
    (D, "MX"): (f"MX {D}", "10 mail.old.test"),
    (f"_imaps._tcp.{D}", "SRV"): (f"SRV _imaps._tcp.{D}", "0 1 993 mail.old.test"),
    (f"_submission._tcp.{D}", "SRV"): (f"SRV _submission._tcp.{D}", "0 1 587 mail.old.test"),
    (f"autoconfig.{D}", "CNAME"): (f"autoconfig autoconfig.{D}", "mail.old.test"),
    (f"autodiscover.{D}", "CNAME"): (f"autodiscover autodiscover.{D}", "mail.old.test"),
}


@given(st.sets(st.sampled_from(sorted(MOVABLE))))
def test_cutover_blocks_exactly_the_records_still_at_the_source(moved: set[tuple[str, str]]) -> None:
    zone = dict(ZONE)
    for key in moved:
        zone[key] = (MOVABLE[key][1],)
        if key[1] == "CNAME":  # the alias now resolves to the old machine's address
            zone[(key[0], "A")] = ("192.0.2.9",)
    checks = cutover(NAMES, lookup_in(zone))
    assert {c.subject for c in checks if c.status == "blocked"} == {MOVABLE[k][0] for k in moved}
    assert all(c.area == "dns" and "mail.new.test" in c.fix for c in checks if c.status == "blocked")
    # Before the cut-over the same records are warnings, never blockers.
    early = readiness(NAMES, lookup_in(zone))
    assert {c.subject for c in early if c.status != "ok"} == {MOVABLE[k][0] for k in moved}
    assert all(c.status == "warning" and c.fix.startswith("at cut-over") for c in early if c.status != "ok")


def test_submissions_over_implicit_tls_counts_for_submission() -> None:
    zone = {k: v for k, v in ZONE.items() if k != (f"_submission._tcp.{D}", "SRV")}
    zone[(f"_submissions._tcp.{D}", "SRV")] = ("0 1 465 mail.new.test",)
    names = replace(NAMES, ports={"_submissions._tcp": ("mail.new.test", 465)})
    c = _srv_check(names, zone, "_submission._tcp")
    assert c.status == "ok" and c.facts["records"] == ["0 1 465 mail.new.test"]
    wrong = replace(NAMES, ports={"_submissions._tcp": ("mail.new.test", 4465)})
    assert "IN SRV 0 1 4465 mail.new.test." in _srv_check(wrong, zone, "_submission._tcp").fix
