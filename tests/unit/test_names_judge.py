"""The DNS judge (verify.names) on tables of answers: what is blocked, what is a warning, and
that a source-side name is told from a target-side one by name, CNAME and address."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailferry.model.readiness import Answer
from mailferry.verify.names import Names, cutover, readiness

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
