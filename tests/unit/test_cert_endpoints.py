"""Which TLS endpoints of the target the certificates area looks at."""

from __future__ import annotations

from pathlib import Path

from test_config import GOOD, write

from mailferry.config import load_project
from mailferry.engine.certs import client_names, endpoints

EXTRA = """
[target.sieve]
url = "sieve://sieve.new.example:4190"
security = "tls"

[target.submission]
url = "submissions://smtp.new.example"
ca_file = "ca.pem"
"""


def test_every_tls_endpoint_of_the_target_and_only_those(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not read here\n")
    eps = endpoints(load_project(write(tmp_path, GOOD + EXTRA)))
    assert [(e.service, e.host, e.port, e.start, e.config) for e in eps] == [
        ("imap", "imap.new.example", 143, "starttls", "[target]"),
        ("sieve", "sieve.new.example", 4190, "tls", "[target.sieve]"),
        ("submission", "smtp.new.example", 465, "tls", "[target.submission]"),
    ]
    assert eps[2].ca_file == tmp_path / "ca.pem" and eps[0].ca_file is None


def test_a_target_without_tls_has_no_endpoint(tmp_path: Path) -> None:
    text = GOOD.replace(
        'security = "starttls"\nmax_connections', 'security = "none"\nallow_plaintext_login = true\nmax_connections', 1
    )
    assert endpoints(load_project(write(tmp_path, text))) == []


def test_target_names_apply_to_the_main_server_not_to_a_host_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not read here\n")
    org = '\n[organization]\ntarget_names = ["mail.new.example"]\n'
    project = load_project(write(tmp_path, GOOD + EXTRA + org))
    imap, sieve, submission = endpoints(project)
    assert client_names(project, imap) == ["imap.new.example", "mail.new.example"]
    assert client_names(project, submission) == ["smtp.new.example"]
