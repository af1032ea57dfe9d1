"""Retrying access to a store: reconnect with exponential backoff, bounded attempts.

Only idempotent operations are retried here. An APPEND cut off mid-way may or may not have
landed, so it is never blindly repeated: the engine resolves it from the ledger's recorded
intent by looking at the target (see :mod:`mailferry.engine.migrate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from mailferry.errors import TemporaryFailure

T = TypeVar("T")


class Reconnectable(Protocol):
    label: str

    def reconnect(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.2
    max_delay: float = 10.0

    def delays(self) -> list[float]:
        return [min(self.first_delay * (2**i), self.max_delay) for i in range(max(self.attempts - 1, 0))]


def retrying(
    store: Reconnectable,
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """Run ``fn``; on a temporary failure reconnect ``store`` after a growing pause and run it again."""
    delays = policy.delays()
    for attempt in range(len(delays) + 1):
        try:
            return fn()
        except TemporaryFailure as e:
            if attempt >= len(delays):
                raise
            if on_retry is not None:
                on_retry(f"{e.message}; retrying in {delays[attempt]:.1f} s ({attempt + 1}/{len(delays)})")
            sleep(delays[attempt])
            try:
                store.reconnect()
            except TemporaryFailure:
                continue  # counted by the next attempt
    raise AssertionError("unreachable")
