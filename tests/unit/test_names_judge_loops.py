"""The DNS judge (verify.names) on broken zones that must not crash it: an alias loop, and a
resolver that fails only for the DMARC or DKIM name (a failure is not an absence)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_names_judge import NAMES, ZONE  # the same complete zone

from mailferry.model.readiness import Answer
from mailferry.verify.names import cutover, readiness

D = "new.test"


def lookup_in(zone: dict[tuple[str, str], tuple[str, ...]], failing: frozenset[str] = frozenset()):  # type: ignore[no-untyped-def]
    def lookup(name: str, rtype: str) -> Answer:
        if name in failing:
            return Answer(name, rtype, "error", error="127.0.0.1:1 did not answer in time")
        if (name, rtype) in zone:
            return Answer(name, rtype, "ok", zone[(name, rtype)])
        known = any(n == name for n, _ in zone)
        return Answer(name, rtype, "nodata" if known else "nxdomain")

    return lookup


@given(st.integers(min_value=1, max_value=6))
def test_an_alias_loop_in_the_mx_is_judged_not_a_crash(length: int) -> None:
    """An MX host whose CNAMEs loop back to themselves (a resolver answers a CNAME query record by
    record, so the loop reaches the judge) is neither side's: check warns, the cut-over passes it."""
    zone = dict(ZONE)
    hops = [f"h{i}.new.test" for i in range(length)]
    zone[(D, "MX")] = (f"10 {hops[0]}",)
    for i, h in enumerate(hops):
        zone[(h, "CNAME")] = (hops[(i + 1) % length] + ".",)
    [mx] = [c for c in readiness(NAMES, lookup_in(zone)) if c.subject == f"MX {D}"]
    assert mx.status == "warning" and hops[0] in mx.what
    [mx] = [c for c in cutover(NAMES, lookup_in(zone)) if c.subject == f"MX {D}"]
    assert mx.status == "ok"


def test_an_alias_chain_that_ends_at_the_source_is_still_found() -> None:
    zone = dict(ZONE)
    zone[(D, "MX")] = ("10 a.new.test",)
    zone[("a.new.test", "CNAME")] = ("b.new.test.",)
    zone[("b.new.test", "CNAME")] = ("mail.old.test.",)
    [mx] = [c for c in cutover(NAMES, lookup_in(zone)) if c.subject == f"MX {D}"]
    assert mx.status == "blocked" and "a.new.test" in mx.what


def test_a_failing_dmarc_lookup_is_a_temporary_failure_not_a_missing_record() -> None:
    checks = readiness(NAMES, lookup_in(ZONE, frozenset({f"_dmarc.{D}"})))
    [failed] = [c for c in checks if c.subject == f"TXT _dmarc.{D}"]
    assert failed.status == "blocked" and failed.exit_code == 75 and "resolver" in failed.fix
    assert not [c for c in checks if c.subject == f"DMARC {D}"]


def test_a_failing_dkim_lookup_is_a_temporary_failure_not_a_missing_key() -> None:
    name = f"s1._domainkey.{D}"
    checks = readiness(NAMES, lookup_in(ZONE, frozenset({name})))
    [failed] = [c for c in checks if c.subject == f"TXT {name}"]
    assert failed.status == "blocked" and failed.exit_code == 75
    assert not [c for c in checks if c.subject == f"DKIM {name}"]
