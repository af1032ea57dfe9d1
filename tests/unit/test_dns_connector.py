"""connectors.dns against a DNS server that never answers (a bound UDP socket nobody reads):
the first question times out, the later ones fail at once with the same error."""

from __future__ import annotations

import socket
import time

from mailferry.connectors.dns import Resolver


def test_a_silent_resolver_costs_one_timeout_not_one_per_question() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        r = Resolver(("127.0.0.1", silent.getsockname()[1]), timeout=0.5)
        start = time.monotonic()
        first = r.query("new.test", "MX")
        assert first.status == "error" and "did not answer in time" in first.error
        assert time.monotonic() - start >= 0.4
        start = time.monotonic()
        later = [r.query(f"x{i}.new.test", "A") for i in range(20)]
        assert time.monotonic() - start < 0.2
        assert {(a.status, a.error) for a in later} == {("error", first.error)}
