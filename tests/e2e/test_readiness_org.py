"""``mailferry check`` on a prepared organization says ready in every area at once: a target
Dovecot on STARTTLS with a certificate for its name (IMAP, ManageSieve, SMTP submission), a real
DNS server with the domain's MX, SRV, autoconfig, SPF, DKIM and DMARC at the target, two OpenLDAP
directories whose target is prepared (container, schema), and accounts with nothing the target
can't take. Each area's own tests break one item at a time (test_readiness_*.py,
test_directory_prepare.py); this one proves that a whole organization done right is ready, exit 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from helpers import cli, write_project

from mailferry.sandbox.certs import certificate_set
from mailferry.sandbox.servers import seed_messages

USERS = {"alice": "alicepw", "bob": "bobpw"}
D = "new.test"


def zone(tgt: Any) -> list[tuple[str, str, str]]:
    return [
        ("mail.new.test", "A", "127.0.0.1"),
        ("mail.old.test", "A", "127.0.0.2"),
        (D, "MX", "10 mail.new.test"),
        (f"_imap._tcp.{D}", "SRV", f"0 1 {tgt.port} mail.new.test"),
        (f"_submission._tcp.{D}", "SRV", f"0 1 {tgt.submission_port} mail.new.test"),
        (f"autoconfig.{D}", "CNAME", "mail.new.test"),
        (f"autodiscover.{D}", "CNAME", "mail.new.test"),
        (D, "TXT", "v=spf1 mx -all"),
        (f"_dmarc.{D}", "TXT", "v=DMARC1; p=quarantine"),
        (f"mail._domainkey.{D}", "TXT", "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
    ]


def test_a_prepared_organization_is_ready_in_every_area(
    dovecot_factory: Any, dns_factory: Any, slapd_factory: Any, tmp_path: Path
) -> None:
    ca, cert, key = certificate_set(tmp_path / "certs", ("mail.new.test", "127.0.0.1"))["good"]
    src = dovecot_factory(style="slash", users=USERS, sieve=True)
    tgt = dovecot_factory(style="slash", users=USERS, sieve=True, submission=True, tls=True, tls_files=(ca, cert, key))
    for u in USERS:
        seed_messages(
            src.host,
            src.port,
            u,
            USERS[u],
            "INBOX",
            [b"Subject: hi\r\nMessage-ID: <%d@x>\r\n\r\nhi\r\n" % i for i in range(3)],
        )
    dns = dns_factory(zone(tgt), [D, "old.test"])
    dsrc = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    dtgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    os.environ["MF_ORG_DSRC"], os.environ["MF_ORG_DTGT"] = dsrc.root_pw, dtgt.root_pw
    extra = f"""
[target.sieve]
url = "sieve://127.0.0.1:{tgt.sieve_port}"
security = "starttls"
ca_file = "{ca}"

[source.sieve]
url = "sieve://127.0.0.1:{src.sieve_port}"
security = "none"

[target.submission]
url = "submission://127.0.0.1:{tgt.submission_port}"
ca_file = "{ca}"

[organization]
domains = ["{D}"]
resolver = "{dns.address}"
source_names = ["mail.old.test"]
target_names = ["mail.new.test"]
dkim_selectors = ["mail"]

[directory]
target_container = "{dtgt.users_dn}"
rules = ["smtp", "login"]
confirm_mailboxes = false

[directory.source]
url = "ldap://127.0.0.1:{dsrc.port}"
bind_dn = "{dsrc.root_dn}"
password = "env:MF_ORG_DSRC"
dialect = "generic"
bases = ["{dsrc.users_dn}"]

[directory.target]
url = "ldap://127.0.0.1:{dtgt.port}"
bind_dn = "{dtgt.root_dn}"
password = "env:MF_ORG_DTGT"
dialect = "generic"
bases = ["{dtgt.suffix}"]

[directory.create]
objectClass = "top person organizationalPerson inetOrgPerson mailAlternateRecipient"

[directory.lock]
employeeType = "locked"
"""
    project = write_project(tmp_path / "p", src, tgt, list(USERS), extra=extra)
    text = project.read_text()
    head, _, tail = text.partition("[target]")
    tail = tail.replace('security = "none"', f'security = "starttls"\nca_file = "{ca}"', 1)
    project.write_text(head + "[target]" + tail)

    r = cli("check", project, "--json")
    data = r.json()
    assert "areas" in data, r.out + r.err
    areas = {a["area"]: a for a in data["areas"]}
    assert set(areas) == {"services", "names", "certificates", "network", "directory", "blockers"}, set(areas)
    not_ok = [c for a in data["areas"] for c in a["checks"] if c["status"] != "ok"]
    assert not_ok == [], not_ok
    assert all(a["verdict"] == "ready" for a in data["areas"])
    assert [(row["account"], row["verdict"]) for row in data["accounts"]] == [(u, "ready") for u in USERS], [
        (row["account"], row["warnings"], row["problems"]) for row in data["accounts"]
    ]
    assert data["verdict"] == "ready" and r.code == 0, r.out
    services = {c["subject"]: c for c in areas["services"]["checks"]}
    assert any("STARTTLS" in c["what"] for c in services.values())  # submission, with its TLS
    assert len(areas["certificates"]["checks"]) >= 3  # IMAP, ManageSieve and submission, each on TLS
    # The same report for people, with the verdict last.
    assert cli("check", project).out.rstrip().endswith("verdict: ready")

    # The certificate must cover what DNS points at: an IMAP SRV record that sends clients to
    # imap.new.test (the same server) is a name the certificate lacks.
    records = [r for r in zone(tgt) if r[0] != f"_imap._tcp.{D}"]
    dns.set_records(
        [*records, (f"_imap._tcp.{D}", "SRV", f"0 1 {tgt.port} imap.new.test"), ("imap.new.test", "A", "127.0.0.1")]
    )
    project.write_text(project.read_text().replace('resolver = "127.0.0.1:', f'resolver = "{dns.address}" #', 1))
    r = cli("check", project, "--json")
    bad = [c for a in r.json()["areas"] for c in a["checks"] if c["status"] != "ok"]
    assert [(c["area"], c["status"]) for c in bad] == [("certificates", "blocked")], bad
    assert "imap.new.test" in bad[0]["what"] and "subjectAltName holds imap.new.test" in bad[0]["fix"]
    assert r.code == 1
