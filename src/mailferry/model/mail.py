"""Pure value types for mail: folders, messages, their location (ItemRef) and identity (ItemKey).

Terminology (used the same way everywhere in mailferry):

account     one person's mailbox on one server (a login), e.g. ``alice``.
mailbox     everything an account holds: its folders and their messages.
folder      one IMAP mailbox name in an account (``INBOX``, ``Projects/2024``).
message     one stored RFC 5322 message with its INTERNALDATE and flags.
ItemRef     where a message lives on one server: (folder, UIDVALIDITY, UID). Changes on copy.
ItemKey     what makes two copies the same message: a hash of its Message-ID, chosen header
            fields and its size. Never used as a location.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Namespace:
    """The personal namespace of an account: the prefix of its folders and their delimiter."""

    prefix: str
    delimiter: str


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """One folder as LIST shows it. ``name`` is decoded (modified UTF-7 undone) Unicode.

    ``attributes`` are lower-cased (``\\noselect``, ``\\haschildren``); ``special_use`` is the
    RFC 6154 use in canonical case (``\\Sent``) or None.
    """

    name: str
    delimiter: str | None
    attributes: frozenset[str] = frozenset()
    special_use: str | None = None
    subscribed: bool = False

    @property
    def selectable(self) -> bool:
        return "\\noselect" not in self.attributes and "\\nonexistent" not in self.attributes


@dataclass(frozen=True, slots=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None = None


@dataclass(frozen=True, slots=True)
class ItemRef:
    folder: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What an inventory knows of one message without reading its body."""

    uid: int
    size: int
    internaldate: datetime
    flags: tuple[str, ...]
    key: str  # the ItemKey, see formats.identity
    message_id: str = ""
    subject: str = ""
    date: str = ""
    modseq: int | None = None


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One message to append: exact bytes, flags and INTERNALDATE as the source served them."""

    body: bytes
    flags: tuple[str, ...]
    internaldate: datetime
    source_uid: int = 0


@dataclass(slots=True)
class ServerInfo:
    """What ``check`` learns of one side for one account."""

    capabilities: frozenset[str] = frozenset()
    namespace: Namespace = field(default_factory=lambda: Namespace("", "/"))
    appendlimit: int | None = None
    quota_used_kb: int | None = None
    quota_limit_kb: int | None = None
