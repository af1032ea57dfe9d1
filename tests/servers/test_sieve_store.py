"""connectors/sieve.py against real ManageSieve servers: Dovecot Pigeonhole and Cyrus timsieved."""

from __future__ import annotations

import pytest

from mailferry.connectors.sieve import ScriptRefused, SieveEndpoint, SieveLogin, SieveStore
from mailferry.errors import AuthError, MailferryError, TemporaryFailure

SCRIPT = b'require ["fileinto"];\r\n# "quoted" \\ and {3}\r\nfileinto "INBOX";\nkeep;'  # mixed ends, no final one


@pytest.fixture(scope="module")
def servers(dovecot_factory, cyrus_factory):
    d = dovecot_factory(style="slash", users={"alice": "alicepw"}, sieve=True)
    c = cyrus_factory(users={"alice": "alicepw"})
    return {"dovecot": (d.sieve_port, ("admin", "adminpw")), "cyrus": (c.sieve_port, ("cyrus", "cyruspw"))}


@pytest.fixture(params=["dovecot", "cyrus"])
def side(request, servers):
    return servers[request.param]


def store(port: int, user: str, password: str, admin: str | None = None, *, readonly: bool = False) -> SieveStore:
    return SieveStore(
        SieveEndpoint("127.0.0.1", port, "none", timeout=10), SieveLogin(user, password, admin), readonly=readonly
    )


def test_round_trip_is_byte_exact_and_active_is_listed(side) -> None:
    port, (admin, pw) = side
    st = store(port, "alice", pw, admin)
    try:
        assert {"fileinto", "vacation"} <= st.extensions and st.has_checkscript
        st.put("round trip", SCRIPT)
        st.put("other", b"keep;\r\n")
        st.set_active("round trip")
        assert st.get("round trip") == SCRIPT
        assert ("round trip", True) in st.list_scripts() and ("other", False) in st.list_scripts()
        assert st.check(b"keep;") is None
        words = st.check(b"if true {")
        assert words and "line" in words
        with pytest.raises(ScriptRefused) as refused:
            st.put("bad", b"if true {")
        assert refused.value.words and "bad" not in [n for n, _ in st.list_scripts()]
    finally:
        st.close()


def test_own_login_and_read_only(side) -> None:
    port, _ = side
    st = store(port, "alice", "alicepw", readonly=True)
    try:
        assert st.list_scripts() is not None
        with pytest.raises(MailferryError, match="read-only"):
            st.put("x", b"keep;")
        with pytest.raises(MailferryError, match="read-only"):
            st.set_active("x")
    finally:
        st.close()


def test_wrong_password_never_shown(side) -> None:
    port, (admin, _) = side
    with pytest.raises(AuthError) as e:
        store(port, "alice", "s3cret-wrong", admin)
    assert "s3cret-wrong" not in str(e.value) and "s3cret-wrong" not in repr(e.value.args)


def test_starttls_required_but_not_offered(side) -> None:
    port, (admin, pw) = side
    with pytest.raises(TemporaryFailure, match="STARTTLS"):
        SieveStore(
            SieveEndpoint("127.0.0.1", port, "starttls", timeout=10), SieveLogin("alice", pw, admin), readonly=True
        )


def test_starttls_verifies_the_certificate(dovecot_factory, tmp_path) -> None:
    from mailferry.errors import TLSVerifyError
    from mailferry.sandbox.servers import _make_tls_files

    d = dovecot_factory(style="slash", users={"alice": "alicepw"}, sieve=True, tls=True)
    assert d.sieve_port is not None and d.ca_file is not None
    login = SieveLogin("alice", "adminpw", "admin")
    good = SieveEndpoint("127.0.0.1", d.sieve_port, "starttls", ca_file=str(d.ca_file), timeout=10)
    st = SieveStore(good, login, readonly=True)
    try:
        assert st.list_scripts() == []
    finally:
        st.close()
    other_ca, _, _ = _make_tls_files(tmp_path / "other", "localhost")
    with pytest.raises(TLSVerifyError):
        SieveStore(
            SieveEndpoint("127.0.0.1", d.sieve_port, "starttls", ca_file=str(other_ca), timeout=10),
            login,
            readonly=True,
        )


def test_dovecot_master_login_form(servers) -> None:
    port, (admin, pw) = servers["dovecot"]
    st = SieveStore(
        SieveEndpoint("127.0.0.1", port, "none", timeout=10),
        SieveLogin("alice", pw, admin, method="dovecot-master"),
        readonly=True,
    )
    try:
        assert isinstance(st.list_scripts(), list)
    finally:
        st.close()
