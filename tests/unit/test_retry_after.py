"""``Retry-After`` as a throttling DAV server sends it (RFC 9110 10.2.3)."""

from __future__ import annotations

from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from mailferry.connectors.dav import retry_after_seconds

NOW = 1_800_000_000.0


@given(st.integers(min_value=0, max_value=10**9))
def test_delay_seconds_are_taken_as_they_are(n: int) -> None:
    assert retry_after_seconds(str(n), NOW) == float(n)
    assert retry_after_seconds(f"  {n} ", NOW) == float(n)


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_an_http_date_is_the_time_until_it_and_never_negative(delta: int) -> None:
    got = retry_after_seconds(formatdate(NOW + delta, usegmt=True), NOW)
    assert got == max(0.0, float(delta))


def test_absent_or_unreadable_is_none() -> None:
    for value in (None, "", "   ", "soon", "-5", "1.5", "Mon, 99 Foo 2026 25:00:00 GMT"):
        assert retry_after_seconds(value, NOW) is None, value
