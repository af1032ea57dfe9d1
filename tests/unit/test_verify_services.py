"""The services area's judge: what each probe result means for users, the fix, the exit code."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailferry.verify import services as judge
from mailferry.verify.services import Seen, Submission

GOOD = Submission(
    "mx:587", False, "localhost Dovecot ready.", starttls=True, tls=True, auth=("PLAIN", "LOGIN"), size=40000000
)


def test_good_submission_is_ok_with_version_and_features() -> None:
    c = judge.submission(GOOD)
    assert (c.area, c.status, c.exit_code) == ("services", "ok", 0)
    assert c.what == "Dovecot submission: STARTTLS, AUTH PLAIN LOGIN, SIZE 40000000"
    assert c.facts["version"] == "Dovecot"
    assert c.subject == "target submission mx:587"


def test_implicit_tls_submission_needs_no_starttls() -> None:
    c = judge.submission(Submission("mx:465", True, "mx ESMTP Postfix", tls=True, auth=("PLAIN",)))
    assert c.status == "ok"
    assert c.what == "Postfix submission: implicit TLS, AUTH PLAIN"
    unknown = judge.submission(Submission("mx:465", True, "mx ESMTP ready", tls=True, auth=("PLAIN",)))
    assert unknown.what == "submission: implicit TLS, AUTH PLAIN" and unknown.facts["version"] == ""


def test_submission_down_is_blocked_tempfail() -> None:
    c = judge.submission(Submission("mx:587", False, error="Connection refused", stage="connect"))
    assert (c.status, c.exit_code) == ("blocked", 75)
    assert "can't send mail" in c.what and "Connection refused" in c.what
    assert "dovecot-submissiond" in c.fix and "[target.submission]" in c.fix


def test_submission_bad_certificate_names_the_ca_fix() -> None:
    c = judge.submission(
        Submission("mx:587", False, starttls=True, error="the TLS certificate does not verify", stage="certificate")
    )
    assert (c.status, c.exit_code) == ("blocked", 78)
    assert "ca_file" in c.fix
    handshake = judge.submission(Submission("mx:587", False, starttls=True, error="wrong version", stage="tls"))
    assert (handshake.status, handshake.exit_code) == ("blocked", 75) and "log" in handshake.fix


def test_submission_without_starttls_is_blocked() -> None:
    c = judge.submission(Submission("mx:587", False, "x Dovecot ready.", auth=("PLAIN",)))
    assert (c.status, c.exit_code) == ("blocked", 0)
    assert "STARTTLS" in c.what
    assert "ssl = yes" in c.fix and "submissions://" in c.fix


def test_submission_without_auth_after_tls_is_blocked() -> None:
    c = judge.submission(Submission("mx:587", False, "x Dovecot ready.", starttls=True, tls=True))
    assert c.status == "blocked"
    assert "AUTH" in c.what and "auth_mechanisms" in c.fix


def test_imap_and_sieve_down_are_tempfail_and_ok_carries_version() -> None:
    down = judge.imap(Seen("IMAP", "h:143", error="no greeting"))
    assert (down.status, down.exit_code) == ("blocked", 75) and "[target]" in down.fix
    up = judge.imap(Seen("IMAP", "h:143", version="Dovecot", features=frozenset({"IMAP4REV1", "IDLE", "XYZ"})))
    assert up.status == "ok" and up.what == "Dovecot IMAP: IDLE IMAP4REV1" and up.facts["version"] == "Dovecot"
    s = judge.sieve(Seen("ManageSieve", "h:4190", error="refused"))
    assert (s.status, s.exit_code) == ("blocked", 75) and "dovecot-managesieved" in s.fix
    ok = judge.sieve(
        Seen("ManageSieve", "h:4190", version="Dovecot Pigeonhole", facts={"sieve_extensions": "fileinto"})
    )
    assert ok.status == "ok" and ok.what == "Dovecot Pigeonhole ManageSieve: fileinto"


def test_dav_judgement() -> None:
    full = frozenset({"1", "2", "calendar-access", "addressbook", "calendar-auto-schedule"})
    [ok] = judge.dav(Seen("DAV", "http://d/", version="Radicale", features=full), calendars=True, contacts=True)
    assert ok.status == "ok" and "calendar-auto-schedule" in ok.what and ok.facts["version"] == "Radicale"
    [down] = judge.dav(Seen("DAV", "http://d/", error="refused"), calendars=True, contacts=False)
    assert (down.status, down.exit_code) == ("blocked", 75) and "[target.dav]" in down.fix
    no_cal = judge.dav(Seen("DAV", "u", features=frozenset({"addressbook"})), calendars=True, contacts=True)
    assert [c.status for c in no_cal] == ["blocked"] and "CalDAV" in no_cal[0].what
    # contacts only: no calendar-access is fine
    [only_contacts] = judge.dav(Seen("DAV", "u", features=frozenset({"addressbook"})), calendars=False, contacts=True)
    assert only_contacts.status == "ok"
    [no_sched] = judge.dav(Seen("DAV", "u", features=frozenset({"calendar-access"})), calendars=True, contacts=False)
    assert no_sched.status == "warning" and "RFC 6638" in no_sched.fix


def test_ldap_judgement() -> None:
    assert judge.ldap(Seen("LDAP", "ldap://h", error="x")).exit_code == 75
    assert judge.ldap(Seen("LDAP", "ldap://h", version="OpenLDAP 2.5")).facts["version"] == "OpenLDAP 2.5"


@given(
    implicit=st.booleans(),
    starttls=st.booleans(),
    tls=st.booleans(),
    auth=st.lists(st.sampled_from(["PLAIN", "LOGIN", "XOAUTH2"]), max_size=3).map(tuple),
    error=st.sampled_from(["", "boom"]),
    stage=st.sampled_from(["connect", "tls", "certificate", "ehlo"]),
)
def test_submission_is_ok_exactly_when_clients_can_log_in_over_tls(
    implicit: bool, starttls: bool, tls: bool, auth: tuple[str, ...], error: str, stage: str
) -> None:
    c = judge.submission(
        Submission("h:1", implicit, "h X ready", starttls, tls, auth, 0, error, stage if error else "")
    )
    assert (c.status == "ok") == (not error and tls and bool(auth))
    assert c.status in ("ok", "blocked")
    if c.status != "ok":
        assert c.fix and c.what
