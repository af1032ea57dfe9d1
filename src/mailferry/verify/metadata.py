"""Verify folder METADATA (RFC 5464): each carried entry's value on both sides. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetadataDifference:
    source_folder: str
    target_folder: str
    entry: str
    source_value: str
    target_value: str

    def as_dict(self) -> dict[str, str]:
        return {
            "source_folder": self.source_folder,
            "target_folder": self.target_folder,
            "entry": self.entry,
            "source_value": self.source_value,
            "target_value": self.target_value,
        }


def compare_metadata(
    source: Mapping[str, Mapping[str, bytes | None]],
    target: Mapping[str, Mapping[str, bytes | None]],
    folders: Mapping[str, str | None],
) -> list[MetadataDifference]:
    """Every carried entry whose value differs between a source folder and its target folder."""

    def show(v: bytes | None) -> str:
        return "" if v is None else v.decode("utf-8", "replace")[:200]

    out: list[MetadataDifference] = []
    for folder in sorted(source):
        tf = folders.get(folder)
        if tf is None:
            continue
        for entry, value in sorted(source[folder].items()):
            got = target.get(tf, {}).get(entry)
            if got != value:
                out.append(MetadataDifference(folder, tf, entry, show(value), show(got)))
    return out
