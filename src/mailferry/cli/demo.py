"""``mailferry demo``: the whole job between throwaway local servers: mail, folder permissions
(ACLs, a group's folder), folder comments, public folders and Sieve filters with an out-of-office
reply between two Dovecot servers, calendars and contacts between two Radicale servers (people's
addresses in meetings and filters rewritten from old.example to new.example).

Source: Courier-style (``INBOX.`` prefix, ``.`` separator, no special-use flags: Sent Items,
Deleted Items... by name). Target: ``/`` separator, no prefix, RFC 6154 special-use folders.
Both use a master (admin) login, so the project needs no user passwords.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"}


def data_text(data: list[object]) -> str:
    """The rights of a MYRIGHTS answer (mailbox then rights, as bytes)."""
    last = data[-1] if data else b""
    text = last.decode() if isinstance(last, bytes) else str(last)
    return text.rsplit(" ", 1)[-1]


class DemoOrg:
    """The demo's throwaway servers, seeded, and the project file between them."""

    def __init__(self, workdir: Path, c: Console) -> None:
        from mailferry.config.template import render_project
        from mailferry.sandbox import org_sample
        from mailferry.sandbox.dav_sample import OLD_DOMAIN, seed_dav_sample
        from mailferry.sandbox.dav_servers import RadicaleServer
        from mailferry.sandbox.seed import seed_sample
        from mailferry.sandbox.servers import DovecotServer, DovecotStyle

        workdir = workdir.resolve()
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        self.workdir = workdir
        c.rule("1. two throwaway IMAP servers on 127.0.0.1")
        # Both with folder ACLs (the group "team"), METADATA, a public namespace and Sieve.
        server_users = USERS | dict([org_sample.PUBLISHER])

        def dovecot(name: str, style: DovecotStyle, special_use: bool) -> DovecotServer:
            return DovecotServer.start(
                workdir / name,
                style=style,
                users=server_users,
                special_use=special_use,
                acl=True,
                acl_groups=org_sample.GROUPS,
                acl_global=org_sample.GLOBAL_ACL,
                metadata=True,
                public="Public",
                sieve=True,
            )

        self.src = dovecot("source-server", "dotted", False)
        self.tgt = dovecot("target-server", "slash", True)
        self.dav_src = RadicaleServer.start(workdir / "source-dav", users=USERS)
        self.dav_tgt = RadicaleServer.start(workdir / "target-dav", users=USERS)
        from mailferry.sandbox.dns import DnsServer

        (workdir / "dns").mkdir()
        self.dns = DnsServer.start(zone(cut_over=False), ["new.example", "old.example"], workdir / "dns")
        try:
            src, tgt, dav_src, dav_tgt = self.src, self.tgt, self.dav_src, self.dav_tgt
            c.print(f"source: Dovecot on 127.0.0.1:{src.port} (INBOX. prefix, '.' separator, no SPECIAL-USE)")
            c.print(
                f"target: Dovecot on 127.0.0.1:{tgt.port} ('/' separator, special-use Sent/Drafts/Trash/Junk/Archive)"
            )
            c.rule("2. seed a sample organization on the source")
            total = sum(seed_sample(src, user, pw) for user, pw in USERS.items())
            items = sum(
                seed_dav_sample(dav_src.url, u, pw, [x for x in USERS if x != u][:2]) for u, pw in USERS.items()
            )
            shared = org_sample.seed_sharing(src, USERS, address=f"alice@{OLD_DOMAIN}")
            c.print(f"{len(USERS)} accounts, {total} messages; {items} calendar items and contacts")
            c.print(
                "shared: alice lets bob read her INBOX, carol lets the group 'team' write her Projects, "
                "public folders Public/Announcements (everyone reads) and Public/Team (the group writes), "
                "a folder comment, alice's Sieve filter with an out-of-office reply "
                f"({', '.join(f'{n} {k}' for k, n in shared.items())})"
            )
            c.print(f"calendars: Radicale on {dav_src.url} -> Radicale on {dav_tgt.url}")
            c.print(
                f"DNS: dnsmasq on {self.dns.address} for new.example (MX still at mail.old.example, as before "
                "cut-over; SRV, autoconfig, SPF, DKIM and DMARC for the new server)"
            )
            c.rule("3. mailferry init")
            (workdir / "accounts.csv").write_text(
                "source_user,target_user\n" + "".join(f"{u},{u}\n" for u in USERS), encoding="utf-8"
            )
            os.environ["MAILFERRY_DEMO_SOURCE_ADMIN"] = "adminpw"
            os.environ["MAILFERRY_DEMO_TARGET_ADMIN"] = "adminpw"
            self.project_path = workdir / "demo.toml"
            self.project_path.write_text(
                render_project(
                    name="demo",
                    source_url=f"imap://127.0.0.1:{src.port}",
                    target_url=f"imap://127.0.0.1:{tgt.port}",
                    accounts_csv="accounts.csv",
                    source_admin="admin",
                    source_admin_password="env:MAILFERRY_DEMO_SOURCE_ADMIN",
                    target_admin="admin",
                    target_admin_password="env:MAILFERRY_DEMO_TARGET_ADMIN",
                    ledger=None,
                    source_dav=dav_src.url,
                    target_dav=dav_tgt.url,
                )
                .replace('# [source.dav.admin]\n# user = "davadmin"', '[source.dav.admin]\nuser = "admin"')
                .replace('# [target.dav.admin]\n# user = "davadmin"', '[target.dav.admin]\nuser = "admin"')
                .replace('# password = "env:SOURCE_DAV_ADMIN_PASSWORD"', 'password = "env:MAILFERRY_DEMO_SOURCE_ADMIN"')
                .replace('# password = "env:TARGET_DAV_ADMIN_PASSWORD"', 'password = "env:MAILFERRY_DEMO_TARGET_ADMIN"')
                + f'\n[calendars.domains]\n"{OLD_DOMAIN}" = "new.example"\n'
                + f'\n[source.sieve]\nurl = "sieve://127.0.0.1:{src.sieve_port}"\nsecurity = "none"\n'
                + f'\n[target.sieve]\nurl = "sieve://127.0.0.1:{tgt.sieve_port}"\nsecurity = "none"\n'
                # A Dovecot master user logs in for a user, never as itself: the public folders
                # are read and written as their publisher.
                + f'\n[public]\nsource_user = "{org_sample.PUBLISHER[0]}"\ntarget_user = "{org_sample.PUBLISHER[0]}"\n'
                + f'\n[organization]\ndomains = ["new.example"]\nresolver = "{self.dns.address}"\n'
                + 'source_names = ["mail.old.example"]\ntarget_names = ["mail.new.example"]\n'
                + 'dkim_selectors = ["mail"]\n',
                encoding="utf-8",
            )
            c.print(f"wrote {self.project_path}")
        except BaseException:
            self.stop()
            raise

    def target_answers(self, c: Console) -> bool:
        """What users see on the target after the move: bob reads alice's INBOX through the
        target's shared namespace, dave (of the group "team") writes Public/Team, and a mail
        delivered to alice on the target gets her out-of-office reply from the target."""
        from imapclient import IMAPClient

        tgt, ok = self.tgt, True
        for user, folder, want in (("bob", "shared/alice", "lrs"), ("dave", "Public/Team", "lrswi")):
            client = IMAPClient(tgt.host, tgt.port, ssl=False, timeout=20)
            try:
                client.login(user, USERS[user])
                client.list_folders()  # Dovecot answers MYRIGHTS on shared folders it has listed
                typ, data = client._imap._simple_command("MYRIGHTS", folder)
                got = "".join(sorted(data_text(client._imap._untagged_response(typ, data, "MYRIGHTS")[1])))
            finally:
                client.logout()
            same = got == "".join(sorted(want))
            ok &= same
            c.print(
                f"{user} on the target, {folder}: rights {got or '(none)'}" + ("" if same else f" (expected {want})")
            )
        before = len(tgt.sent_messages())
        tgt.deliver(
            "alice",
            b"From: customer@example.org\r\nTo: alice@new.example\r\nSubject: Question\r\n"
            b"Message-ID: <q1@example.org>\r\n\r\nAre you there?\r\n",
            mail_from="customer@example.org",
        )
        deadline = time.monotonic() + 10
        while len(tgt.sent_messages()) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        replies = tgt.sent_messages()[before:]
        if replies and b"alice@new.example" in replies[-1].data:
            c.print(
                "a mail to alice on the target got her out-of-office reply, sent by the target from alice@new.example"
            )
        else:
            ok = False
            c.print("[red]no out-of-office reply from the target[/red]")
        return ok

    def on_workers(self, c: Console, project: Any) -> dict[str, Any]:
        """A new mail for alice, then a delta pass spread over two Celery workers: the ledger
        moved into a throwaway PostgreSQL (``ledger import``), Redis as the broker, two
        ``mailferry worker`` processes; then the ledger moved back into the SQLite file
        (``ledger export``), where the rest of the demo reads it."""
        import subprocess
        import sys
        import tempfile

        from mailferry import api
        from mailferry.config.load import load_project
        from mailferry.sandbox.cluster import PostgresServer, RedisServer
        from mailferry.sandbox.servers import seed_messages

        seed_messages(
            self.src.host,
            self.src.port,
            "alice",
            USERS["alice"],
            "INBOX",
            [b"From: bob@old.example\r\nTo: alice@old.example\r\nSubject: One more\r\n"
             b"Message-ID: <late@old.example>\r\n\r\nArrived after the first passes.\r\n"],
        )
        home = Path(tempfile.mkdtemp(prefix="mailferry-demo-cluster-"))
        os.chmod(home, 0o711)  # noqa: S103 - PostgreSQL, as its own system user, must pass through
        pg = redis = None
        workers: list[subprocess.Popen[bytes]] = []
        try:
            pg, redis = PostgresServer.start(home / "pg"), RedisServer.start(home / "redis")
            os.environ["MAILFERRY_DEMO_LEDGER"], os.environ["MAILFERRY_DEMO_BROKER"] = pg.password, redis.password
            path = self.workdir / "demo-distributed.toml"
            path.write_text(
                self.project_path.read_text(encoding="utf-8").replace(
                    'name = "demo"\n',
                    f'name = "demo"\nledger = "{pg.url}"\nledger_password = "env:MAILFERRY_DEMO_LEDGER"\n',
                    1,
                )
                + f'\n[distributed]\nbroker = "{redis.url}"\nbroker_password = "env:MAILFERRY_DEMO_BROKER"\n',
                encoding="utf-8",
            )
            spread = load_project(path)
            moved = api.ledger_import(spread, project.ledger_path).data
            c.print(
                f"ledger import: {sum(moved['rows'].values())} records from {project.ledger_path.name} into "
                f"PostgreSQL on 127.0.0.1:{pg.port}; Redis on 127.0.0.1:{redis.port} is the broker"
            )
            for i in (1, 2):
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "mailferry", "worker", str(path), "--name", f"demo-worker-{i}",
                         "--loglevel", "WARNING"],
                        stdout=(self.workdir / f"worker-{i}.log").open("wb"),
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            c.print("two workers: mailferry worker demo-distributed.toml --name demo-worker-1 (and -2)")
            r = api.migrate(spread, distributed=True)
            c.print(
                f"mailferry migrate --distributed: {len(r.data['accounts'])} accounts as tasks, copied "
                f"{r.data['copied']} message (alice's new one), exit code {r.exit_code}"
            )
            back = self.workdir / "ledger-from-postgresql.sqlite"
            api.ledger_export(spread, back)
            for extra in ("", "-wal", "-shm"):
                Path(str(project.ledger_path) + extra).unlink(missing_ok=True)
            back.rename(project.ledger_path)
            c.print(f"ledger export: back into {project.ledger_path.name}, where the next steps read it")
            return r.data
        finally:
            for w in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.pid, 9)
                w.wait()
            for server in (pg, redis):
                if server is not None:
                    server.close()
            shutil.rmtree(home, ignore_errors=True)

    def switch_off_source(self) -> None:
        self.src.close()
        self.dav_src.close()

    def stop(self) -> None:
        self.src.close()
        self.tgt.close()
        self.dav_src.close()
        self.dav_tgt.close()
        self.dns.stop()


