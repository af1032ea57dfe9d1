"""End to end: ``mailferry cutover check`` on a migrated organization (Dovecot with ACL and
ManageSieve, Radicale, a real DNS server) lists every dependency on the source planted one at a
time — DNS still at the source, a calendar item linking to the old host, a Sieve redirect to an
old address, a permission whose user was not mapped, an account never migrated, mail that arrived
after the last pass, a pass older than the window, a message the target refused — each with its
area, status, fix and the exit code; once they are fixed it is clean, and ``--simulate-offline``
passes with the source servers actually stopped: each account logs in on the target, the sharee
opens the folder shared with it with its rights, and free/busy is answered by the target.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dav_org import event, put_named, store
from helpers import cli
from imapclient import IMAPClient
from test_readiness_names import GOOD, replaced

from mailferry.connectors.sieve import SieveEndpoint, SieveLogin, SieveStore
from mailferry.errors import ExitCode
from mailferry.sandbox.dav_servers import RadicaleServer
from mailferry.sandbox.servers import seed_messages

USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}
D = "new.test"


def message(i: int, size: int = 0) -> bytes:
    return (
        f"From: a@old.test\r\nTo: b@old.test\r\nSubject: m{i}\r\nMessage-ID: <c{i}@old.test>\r\n\r\nhello\r\n".encode()
        + b"y" * size
    )


def project(tmp: Path, src: Any, tgt: Any, rs: Any, rt: Any, dns: Any, users: list[str], extra: str = "") -> Path:
    tag = "".join(ch if ch.isalnum() else "_" for ch in tmp.name.upper())
    for u in users:
        os.environ[f"MF_{tag}_{u.upper()}"] = USERS[u]
    csv = "source_user,target_user,source_password,target_password\n" + "".join(
        f"{u},{u},env:MF_{tag}_{u.upper()},env:MF_{tag}_{u.upper()}\n" for u in users
    )
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "accounts.csv").write_text(csv)
    text = (
        '[project]\nname = "c"\n[accounts]\ncsv = "accounts.csv"\n'
        f'[source]\nhost = "127.0.0.1"\nport = {src.port}\nsecurity = "none"\ntimeout = 20\n'
        f'[source.dav]\nurl = "{rs.url}"\n'
        f'[source.sieve]\nurl = "sieve://127.0.0.1:{src.sieve_port}"\nsecurity = "none"\n'
        f'[target]\nhost = "127.0.0.1"\nport = {tgt.port}\nsecurity = "none"\ntimeout = 20\n'
        f'[target.dav]\nurl = "{rt.url}"\n'
        f'[target.sieve]\nurl = "sieve://127.0.0.1:{tgt.sieve_port}"\nsecurity = "none"\n'
        '[calendars.domains]\n"old.test" = "new.test"\n'
        f'[organization]\ndomains = ["{D}"]\nresolver = "{dns.address}"\n'
        'source_names = ["mail.old.test"]\ntarget_names = ["mail.new.test"]\ndkim_selectors = ["mail"]\n' + extra
    )
    (tmp / "project.toml").write_text(text)
    return tmp / "project.toml"


def problems(r: Any) -> list[dict[str, Any]]:
    data = r.json()
    return [c for a in data["areas"] for c in a["checks"] if c["status"] != "ok"]


def one_problem(r: Any, area: str, status: str) -> dict[str, Any]:
    bad = problems(r)
    assert len(bad) == 1, bad
    [c] = bad
    assert c["area"] == area and c["status"] == status and c["fix"], c
    want = ExitCode.FINDINGS if status == "blocked" else ExitCode.OK
    assert r.code == want, r.out
    return c


def imap(server: Any, user: str) -> IMAPClient:
    c = IMAPClient(server.host, server.port, ssl=False, timeout=20)
    c.login(user, USERS[user])
    return c


def put_event(url: str, user: str, label: str, data: bytes) -> None:
    """Create or replace ``Work/<label>.ics`` of ``user`` (replaced by its ETag)."""
    st = store(url, user, USERS[user])
    try:
        coll = put_named(st, "Work", "calendar", [])
        etag = next((e for h, e in st.members(coll).items() if h.endswith(f"/{label}.ics")), None)
        st.put(coll, f"{label}.ics", data, etag=etag)
    finally:
        st.close()


def sieve(server: Any, user: str) -> SieveStore:
    return SieveStore(
        SieveEndpoint("127.0.0.1", server.sieve_port, "none", True, None, 20),
        SieveLogin(user, USERS[user], None, "sasl-authzid", "*"),
        readonly=False,
        label=user,
    )


def test_every_planted_dependency_then_offline(dovecot_factory: Any, dns_factory: Any, tmp_path: Path) -> None:
    src = dovecot_factory(style="slash", users=USERS, acl=True, sieve=True)
    tgt = dovecot_factory(style="slash", users=USERS, acl=True, sieve=True, max_message_size=50_000)
    rs = RadicaleServer.start(tmp_path / "rs", users=USERS)
    rt = RadicaleServer.start(tmp_path / "rt", users=USERS)
    dns = dns_factory(GOOD, [D, "old.test"])
    try:
        for u in ("alice", "bob"):
            seed_messages(src.host, src.port, u, USERS[u], "INBOX", [message(i) for i in range(3)])
        c = imap(src, "alice")
        c.create_folder("Team")
        c.setacl("Team", "bob", "lrs")  # shared with bob: bob must open it on the target alone
        c.logout()
        put_event(rs.url, "alice", "m1", event("m1", "Planning", "20271104T100000Z"))
        p = project(tmp_path / "p", src, tgt, rs, rt, dns, ["alice", "bob"])
        first = cli("migrate", p, "--json")
        assert first.code == ExitCode.OK, first.out + first.err

        clean = cli("cutover", "check", p, "--json")
        assert problems(clean) == [] and clean.json()["verdict"] == "ready" and clean.code == 0, clean.out
        assert {a["area"] for a in clean.json()["areas"]} == {"dns", "progress"}

        # 1. DNS: the MX still at the source.
        dns.set_records(replaced(D, "MX", "10 mail.old.test"))
        x = one_problem(cli("cutover", "check", p, "--json"), "dns", "blocked")
        assert x["subject"] == f"MX {D}" and "mail.new.test" in x["fix"]
        dns.set_records(GOOD)

        # 2. A calendar item that links to the old server (planted on the source, carried by migrate).
        put_event(rs.url, "alice", "m2", event("m2", "Room", "20271105T100000Z", "URL:https://mail.old.test/rooms/4"))
        assert cli("migrate", p, "--only", "calendars").code == ExitCode.OK
        x = one_problem(cli("cutover", "check", p, "--json"), "data", "blocked")
        assert x["subject"] == "calendar item Work/m2.ics" and x["account"] == "alice" and "mail.old.test" in x["what"]
        # Fixed at the source, carried again.
        put_event(rs.url, "alice", "m2", event("m2", "Room", "20271105T100000Z", "LOCATION:Room 4"))
        assert cli("migrate", p, "--only", "calendars").code == ExitCode.OK
        assert problems(cli("cutover", "check", p, "--json")) == []

        # 3. A Sieve redirect on the target to an address that ends with the source.
        s = sieve(tgt, "alice")
        s.put("fwd", b'redirect "bob@old.test";\n')
        s.set_active("fwd")
        x = one_problem(cli("cutover", "check", p, "--json"), "data", "blocked")
        assert x["subject"] == "filter fwd" and "bob@new.test" in x["fix"]
        s.put("fwd", b'redirect "bob@new.test";\n')
        s.close()
        assert problems(cli("cutover", "check", p, "--json")) == []

        # 4. A permission for someone who is not mapped: after cut-over nobody has that access.
        c = imap(src, "alice")
        c.setacl("Team", "ghost", "lr")
        c.logout()
        assert cli("migrate", p, "--only", "permissions").code == ExitCode.FINDINGS
        x = one_problem(cli("cutover", "check", p, "--json"), "data", "blocked")
        assert x["subject"] == "permissions Team" and "ghost" in x["what"] and "cutover ack" in x["fix"]
        ack = cli("cutover", "ack", p, "--account", "alice", "--kind", "acl-unmapped", "--json")
        assert ack.code == 0
        assert problems(cli("cutover", "check", p, "--json")) == []

        # 5. An account of the project never migrated.
        p3 = project(tmp_path / "p", src, tgt, rs, rt, dns, ["alice", "bob", "carol"])
        x = one_problem(cli("cutover", "check", p3, "--json"), "progress", "blocked")
        assert x["account"] == "carol" and "never been migrated" in x["what"] and "--account carol" in x["fix"]
        assert cli("migrate", p3, "--account", "carol").code == ExitCode.OK
        assert problems(cli("cutover", "check", p3, "--json")) == []

        # 6. Mail that arrived on the source after the last pass.
        seed_messages(src.host, src.port, "bob", USERS["bob"], "INBOX", [message(7)])
        x = one_problem(cli("cutover", "check", p3, "--json"), "progress", "blocked")
        assert x["account"] == "bob" and x["subject"] == "source changed" and "INBOX" in x["what"]
        assert cli("migrate", p3).code == ExitCode.FINDINGS  # alice's ghost is still unmapped
        assert problems(cli("cutover", "check", p3, "--json")) == []

        # 7. A message the target refused: still only on the source.
        seed_messages(src.host, src.port, "bob", USERS["bob"], "INBOX", [message(8, 80_000)])
        assert cli("migrate", p3).code == ExitCode.FINDINGS
        bad = problems(cli("cutover", "check", p3, "--json"))
        assert {(c["area"], c["subject"], c["status"]) for c in bad} == {
            ("progress", "refused items", "blocked"),
            ("progress", "finding refused", "warning"),
        }, bad
        tgt.set_limits(quota_mb=None, max_message_size=None)
        assert cli("migrate", p3).code == ExitCode.FINDINGS
        assert problems(cli("cutover", "check", p3, "--json")) == []

        # 8. The last pass is older than the window (0.36 s; pass times are kept to the second).
        time.sleep(1.2)
        stale = project(
            tmp_path / "p", src, tgt, rs, rt, dns, ["alice", "bob", "carol"], "delta_window_hours = 0.0001\n"
        )
        bad = problems(cli("cutover", "check", stale, "--json"))
        assert {(c["area"], c["subject"], c["status"]) for c in bad} == {("progress", "last pass", "blocked")}
        assert all("again just before switching" in c["fix"] for c in bad)
        p3 = project(tmp_path / "p", src, tgt, rs, rt, dns, ["alice", "bob", "carol"])  # the window back to its default

        # Everything fixed; the source switched off for real. The target stands alone.
        src.close()
        rs.close()
        off = cli("cutover", "check", p3, "--simulate-offline", "--json")
        assert off.code == 0, problems(off)
        data = off.json()
        assert data["simulate_offline"] is True and data["verdict"] == "ready", problems(off)
        offline = {c["subject"]: c for a in data["areas"] if a["area"] == "offline" for c in a["checks"]}
        assert {f"login {u}" for u in USERS} <= set(offline)
        assert offline["bob opens alice's Team"]["what"].startswith("opens it with the rights")
        assert offline["free/busy alice"]["status"] == "ok"
    finally:
        rs.close()
        rt.close()


def test_simulate_offline_refuses_the_source_while_it_still_runs(dovecot_factory: Any) -> None:
    """The guard itself: a running source is refused to this process (any connector), the target is not."""
    import socket

    from mailferry.connectors.offline import refusing

    src = dovecot_factory(style="slash", users=USERS)
    tgt = dovecot_factory(style="slash", users=USERS)
    with refusing([("127.0.0.1", src.port)]):
        try:
            socket.create_connection(("127.0.0.1", src.port), timeout=5).close()
            raise AssertionError("the source was reached")
        except ConnectionRefusedError as e:
            assert "simulating the source switched off" in str(e)
        imap(tgt, "alice").logout()  # the target answers as ever
    imap(src, "alice").logout()  # and afterwards the source again
