"""pytest plugin: throw-away LDAP directories (Samba AD DCs, OpenLDAP slapd) for the tests.

Register it in the root conftest with ``pytest_plugins = ["ldap_fixtures"]``.

- ``samba_factory(**kwargs) -> SambaDC``: a fresh DC (a copy of a cached provisioned domain,
  ~1 s; the first start of a domain on a machine provisions it, ~10-20 s). Defaults are the
  *source* domain (``SAMBA_SRC``); pass ``**SAMBA_TGT`` for the target one. Samba's LDAP port is
  fixed, so a DC already running on the same address is stopped first: asking again for the
  same domain is the fast reset.
- ``slapd_factory(**kwargs) -> Slapd``: a fresh slapd on a free port (defaults
  ``suffix="dc=src,dc=test"``, ``root_pw="secret"``), ~0.1 s.

Both skip with the reason when the binaries are missing, unless ``MAILFERRY_REQUIRE_SERVERS=1``,
which turns the skip into a failure. Everything started is stopped at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailferry.sandbox.ldap_servers import SambaDC, Slapd, find_samba, find_slapd

REQUIRE_SERVERS_ENV = "MAILFERRY_REQUIRE_SERVERS"
SAMBA_SRC: dict[str, str] = {
    "ip": "127.0.0.11",
    "realm": "SRC.TEST",
    "domain": "SRC",
    "admin_password": "Passw0rd!Src",
    "host": "dc1",
}
SAMBA_TGT: dict[str, str] = {
    "ip": "127.0.0.12",
    "realm": "TGT.TEST",
    "domain": "TGT",
    "admin_password": "Passw0rd!Tgt",
    "host": "dc2",
}


def _skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def samba_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SambaDC]]:
    """``make(**kwargs) -> SambaDC`` (see the module docstring)."""
    if find_samba() is None:
        _skip_or_fail(
            "no Samba AD DC (apt-get install samba-ad-dc samba-ad-provision ldb-tools ldap-utils); "
            f"set {REQUIRE_SERVERS_ENV}=1 to fail instead"
        )
    started: list[SambaDC] = []

    def make(**kwargs: Any) -> SambaDC:
        settings = {**SAMBA_SRC, **kwargs}
        for server in started:
            if server.ip == settings["ip"]:
                server.stop()
        server = SambaDC.start(tmp_path_factory.mktemp(f"samba-{settings['domain'].lower()}"), **settings)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def slapd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Slapd]]:
    """``make(**kwargs) -> Slapd`` (see the module docstring)."""
    if find_slapd() is None:
        _skip_or_fail(f"no slapd (apt-get install slapd ldap-utils); set {REQUIRE_SERVERS_ENV}=1 to fail instead")
    started: list[Slapd] = []

    def make(**kwargs: Any) -> Slapd:
        kwargs.setdefault("suffix", "dc=src,dc=test")
        kwargs.setdefault("root_pw", "secret")
        server = Slapd.start(tmp_path_factory.mktemp("slapd"), **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
