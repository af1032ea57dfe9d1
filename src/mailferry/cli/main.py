"""The command line: argv + environment -> exit code. Only this package reads argv or the terminal.

Imports of the heavier parts (rich, the engine) happen inside the commands so that a no-op
delta pass starts fast.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from mailferry.errors import EXIT_CODE_HELP, ConfigError, ExitCode, MailferryError

HELP = (
    "mailferry: move a mail organization between servers (IMAP mailboxes, LDAP directory), exactly "
    "once, verifiably.\n\n"
    "Typical flow: init -> directory plan/apply (optional) -> check -> plan -> migrate (again and "
    "again as delta passes) -> verify --deep.\n\n"
    "\b\n"  # click: keep the following lines as they are
    f"{EXIT_CODE_HELP}\n"
)

app = typer.Typer(
    help=HELP,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ProjectArg = Annotated[Path, typer.Argument(help="the project file (TOML) written by 'mailferry init'")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
AccountOpt = Annotated[list[str] | None, typer.Option("--account", "-a", help="only this source account (repeatable)")]
BatchOpt = Annotated[
    str | None, typer.Option("--batch", "-b", help="only the accounts of this batch (the project file's [batches])")
]


class Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _load(project: Path) -> Any:
    from mailferry.config.load import load_project

    return load_project(project)


def _accounts(project: Any, account: list[str] | None, batch: str | None) -> list[str] | None:
    """The accounts named by --account and --batch together (None: all)."""
    if batch is None:
        return account
    from mailferry.errors import UsageError

    if batch not in project.batches:
        known = ", ".join(repr(b) for b in project.batches) or "none yet"
        raise UsageError(f"--batch: no batch {batch!r} in the project file", hint=f"batches: {known}")
    return list(dict.fromkeys([*project.batches[batch], *(account or [])]))


def _emit(data: dict[str, Any], as_json: bool, human: Any) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    else:
        human(data)


@app.command()
def init(
    project: ProjectArg,
    source: Annotated[
        str, typer.Option(help="source server: imaps://host:993, imap+starttls://host:143, imap://host:143")
    ],
    target: Annotated[str, typer.Option(help="target server URL, same forms")],
    accounts: Annotated[
        str, typer.Option(help="accounts CSV: source_user,target_user[,source_password,target_password]")
    ],
    source_admin: Annotated[str | None, typer.Option(help="admin login used for every source mailbox")] = None,
    source_admin_password: Annotated[
        str | None, typer.Option(help="its password reference: env:NAME or file:PATH")
    ] = None,
    target_admin: Annotated[str | None, typer.Option(help="admin login used for every target mailbox")] = None,
    target_admin_password: Annotated[
        str | None, typer.Option(help="its password reference: env:NAME or file:PATH")
    ] = None,
    ledger: Annotated[str | None, typer.Option(help="ledger path (default: next to the project file)")] = None,
    source_dav: Annotated[
        str | None, typer.Option(help="source CalDAV/CardDAV base URL: https://host/ (http:// on loopback)")
    ] = None,
    target_dav: Annotated[str | None, typer.Option(help="target CalDAV/CardDAV base URL")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing project file")] = False,
) -> None:
    """Write a commented project file to start from."""
    from mailferry.config.template import render_project
    from mailferry.errors import UsageError

    if project.exists() and not force:
        raise UsageError(f"{project} exists already", hint="choose another name or pass --force")
    text = render_project(
        name=project.stem,
        source_url=source,
        target_url=target,
        accounts_csv=accounts,
        source_admin=source_admin,
        source_admin_password=source_admin_password,
        target_admin=target_admin,
        target_admin_password=target_admin_password,
        ledger=ledger,
        source_dav=source_dav,
        target_dav=target_dav,
    )
    project.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {project}: review it, then run 'mailferry check {project}'")


@app.command()
def check(
    project: ProjectArg,
    account: AccountOpt = None,
    batch: BatchOpt = None,
    as_json: JsonOpt = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 on warnings too (default: only on blockers).")
    ] = False,
) -> None:
    """Readiness of the organization and of every account: services, DNS, certificates, network,
    directory, and per account connect, TLS, login, capabilities, sizes, quota, what won't survive.
    A verdict per area and account (ready / ready with warnings / blocked); exit code 0 unless blocked."""
    from mailferry import api
    from mailferry.cli import render

    proj = _load(project)
    r = api.check(proj, _accounts(proj, account, batch))
    code = r.exit_code
    if strict and not code and r.data.get("verdict") != "ready":
        code = r.data["exit_code"] = int(ExitCode.FINDINGS)
    _emit(r.data, as_json, render.check)
    raise Exit(code)


@app.command()
def plan(project: ProjectArg, account: AccountOpt = None, batch: BatchOpt = None, as_json: JsonOpt = False) -> None:
    """The dry run: folder map, messages and bytes to copy, every skip with its reason. Writes nothing."""
    from mailferry import api
    from mailferry.cli import render

    proj = _load(project)
    r = api.plan(proj, _accounts(proj, account, batch))
    _emit(r.data, as_json, render.plan)
    raise Exit(r.exit_code)


@app.command()
def migrate(
    project: ProjectArg,
    account: AccountOpt = None,
    batch: BatchOpt = None,
    as_json: JsonOpt = False,
    full: Annotated[bool, typer.Option("--full", help="re-examine every folder, ignoring the fast path")] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="only these item types, comma-separated: mail, calendars, contacts, filters, public, permissions, "
            "metadata",
        ),
    ] = None,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed", help="each account a task for the project's workers ([distributed]); follow them here"
        ),
    ] = False,
) -> None:
    """Copy what is new or changed since the last pass (every run is a delta pass)."""
    from mailferry import api

    proj = _load(project)
    account = _accounts(proj, account, batch)
    kinds = [t.strip() for t in only.split(",") if t.strip()] if only else None
    if as_json:  # machines: no live display, and no need to import rich (a no-op pass starts faster)
        r = api.migrate(proj, account, full=full, only=kinds, distributed=distributed)
        _emit(r.data, True, None)
        raise Exit(r.exit_code)
    from mailferry.cli import progress, render

    reporter = progress.make_reporter(quiet=False)
    with reporter:
        r = api.migrate(proj, account, reporter=reporter, full=full, only=kinds, distributed=distributed)
    _emit(r.data, False, render.migrate)
    raise Exit(r.exit_code)


@app.command()
def verify(
    project: ProjectArg,
    account: AccountOpt = None,
    batch: BatchOpt = None,
    as_json: JsonOpt = False,
    deep: Annotated[bool, typer.Option("--deep", help="also compare SHA-256 of every full message")] = False,
) -> None:
    """Compare source and target per folder and per message; list exactly what is missing, extra or altered."""
    from mailferry import api
    from mailferry.cli import render

    proj = _load(project)
    r = api.verify(proj, _accounts(proj, account, batch), deep=deep)
    _emit(r.data, as_json, render.verify)
    raise Exit(r.exit_code)


@app.command()
def report(
    project: ProjectArg,
    as_json: JsonOpt = False,
    run: Annotated[int | None, typer.Option(help="only this run number")] = None,
) -> None:
    """What each run did, per account: copied, skipped, refused and why, durations and rates."""
    from mailferry import api
    from mailferry.cli import render

    r = api.report(_load(project), run)
    _emit(r.data, as_json, render.report)
    raise Exit(r.exit_code)


directory_app = typer.Typer(
    help="Match, create and merge people across directories (LDAP), and keep their old addresses alive.",
    no_args_is_help=True,
)
app.add_typer(directory_app, name="directory")


@directory_app.command("discover")
def directory_discover(project: ProjectArg, as_json: JsonOpt = False) -> None:
    """The containers (OUs) of both directories, with how many users, contacts and groups each holds."""
    from mailferry import api
    from mailferry.cli import render

    r = api.directory_discover(_load(project))
    _emit(r.data, as_json, render.directory_discover)
    raise Exit(r.exit_code)


OutcomeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--outcome",
        help="list only people of this outcome (repeatable): matched, to_create, contact_to_merge, ambiguous, conflict",
    ),
]


@directory_app.command("plan")
def directory_plan(project: ProjectArg, as_json: JsonOpt = False, outcome: OutcomeOpt = None) -> None:
    """For every source person: matched (by which rule), to create, contact to merge, ambiguous or
    conflict, the changes apply would make, and whether the target allows them (preconditions; exit
    code 78 when one fails: apply would write nothing). Writes nothing."""
    from mailferry import api
    from mailferry.cli import render

    r = api.directory_plan(_load(project), outcome)
    _emit(r.data, as_json, render.directory_plan)
    raise Exit(r.exit_code)


@directory_app.command("apply")
def directory_apply(project: ProjectArg, as_json: JsonOpt = False) -> None:
    """Carry the plan out on the target: create disabled users, merge contacts, keep old addresses,
    set mail attributes and managers, confirm mailboxes, and write the accounts CSV that migrate
    reads. A failing precondition writes nothing (exit code 78)."""
    from mailferry import api

    proj = _load(project)
    if as_json:
        r = api.directory_apply(proj)
        _emit(r.data, True, None)
        raise Exit(r.exit_code)
    from mailferry.cli import progress, render

    reporter = progress.make_directory_reporter()
    with reporter:
        r = api.directory_apply(proj, reporter=reporter)
    _emit(r.data, False, render.directory_apply)
    raise Exit(r.exit_code)


@directory_app.command("prepare")
def directory_prepare(
    project: ProjectArg,
    as_json: JsonOpt = False,
    apply: Annotated[bool, typer.Option("--apply", help="add what mailferry may add (shown first without it)")] = False,
) -> None:
    """What the target directory lacks for the directory plan (containers, schema, the right to
    create users), shown as LDIF; with --apply, mailferry adds what it may (containers; OpenLDAP
    schema under cn=config) and looks again. It says what only the admin can do (an AD schema
    extension, rights). Exit code 0 when the target is prepared, 78 while something is missing."""
    from mailferry import api
    from mailferry.cli import render

    r = api.directory_prepare(_load(project), apply=apply)
    _emit(r.data, as_json, render.directory_prepare)
    raise Exit(r.exit_code)


@app.command()
def worker(
    project: ProjectArg,
    name: Annotated[str | None, typer.Option("--name", help="this worker's name (default: mailferry@HOST)")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", help="accounts at once (default: [distributed] accounts_per_worker)"),
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="Celery's log level")] = "INFO",
    once: Annotated[bool, typer.Option("--once", hidden=True, help="the Celery worker itself, unsupervised")] = False,
) -> None:
    """Run a Celery worker for the project: it takes the accounts of 'migrate --distributed' runs
    one at a time each (run one per machine; the project file and its secrets must be there too).
    The worker is started again if it stops on an error (a broker that went away has crashed
    Celery's worker); stop it with Ctrl-C or SIGTERM."""
    import socket

    proj = _load(project)
    hostname = name or "mailferry@" + socket.gethostname()
    if once:
        from mailferry.distributed.app import make_app, queue_name
        from mailferry.distributed.supervise import exit_when_stuck_after_unrecoverable_error

        exit_when_stuck_after_unrecoverable_error()

        argv = [
            "worker",
            f"--loglevel={loglevel}",
            f"--hostname={hostname}",
            f"--queues={queue_name(proj)}",
            "--without-mingle",
            "--without-gossip",
        ]
        if concurrency:
            argv.append(f"--concurrency={concurrency}")
        make_app(proj).worker_main(argv=argv)
        raise Exit(0)
    from mailferry.distributed.supervise import supervise

    argv = [sys.executable, "-m", "mailferry", "worker", str(project), "--once", "--name", hostname]
    argv += ["--loglevel", loglevel] + (["--concurrency", str(concurrency)] if concurrency else [])
    raise Exit(supervise(argv))


ledger_app = typer.Typer(help="Move a project's ledger between SQLite and PostgreSQL.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("export")
def ledger_export(
    project: ProjectArg,
    to: Annotated[Path, typer.Option("--to", help="a new SQLite file to write the ledger into")],
    as_json: JsonOpt = False,
) -> None:
    """Copy the project's ledger (SQLite or PostgreSQL) into a new SQLite file."""
    from mailferry import api

    r = api.ledger_export(_load(project), to)
    _emit(r.data, as_json, lambda d: typer.echo(f"exported {sum(d['rows'].values())} records to {d['to']}"))
    raise Exit(r.exit_code)


@ledger_app.command("import")
def ledger_import(
    project: ProjectArg,
    source: Annotated[Path, typer.Option("--from", help="a SQLite ledger file (e.g. the project's before)")],
    as_json: JsonOpt = False,
) -> None:
    """Copy a SQLite ledger into the project's ledger (e.g. PostgreSQL, before going distributed),
    which must be empty."""
    from mailferry import api

    r = api.ledger_import(_load(project), source)
    _emit(r.data, as_json, lambda d: typer.echo(f"imported {sum(d['rows'].values())} records from {d['from']}"))
    raise Exit(r.exit_code)


cutover_app = typer.Typer(
    help="Before and after switching the source off: what still depends on the old servers.",
    no_args_is_help=True,
)
app.add_typer(cutover_app, name="cutover")


@cutover_app.command("check")
def cutover_check(
    project: ProjectArg,
    account: AccountOpt = None,
    batch: BatchOpt = None,
    as_json: JsonOpt = False,
    simulate_offline: Annotated[
        bool,
        typer.Option(
            "--simulate-offline",
            help="refuse mailferry's own connections to the source and prove the target stands alone",
        ),
    ] = False,
) -> None:
    """Every dependency on the source that remains, each with what breaks and the fix: DNS (MX,
    SRV, autoconfig still at the source), data on the target naming the old server or old
    addresses (calendar links, Sieve redirects, vCards, unmapped permissions), progress (accounts
    not migrated, findings not resolved or acknowledged, passes older than the window). Exit code 0
    unless something is blocked."""
    from mailferry import api
    from mailferry.cli import render

    proj = _load(project)
    r = api.cutover_check(proj, _accounts(proj, account, batch), simulate_offline=simulate_offline)
    _emit(r.data, as_json, render.cutover_check)
    raise Exit(r.exit_code)


@cutover_app.command("ack")
def cutover_ack(
    project: ProjectArg,
    account: Annotated[str, typer.Option("--account", "-a", help="the source account")],
    kind: Annotated[str, typer.Option("--kind", help="the finding kind, as the report names it")],
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge an account's findings of one kind: 'cutover check' no longer counts them (the
    report still lists them). Recorded in the ledger."""
    from mailferry import api

    r = api.cutover_ack(_load(project), account, kind)
    _emit(r.data, as_json, lambda d: typer.echo(f"acknowledged: {d['account']}: {d['kind']}"))
    raise Exit(r.exit_code)


@directory_app.command("restore")
def directory_restore(
    project: ProjectArg,
    as_json: JsonOpt = False,
    contact: Annotated[str | None, typer.Option("--contact", help="only this merged contact (its DN)")] = None,
) -> None:
    """Undo contact merges: put each merged contact (or --contact) back from the ledger, into its
    groups, and take from its user what the merge gave it. The LDIF is written beside the report."""
    from mailferry import api
    from mailferry.cli import render

    r = api.directory_restore(_load(project), contact)
    _emit(r.data, as_json, render.directory_restore)
    raise Exit(r.exit_code)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the throwaway servers and the project live")] = Path("demo-run"),
    console: Annotated[
        bool, typer.Option("--console", help="set the organization up, then serve the console on it (until Ctrl-C)")
    ] = False,
    port: Annotated[int, typer.Option(help="with --console: the port to listen on (127.0.0.1)")] = 8765,
) -> None:
    """Start two throwaway local Dovecot servers, seed a sample organization, migrate, verify, report;
    with --console, serve the migration console on it instead."""
    from mailferry.cli.demo import run_demo, run_demo_console

    raise Exit(run_demo_console(workdir, port=port) if console else run_demo(workdir))


@app.command()
def console(
    project_dir: Annotated[
        Path, typer.Argument(help="the project folder (its one *.toml file; a new one is made there) or a project file")
    ],
    port: Annotated[int, typer.Option(help="the port to listen on (0: any free port)")] = 8765,
    listen: Annotated[
        str, typer.Option(help="the address to listen on; other than loopback only with --certificate and --key")
    ] = "127.0.0.1",
    certificate: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) for https")] = None,
    key: Annotated[Path | None, typer.Option(help="its private key (PEM)")] = None,
) -> None:
    """The migration console: a web wizard (servers, directory, people, plan, run, results) on this
    machine. Prints a URL with a one-time access token to log in."""
    from mailferry.console.serve import serve

    raise Exit(serve(project_dir, host=listen, port=port, certificate=certificate, key=key))


def _cli_exceptions() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(usage errors, exits) of the argument parser: typer >= 0.26 vendors click as typer._click."""
    usage: list[type[BaseException]] = []
    exits: list[type[BaseException]] = [typer.Exit]
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            m = __import__(mod, fromlist=["UsageError"])
        except ImportError:
            continue
        usage.append(m.UsageError)
        exits.extend(getattr(m, name) for name in ("Exit",) if hasattr(m, name))
    return tuple(usage), tuple(exits)


def _tune_malloc() -> None:
    """Keep the memory of message bodies returnable to the system.

    glibc raises its mmap threshold after big blocks are freed, so later message buffers land in
    per-thread heap arenas that never shrink: the 8-account benchmark's RSS grew past 280 MB with
    a 64 MB in-flight budget. A fixed 1 MiB threshold and two arenas keep it near the budget
    (now 128 MB: ~200 MB peak for 8 accounts).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_mmap_threshold, 1 << 20)
    libc.mallopt(m_arena_max, 2)


def run(argv: list[str] | None = None) -> int:
    """Entry point: returns (and exits with) the documented exit code."""
    _tune_malloc()
    code = main(argv)
    sys.exit(code)


def _json_error(
    argv: list[str], fault: str, message: str, exit_code: int, hint: str = "", problems: Sequence[str] = ()
) -> None:
    """With --json, the error goes to stdout as JSON too (schemas/error.schema.json), so that a
    script reading stdout always gets an object with ``exit_code``."""
    if "--json" not in argv:
        return
    words = [a for a in argv if not a.startswith("-")]
    command = " ".join(words[:2]) if words[:1] == ["directory"] else (words[0] if words else "")
    data = {
        "command": command,
        "error": {"fault": fault, "message": message, "hint": hint, "problems": list(problems)},
        "exit_code": exit_code,
    }
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage_errors, exits = _cli_exceptions()
    try:
        app(args=args, prog_name="mailferry", standalone_mode=False)
        return 0
    except Exit as e:
        return e.code
    except exits as e:
        return int(getattr(e, "exit_code", 0))
    except usage_errors as e:
        text = e.format_message()  # type: ignore[attr-defined]
        sys.stderr.write(f"mailferry: {text}\n(see 'mailferry --help')\n")
        _json_error(args, "usage", text, int(ExitCode.USAGE), "see 'mailferry --help'")
        return int(ExitCode.USAGE)
    except ConfigError as e:
        sys.stderr.write("mailferry: the project has problems:\n")
        for p in e.problems:
            sys.stderr.write(f"  - {p}\n")
        sys.stderr.write(f"next step: {e.hint}\n")
        _json_error(args, e.fault, e.message, int(e.exit_code), e.hint, e.problems)
        return int(e.exit_code)
    except MailferryError as e:
        sys.stderr.write(f"mailferry: {e.message}\n")
        if e.hint:
            sys.stderr.write(f"next step: {e.hint}\n")
        _json_error(args, e.fault, e.message, int(e.exit_code), e.hint)
        return int(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: run the same command again to resume\n")
        _json_error(args, "usage", "interrupted", int(ExitCode.TEMPFAIL), "run the same command again to resume")
        return int(ExitCode.TEMPFAIL)
    except Exception as e:
        traceback.print_exc()
        sys.stderr.write("mailferry: internal error (a bug): please report the traceback above\n")
        _json_error(
            args,
            "internal",
            f"internal error: {type(e).__name__}",
            int(ExitCode.INTERNAL),
            "report the traceback (stderr)",
        )
        return int(ExitCode.INTERNAL)
