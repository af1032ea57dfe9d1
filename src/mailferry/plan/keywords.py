"""Which keywords a target stores, learned from what it accepted and refused. Pure: no I/O.

A target's PERMANENTFLAGS may say ``\\*`` (any keyword) and the target still refuse some:
Dovecot refuses an APPEND or STORE with a keyword longer than ``mail_max_keyword_length``
(default 50 bytes) with ``NO [CANNOT] Keyword length too long``, and refuses the whole message
with it. Nothing in the protocol announces such a limit, so the engine learns it from the target
during the run, and this module holds what was learned and what it predicts:

=====================================================  ======================================
what the target showed (this run)                      verdict for keyword K in folder F
=====================================================  ======================================
it refused K in F                                      refused
it refused keywords, the shortest N bytes long, and    refused when K is N bytes or longer
accepted none as long (refusals look like a length
limit: Dovecot's)
it stored K in F                                       stored
otherwise                                              unknown: sent, and resolved if refused
=====================================================  ======================================

Refusals are remembered per target folder (a limit can be per folder: Cyrus allows a mailbox
128 keywords), the length rule for the whole target. So each length over the limit costs the run
at most one refused command per writer before it is learned, not one per message, and a keyword
the target does store is never dropped for a guess: the length rule holds only while no keyword
as long was ever accepted. Keywords are compared case-insensitively (RFC 9051 2.3.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["stored", "refused", "unknown"]

COMMON_LIMIT = 50
"""Bytes: keywords longer than this are refused by Dovecot by default (``mail_max_keyword_length``).
Only for ``check``'s warning, which can't ask the target without writing to it; migrate learns the
real limit from the target itself."""


def is_keyword(flag: str) -> bool:
    """A keyword, as opposed to a system flag (``\\Seen``)."""
    return not flag.startswith("\\")


def _size(keyword: str) -> int:
    return len(keyword.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class KeywordLimits:
    """What one target has shown of the keywords it stores (see the module docstring)."""

    stored: frozenset[tuple[str, str]] = frozenset()  # (target folder, keyword casefolded)
    refused: frozenset[tuple[str, str]] = frozenset()
    longest_stored: int = 0  # bytes, any folder

    @property
    def refused_from(self) -> int | None:
        """Keywords of this many bytes or more are presumed refused (None: no length rule)."""
        if not self.refused:
            return None
        shortest = min(_size(k) for _, k in self.refused)
        return shortest if shortest > self.longest_stored else None

    def verdict(self, folder: str, keyword: str) -> Verdict:
        k = keyword.casefold()
        if (folder, k) in self.refused:
            return "refused"
        limit = self.refused_from
        if limit is not None and _size(keyword) >= limit:
            return "refused"
        return "stored" if (folder, k) in self.stored else "unknown"

    def reason(self, folder: str, keyword: str) -> str:
        """Why a keyword with the verdict "refused" is."""
        if (folder, keyword.casefold()) in self.refused:
            return "the target refused it in this folder earlier in this run"
        return f"the target refuses keywords of {self.refused_from} bytes or more (learned in this run)"

    def split(self, folder: str, flags: Iterable[str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """(flags to send, (keyword, reason) of each one known to be refused)."""
        keep: list[str] = []
        drop: list[tuple[str, str]] = []
        for f in flags:
            if is_keyword(f) and self.verdict(folder, f) == "refused":
                drop.append((f, self.reason(folder, f)))
            else:
                keep.append(f)
        return tuple(keep), tuple(drop)

    def unknown(self, folder: str, flags: Iterable[str]) -> tuple[str, ...]:
        """The keywords among ``flags`` the target has not shown it stores in ``folder``."""
        return tuple(f for f in flags if is_keyword(f) and self.verdict(folder, f) == "unknown")

    def learn(self, folder: str, stored: Iterable[str] = (), refused: Iterable[str] = ()) -> KeywordLimits:
        """These keywords were stored in / refused by ``folder`` of the target."""
        kept = [k for k in stored if is_keyword(k)]
        new_stored = {(folder, k.casefold()) for k in kept}
        new_refused = {(folder, k.casefold()) for k in refused if is_keyword(k)}
        if new_stored <= self.stored and new_refused <= self.refused:
            return self
        return KeywordLimits(
            stored=self.stored | new_stored,
            refused=self.refused | new_refused,
            longest_stored=max([self.longest_stored, *(_size(k) for k in kept)]),
        )
