"""connectors.dns.Resolver on a machine without a usable resolver configuration: every question
is answered as a failure (which the names judge reports as a temporary failure, exit 75) instead
of check crashing with dnspython's exception."""

from __future__ import annotations

from typing import Any

import dns.resolver
import pytest

from mailferry.connectors.dns import Resolver
from mailferry.verify.names import Names, readiness


def test_no_resolv_conf_is_a_failure_answer_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_conf(self: Any, f: Any) -> None:
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.resolver.Resolver, "read_resolv_conf", no_conf)
    r = Resolver(None, timeout=0.5)
    a = r.query("example.test", "MX")
    assert a.status == "error" and "no usable resolver configuration" in a.error
    checks = readiness(Names(("example.test",), frozenset({"mail.new.test"}), frozenset()), r.query)
    assert checks and all(c.status == "blocked" and c.exit_code == 75 for c in checks)
