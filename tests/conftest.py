"""Shared pytest fixtures: throw-away Dovecot and Cyrus servers, the message corpus.

Tests are not packages (no ``__init__.py``): pytest puts ``tests/`` on ``sys.path`` for this
rootdir conftest, so test modules may ``from conftest import corpus_messages``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailferry.sandbox.servers import CyrusServer, DovecotServer, find_cyrus_imapd

pytest_plugins = ["ldap_fixtures"]  # Samba AD and slapd factories (tests/ldap_fixtures.py)

TESTS = Path(__file__).resolve().parent
# The shared corpus next to the repository (when present) wins; tests/data holds a byte-exact
# copy (MIT, see its LICENSE) so the suite runs from a bare checkout.
SHARED_CORPUS = TESTS.parents[1] / "shared" / "corpus" / "mikel-mail"
LOCAL_CORPUS = TESTS / "data" / "corpus" / "mikel-mail"
DEFAULT_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}
# Set to 1 in CI so a missing Cyrus fails the run instead of skipping its tests.
REQUIRE_SERVERS_ENV = "MAILFERRY_REQUIRE_SERVERS"


def corpus_dir() -> Path:
    return SHARED_CORPUS if SHARED_CORPUS.is_dir() else LOCAL_CORPUS


def corpus_messages() -> list[tuple[str, bytes]]:
    """Every message of the mikel-mail corpus as ``(relative name, raw bytes)``, sorted by name.

    Only ``*.eml`` files with content count: LICENSE, .gitattributes and the empty
    ``sample_output_multipart`` are not messages. Bytes are as stored (bare LF in some).
    """
    root = corpus_dir()
    return [
        (path.relative_to(root).as_posix(), path.read_bytes())
        for path in sorted(root.rglob("*.eml"))
        if path.is_file() and path.stat().st_size > 0
    ]


@pytest.fixture(scope="session")
def corpus() -> list[tuple[str, bytes]]:
    messages = corpus_messages()
    assert messages, f"no corpus messages under {corpus_dir()}"
    return messages


@pytest.fixture(scope="session")
def dovecot_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DovecotServer]]:
    """``make(**kwargs) -> DovecotServer``: a fresh Dovecot in its own temp dir.

    Defaults: ``style="slash"``, users alice/bob/carol with passwords ``<name>pw``, master user
    ``admin``/``adminpw``. Every server is stopped at the end of the session.
    """
    started: list[DovecotServer] = []

    def make(**kwargs: Any) -> DovecotServer:
        kwargs.setdefault("style", "slash")
        kwargs.setdefault("users", dict(DEFAULT_USERS))
        server = DovecotServer.start(tmp_path_factory.mktemp("dovecot"), **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def cyrus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., CyrusServer]]:
    """``make(**kwargs) -> CyrusServer``: a fresh Cyrus in its own temp dir.

    Defaults: users alice/bob/carol (``<name>pw``), admin ``cyrus``/``cyruspw``. Skips when no
    Cyrus imapd can be found (see tests/servers/REQUIREMENTS.txt), unless
    ``MAILFERRY_REQUIRE_SERVERS=1``, which turns the skip into a failure.
    """
    if find_cyrus_imapd() is None:
        reason = (
            "no Cyrus imapd (needs cyrus-common + sasl2-bin and imapd from cyrus-imapd, e.g. the .deb "
            "extracted to /opt/cyrus-imapd, or $MAILFERRY_CYRUS_IMAPD)"
        )
        if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    started: list[CyrusServer] = []

    def make(**kwargs: Any) -> CyrusServer:
        kwargs.setdefault("users", dict(DEFAULT_USERS))
        server = CyrusServer.start(tmp_path_factory.mktemp("cyrus"), **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def dns_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """``make(records, zones) -> DnsServer``: a real dnsmasq on 127.0.0.1 answering only ``records``
    (``(name, type, value)``) for ``zones``; ``server.set_records(...)`` changes them. Stopped at the end."""
    from mailferry.sandbox.dns import DnsServer

    started: list[DnsServer] = []

    def make(records: Any, zones: Any) -> DnsServer:
        server = DnsServer.start(records, zones, tmp_path_factory.mktemp("dns"))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _require(what: str, found: bool) -> None:
    if not found:
        reason = f"{what} is not installed (see tests/servers/REQUIREMENTS.txt)"
        if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL (mailferry.sandbox.cluster) for the session: ``url`` (no password),
    ``password``; ``reset()`` empties its database between tests."""
    from mailferry.sandbox.cluster import PostgresServer, find_postgres

    _require("PostgreSQL (Debian package postgresql)", find_postgres() is not None)
    directory = Path(tempfile.mkdtemp(prefix="mf-pg-"))  # the postgres user must reach it
    os.chmod(directory, 0o755)
    server = PostgresServer.start(directory / "pg")
    yield server
    server.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Redis with a password and an fsynced append-only file, for the session."""
    from mailferry.sandbox.cluster import RedisServer, find_redis

    _require("Redis (Debian package redis-server)", find_redis() is not None)
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.close()