def zone(*, cut_over: bool) -> list[tuple[str, str, str]]:
    """The demo's DNS: new.example's records; its MX leads to the old server until cut-over."""
    d = "new.example"
    return [
        ("mail.new.example", "A", "127.0.0.1"),
        ("mail.old.example", "A", "127.0.0.2"),
        (d, "MX", f"10 mail.{'new' if cut_over else 'old'}.example"),
        (f"_imaps._tcp.{d}", "SRV", "0 1 993 mail.new.example"),
        (f"_submission._tcp.{d}", "SRV", "0 1 587 mail.new.example"),
        (f"_caldavs._tcp.{d}", "SRV", "0 1 443 mail.new.example"),
        (f"_carddavs._tcp.{d}", "SRV", "0 1 443 mail.new.example"),
        (f"autoconfig.{d}", "CNAME", "mail.new.example"),
        (f"autodiscover.{d}", "CNAME", "mail.new.example"),
        (d, "TXT", "v=spf1 mx -all"),
        (f"_dmarc.{d}", "TXT", "v=DMARC1; p=quarantine"),
        (f"mail._domainkey.{d}", "TXT", "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
    ]


def run_demo(workdir: Path) -> int:
    from mailferry import api
    from mailferry.cli import render
    from mailferry.config.load import load_project

    c = Console(highlight=False)
    org = DemoOrg(workdir, c)
    try:
        project = load_project(org.project_path)
        c.rule("4. mailferry check")
        render.check(api.check(project).data)
        c.rule("5. mailferry plan (dry run)")
        render.plan(api.plan(project, ["alice"]).data)
        c.rule("6. mailferry migrate")
        r = api.migrate(project)
        render.migrate(r.data)
        c.rule("7. mailferry migrate again: a delta pass copies nothing")
        r2 = api.migrate(project)
        c.print(
            f"second pass copied {r2.data['copied']} messages and {r2.data['calendars']['copied']} calendar items "
            f"in {r2.data['seconds']:.2f} s"
        )
        c.rule("8. the same project on workers: PostgreSQL ledger, Redis broker, migrate --distributed")
        spread = org.on_workers(c, project)
        c.rule("9. mailferry verify --deep")
        v = api.verify(project, deep=True)
        render.verify(v.data)
        c.rule("10. mailferry report")
        render.report(api.report(project).data)
        c.rule("11. the target on its own: sharing and the out-of-office reply")
        answers = org.target_answers(c)
        c.rule("12. mailferry cutover check: what still depends on the old server")
        before = api.cutover_check(project)
        render.cutover_check(before.data)
        # alice's pass on the workers noted again that a folder of hers arrives under another
        # name ('a/b test' holds the target's separator): seen and accepted, so acknowledged.
        api.cutover_ack(project, "alice", "folder-name")
        c.print("mailferry cutover ack demo.toml --account alice --kind folder-name: the renamed folder is accepted")
        c.rule("13. switch the MX to the new server, switch the old servers off, cutover check --simulate-offline")
        org.dns.set_records(zone(cut_over=True))
        org.switch_off_source()
        after = api.cutover_check(project, simulate_offline=True)
        render.cutover_check(after.data)
        alone = after.exit_code == 0 and before.exit_code != 0
        distributed = spread["exit_code"] == 0 and spread["copied"] == 1
        ok = v.data["clean"] and r2.data["copied"] == 0 and r2.data["calendars"]["copied"] == 0 and answers and alone
        ok = ok and distributed
        c.print(f"\nproject, ledger and reports are in {org.workdir}")
        c.print("demo finished: " + ("verification CLEAN" if ok else "PROBLEMS (see above)"))
        return 0 if ok else 1
    finally:
        org.stop()


def run_demo_console(workdir: Path, *, port: int = 8765) -> int:
    """The demo organization, then the console on its project until Ctrl-C (the servers with it)."""
    from mailferry.console.serve import serve

    c = Console(highlight=False)
    org = DemoOrg(workdir, c)
    try:
        c.rule("4. mailferry console")
        c.print(
            "the wizard: Servers (test connection), People and accounts (tick accounts, name a batch), "
            "Plan, Run, Results"
        )
        return serve(org.workdir, port=port)
    finally:
        org.stop()
