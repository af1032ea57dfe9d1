"""proxyAddresses parsing and address comparison keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.formats.addresses import (
    ProxyAddress,
    as_primary_smtp,
    as_secondary_smtp,
    as_x500,
    generic_proxies,
    normalize_email,
    parse_proxy,
    primary_smtp,
    smtp_addresses,
    x500_addresses,
    x500_key,
)

LEGACY = "/o=Old Org/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=jsmith"

PROXIES = [
    ("SMTP:John.Smith@old.example", ProxyAddress("SMTP", "John.Smith@old.example", True)),
    ("smtp:js@old.example", ProxyAddress("SMTP", "js@old.example", False)),
    ("Smtp:x@old.example", ProxyAddress("SMTP", "x@old.example", False)),
    ("X500:" + LEGACY, ProxyAddress("X500", LEGACY, True)),
    ("x500:/o=a/cn=b", ProxyAddress("X500", "/o=a/cn=b", False)),
    ("X400:c=US;a= ;p=Old;o=Exchange;s=Smith;", ProxyAddress("X400", "c=US;a= ;p=Old;o=Exchange;s=Smith;", True)),
    ("SIP:john@old.example", ProxyAddress("SIP", "john@old.example", True)),
    ("sip:john@old.example", ProxyAddress("SIP", "john@old.example", False)),
    ("EUM:1234;phone-context=x", ProxyAddress("EUM", "1234;phone-context=x", True)),
    (" SMTP: spaced@old.example ", ProxyAddress("SMTP", "spaced@old.example", True)),
    ("junk-without-colon", ProxyAddress("", "junk-without-colon", False)),
    ("", ProxyAddress("", "", False)),
    (":lonely", ProxyAddress("", "lonely", False)),
    ("123:digits", ProxyAddress("123", "digits", False)),  # no letters: can't be "upper case"
]


@pytest.mark.parametrize(("value", "parsed"), PROXIES)
def test_parse_proxy(value: str, parsed: ProxyAddress) -> None:
    assert parse_proxy(value) == parsed


VALUES = [
    "smtp:js@old.example",
    "X500:" + LEGACY,
    "SMTP:John.Smith@old.example",
    "smtp:JOHN.SMITH@OLD.EXAMPLE",  # the primary again, other case
    "x500:" + LEGACY.upper(),  # the same X500 again
    "SIP:john@old.example",
    "smtp:",
]


def test_primary_and_all_smtp() -> None:
    assert primary_smtp(VALUES) == "John.Smith@old.example"
    assert smtp_addresses(VALUES) == ["John.Smith@old.example", "js@old.example"]
    assert primary_smtp(["smtp:a@x"]) is None
    assert smtp_addresses(["smtp:a@x", "smtp:B@x", "smtp:b@X"]) == ["a@x", "B@x"]
    assert primary_smtp([]) is None and smtp_addresses([]) == []


def test_x500_addresses() -> None:
    assert x500_addresses(VALUES) == [LEGACY]
    assert x500_addresses(["X500:", "smtp:a@x"]) == []


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("John.Smith@Old.Example", "john.smith@old.example"),  # local part without case: see the module
        ("  a@b.c \n", "a@b.c"),
        ("<a@b.c>", "a@b.c"),
        ("Zoë@Exämple.org", "zoë@exämple.org"),
        ("", ""),
    ],
)
def test_normalize_email(raw: str, key: str) -> None:
    assert normalize_email(raw) == key


def test_x500_key() -> None:
    assert x500_key(LEGACY) == x500_key("X500:" + LEGACY.upper()) == x500_key(" x500: " + LEGACY + " ")
    assert x500_key(LEGACY) != x500_key(LEGACY + "x")


def test_builders() -> None:
    assert as_x500(LEGACY) == "X500:" + LEGACY
    assert as_secondary_smtp("a@x") == "smtp:a@x"
    assert as_primary_smtp("a@x") == "SMTP:a@x"
    assert parse_proxy(as_x500(LEGACY)).address == LEGACY
    assert generic_proxies(" a@x ", ["b@x", "A@X", "", "b@x"]) == ("SMTP:a@x", "smtp:b@x")
    assert generic_proxies(None, ["b@x"]) == ("smtp:b@x",)


@given(st.lists(st.text(max_size=30), max_size=8))
def test_never_raises_and_keys_are_unique(values: list[str]) -> None:
    for v in values:
        p = parse_proxy(v)
        assert p.kind == p.kind.upper()
    smtp = smtp_addresses(values)
    assert len({normalize_email(a) for a in smtp}) == len(smtp)
    first = primary_smtp(values)
    if first is not None:
        assert normalize_email(smtp[0]) == normalize_email(first)
    assert len({x500_key(x) for x in x500_addresses(values)}) == len(x500_addresses(values))


@given(st.emails())
def test_secondary_round_trip(addr: str) -> None:
    assert smtp_addresses([as_secondary_smtp(addr)]) == [addr]
    assert primary_smtp([as_primary_smtp(addr)]) == addr
    assert normalize_email(addr.upper()) == normalize_email(addr)
