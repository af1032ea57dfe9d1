"""What an account's pass asks of whoever shares the servers with it (a distributed run's
workers): the engines call these hooks; a local run passes none and paces itself.

The hooks are the seam between the engines and :mod:`mailferry.distributed.limits`: the engines
know when they write and when a server throttled them, the cluster knows the servers' limits.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol


class Pacing(Protocol):
    def pace_mail(self, messages: int, nbytes: int) -> None:
        """Before each batch written to the IMAP target: wait for the cluster's rate and pauses."""

    def mail_throttled(self) -> None:
        """A write to the IMAP target failed temporarily: every worker pauses its writes there."""

    def pace_dav(self, side: str, items: int, nbytes: int) -> None:
        """Before each read from (``side`` "source") or write to ("target") a DAV server."""

    def dav_throttled(self, side: str, seconds: float) -> None:
        """That DAV server answered 429/503: every worker pauses there ``seconds``."""

    def dav_connections(self) -> AbstractContextManager[None]:
        """Held around an account's calendars and contacts: its connections to both DAV servers
        counted against their ``max_connections`` across the cluster."""
