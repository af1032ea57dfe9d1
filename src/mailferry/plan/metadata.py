"""Folder METADATA (RFC 5464): which entries to set on the target, per account. Pure.

Carried entries: :data:`ENTRIES` (the folder's comments, RFC 5464 3.2). Records in the ledger's
``settings`` table, kind ``metadata``: key ``<source folder> NUL <entry>``, value the SHA-256 of
the source's value as last carried, target ``<target folder> NUL <entry>``.

=============================================  ===============================================
source entry                                   action
=============================================  ===============================================
folder not carried                             nothing
no value, nothing recorded                     nothing
no value, recorded as set                      remove (SETMETADATA NIL): carried removal of
                                               what mailferry set; nothing else is removed
recorded as set with the same value            nothing (a second pass writes nothing)
target without METADATA                        skip, finding ``metadata-unsupported``
otherwise                                      set
=============================================  ===============================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from mailferry.plan.acl import SEP, Recorded

ENTRIES: tuple[str, ...] = ("/private/comment", "/shared/comment")


def metadata_key(folder: str, entry: str) -> str:
    return f"{folder}{SEP}{entry}"


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


@dataclass(frozen=True, slots=True)
class SetMetadata:
    source_folder: str
    target_folder: str
    entry: str
    value: bytes | None  # None: remove
    reason: str

    @property
    def key(self) -> str:
        return metadata_key(self.source_folder, self.entry)

    @property
    def target(self) -> str:
        return SEP.join((self.target_folder, self.entry))


@dataclass(frozen=True, slots=True)
class MetadataSkip:
    source_folder: str
    entry: str
    reason: str
    finding: str | None = None


MetadataAction = SetMetadata | MetadataSkip


def plan_metadata(
    source: Mapping[str, Mapping[str, bytes | None]],
    folders: Mapping[str, str | None],
    recorded: Mapping[str, Recorded],
    *,
    target_supported: bool,
) -> list[MetadataAction]:
    """``source``: folder -> entry -> value (None: none) for each folder read this pass."""
    out: list[MetadataAction] = []
    for folder in sorted(source):
        tf = folders.get(folder)
        if tf is None:
            continue
        for entry in sorted(source[folder]):
            value = source[folder][entry]
            rec = recorded.get(metadata_key(folder, entry))
            if value is None:
                if rec is not None and rec.state == "set":
                    out.append(SetMetadata(folder, tf, entry, None, "removed on the source since mailferry set it"))
                continue
            if rec is not None and rec.state == "set" and rec.value == digest(value):
                continue
            if not target_supported:
                out.append(MetadataSkip(folder, entry, "the target has no METADATA (RFC 5464)", "metadata-unsupported"))
                continue
            reason = "new on the source" if rec is None else "changed on the source"
            out.append(SetMetadata(folder, tf, entry, value, reason))
    return out
