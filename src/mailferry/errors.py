"""One error hierarchy: each error knows whose fault it is, its exit code and the operator's next step.

Exit codes are an operations contract (after Dovecot dsync and sysexits.h):

====  ==========================================================================
code  meaning
====  ==========================================================================
0     done and clean
1     finished with findings (items refused by the target or skipped)
2     done, but the source changed during the run: run again before cut-over
64    usage: the command line is wrong
70    internal error: a bug in mailferry (a traceback is printed)
75    temporary failure: a server was unreachable or throttling; retry later
77    authentication failed
78    configuration: the project file (or a file it names) is wrong, or the target directory
      does not allow what it asks (directory plan/apply preconditions; nothing is written)
====  ==========================================================================

The messages of these exceptions are shown to operators and written to reports, so they must
never contain a secret: code that builds them passes names and server words, never passwords.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FINDINGS = 1
    SOURCE_CHANGED = 2
    USAGE = 64
    INTERNAL = 70
    TEMPFAIL = 75
    AUTH = 77
    CONFIG = 78


EXIT_CODE_HELP = """Exit codes:
  0   done and clean
  1   finished with findings (items refused or skipped: see the report)
  2   done, but the source changed during the run (run again before cut-over)
  64  usage error
  70  internal error (a bug: please report the traceback)
  75  temporary failure (server unreachable or throttling, or another run holds the project: retry later)
  77  authentication failed
  78  configuration error (the project file, a secret reference, a TLS certificate that does not verify;
      a target directory that does not allow the directory plan: nothing was written)"""


class MailferryError(Exception):
    """Base of every error mailferry raises on purpose.

    ``fault`` says whose fault it is: ``"config"`` (the operator's files), ``"server"`` (a peer
    did wrong or is unavailable), ``"usage"`` or ``"internal"``. ``hint`` is the operator's next step.
    """

    exit_code: ExitCode = ExitCode.INTERNAL
    fault: str = "internal"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(MailferryError):
    exit_code = ExitCode.USAGE
    fault = "usage"


class ConfigError(MailferryError):
    """The project file or a file it names is wrong. ``problems`` holds every problem found."""

    exit_code = ExitCode.CONFIG
    fault = "config"

    def __init__(self, problems: list[str], *, hint: str = "fix the project file and run again") -> None:
        self.problems = list(problems)
        super().__init__("; ".join(problems) if problems else "configuration error", hint=hint)


class ServerError(MailferryError):
    """A server answered with something we cannot work with (the peer did wrong)."""

    exit_code = ExitCode.TEMPFAIL
    fault = "server"


class TemporaryFailure(ServerError):
    """Unreachable, dropped connection, time-out or throttling: retrying later may succeed."""

    exit_code = ExitCode.TEMPFAIL


class LedgerUnavailable(TemporaryFailure):
    """The ledger's database does not answer (PostgreSQL down or unreachable): no work can be
    recorded, so none is done until it answers."""


class Throttled(TemporaryFailure):
    """The server said it is overloaded (HTTP 429 or 503): the same request later will do.
    ``retry_after``: the seconds it asked for (its ``Retry-After``), None when it named none."""

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class AuthError(ServerError):
    exit_code = ExitCode.AUTH

    def __init__(self, message: str, *, hint: str = "check the login name and the password reference") -> None:
        super().__init__(message, hint=hint)


class TLSVerifyError(ServerError):
    """The server's certificate did not verify. A configuration matter, not a transient one."""

    exit_code = ExitCode.CONFIG

    def __init__(
        self, message: str, *, hint: str = "give the server's CA with ca_file, or fix its certificate"
    ) -> None:
        super().__init__(message, hint=hint)


class MailboxCollision(MailferryError):
    """Two accounts of the project hold one and the same mailbox on the target (the same server
    id): writing into it would show one person's mail to another. The target must be repaired."""

    exit_code = ExitCode.CONFIG
    fault = "server"

    def __init__(self, mailbox_id: str, accounts: tuple[str, ...], folders: tuple[str, ...]) -> None:
        self.mailbox_id = mailbox_id
        self.accounts = accounts
        self.folders = folders
        where = ", ".join(f"{a} ({f})" for a, f in zip(accounts, folders, strict=True))
        super().__init__(
            f"target accounts {where} are one and the same mailbox on the server (mailbox id {mailbox_id}); "
            "nothing was written to any of them",
            hint="repair the target server first (each account needs a mailbox of its own: delete and recreate "
            "the mailboxes of these accounts one at a time), then run again",
        )

    def as_dict(self) -> dict[str, object]:
        """As findings' details and --json show it (schemas: common.schema.json#/$defs/collision)."""
        return {"mailbox_id": self.mailbox_id, "accounts": list(self.accounts), "folders": list(self.folders)}


class ItemRefused(ServerError):
    """The target refused one item (too large, malformed, over quota). Becomes a finding.

    ``status``: the HTTP status of a DAV refusal (403, 409, 412, 415, 507...), 0 for IMAP."""

    def __init__(self, message: str, *, hint: str = "", status: int = 0) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class LockedError(MailferryError):
    """Another mailferry run holds the project's ledger."""

    exit_code = ExitCode.TEMPFAIL
    fault = "usage"
