"""The cut-over judge (verify.cutover) on raw items, scripts and ledger facts."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from mailferry.verify.cutover import dav_item_checks, progress_checks, sieve_addresses, sieve_checks


def moved(a: str) -> str | None:
    local, _, domain = a.lower().rpartition("@")
    return f"{local}@new.test" if domain == "old.test" else None


def test_an_item_linking_to_the_old_host_and_naming_old_addresses() -> None:
    item = (
        b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nURL:https://MAIL.old.test:8443/room\r\n"
        b"ATTACH:webcal://mail.old.t\r\n est/feed.ics\r\nORGANIZER:mailto:ann@old.test\r\n"
        b"ATTENDEE:mailto:guest@partner.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    checks = dav_item_checks("ann", "Work", "calendar", "/ann/Work/x.ics", item, {"mail.old.test"}, moved)
    assert [c.facts.get("hosts") or c.facts.get("addresses") for c in checks] == [["mail.old.test"], ["ann@old.test"]]
    assert all(c.status == "blocked" and c.area == "data" and c.account == "ann" for c in checks)


def test_a_vcard_email_at_an_old_address() -> None:
    card = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Bob\r\nitem1.EMAIL;TYPE=work:bob@old.test\r\nEND:VCARD\r\n"
    [c] = dav_item_checks("ann", "Contacts", "addressbook", "/ann/Contacts/b.vcf", card, set(), moved)
    assert c.subject == "contact Contacts/b.vcf" and "bob@new.test" in c.what


def test_sieve_redirects_and_vacation_addresses_are_read_without_comments() -> None:
    script = (
        b'require ["vacation"];\n# redirect "old@old.test";\n/* redirect "x@old.test"; */\n'
        b'if true { redirect :copy "bob@old.test"; }\n'
        b'vacation :days 3 :addresses ["ann@old.test", "ann@new.test"] :from "ann@old.test" "away";\n'
    )
    assert sieve_addresses(script) == (["bob@old.test"], ["ann@old.test", "ann@new.test", "ann@old.test"])
    checks = sieve_checks("ann", {"main": script, "spare": b'redirect "bob@old.test";'}, "main", moved)
    by = {(c.subject, c.status) for c in checks}
    assert ("filter main", "blocked") in by and ("filter spare", "warning") in by


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0.01, max_value=100))
def test_a_pass_is_stale_exactly_when_older_than_the_window(age_hours: float, window: float) -> None:
    from datetime import timedelta

    last = (NOW - timedelta(hours=age_hours)).isoformat()
    checks = progress_checks(
        [("ann", last)], now=NOW, window_hours=window, findings={}, acknowledged={}, outstanding={}, changed={}
    )
    stale = [c for c in checks if c.subject == "last pass"]
    assert bool(stale) == (age_hours > window)
    assert all(c.status == "blocked" and c.fix for c in stale)
    assert (checks[0].status == "ok") == (not stale)


def test_acknowledged_findings_are_not_counted() -> None:
    findings = {"ann": [{"kind": "refused", "folder": "INBOX", "message": "m", "run": 3, "uid": 1}]}
    args = {"now": NOW, "window_hours": 24.0, "outstanding": {}, "changed": {}, "findings": findings}
    [c] = progress_checks([("ann", NOW.isoformat())], acknowledged={}, **args)  # type: ignore[arg-type]
    assert c.status == "warning" and "--kind refused" in c.fix
    [ok] = progress_checks([("ann", NOW.isoformat())], acknowledged={"ann": {"refused"}}, **args)  # type: ignore[arg-type]
    assert ok.status == "ok"
