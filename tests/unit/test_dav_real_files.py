"""The iCalendar and vCard files icalendar 7.3.2 and vobject 0.9.9 test themselves with
(tests/data/dav/README.md): each is read or refused with the reason the manifest gives, and
normalize, differences and rewrite hold on every one that is read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailferry.formats import ical, vcard

DATA = Path(__file__).parent.parent / "data" / "dav"
FILES = sorted(p for p in DATA.rglob("*") if p.suffix in (".ics", ".vcf"))
_ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| (?P<kind>\w+) \| (?P<verdict>[^|]+?) \|", re.M)


def manifest() -> dict[str, tuple[str, str]]:
    """file -> (kind, verdict): ``ok`` or the BadItem reason, from the README's table."""
    text = (DATA / "README.md").read_text(encoding="utf-8")
    return {m["file"]: (m["kind"], m["verdict"].strip()) for m in _ROW.finditer(text)}


def kind_of(data: bytes) -> str:
    return "vcard" if b"BEGIN:VCARD" in data.upper() and b"BEGIN:VCALENDAR" not in data.upper() else "ical"


def resources(data: bytes) -> list[bytes]:
    """One resource per UID (a CalDAV resource holds one), or the file itself when it can't be split."""
    try:
        return ical.split(data)
    except ical.BadItem:
        return [data]


def verdict(data: bytes) -> str:
    module = vcard if kind_of(data) == "vcard" else ical
    parts = [data] if module is vcard else resources(data)
    reasons = []
    for part in parts:
        try:
            module.inspect(part)
        except ical.BadItem as exc:
            reasons.append(exc.reason)
    return "; ".join(dict.fromkeys(reasons)) if reasons else ("ok" if len(parts) == 1 else f"ok, split in {len(parts)}")


def test_there_are_real_files_and_each_is_in_the_manifest() -> None:
    listed = manifest()
    names = {str(p.relative_to(DATA)) for p in FILES}
    assert len(names) > 150
    assert names == set(listed)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_real_file(path: Path) -> None:
    data = path.read_bytes()
    kind, expected = manifest()[str(path.relative_to(DATA))]
    assert kind == kind_of(data)
    assert verdict(data) == expected
    if not expected.startswith("ok"):
        return
    if kind == "vcard":
        text = vcard.normalize(data)
        assert vcard.normalize(text.encode()) == text
        assert vcard.differences(data, data) == []
        if vcard.is_v21(data):
            assert vcard.differences(data, vcard.to_v30(data)) == []
        return
    for part in resources(data):
        text = ical.normalize(part)
        assert ical.normalize(text.encode()) == text
        assert ical.differences(part, part) == []
        assert ical.rewrite(part, lambda a: None, client_scheduling=False) == (part, [])
        found = re.search(rb"mailto:([^\s\";:,]+@[^\s\";:,]+)", part, re.I)
        if found:
            old = found[1].decode().lower()
            out, made = ical.rewrite(part, {old: "moved@new.example"}.get, client_scheduling=False)
            assert made and all(r.old.lower().endswith(old) and r.new.endswith("moved@new.example") for r in made)
            assert ical.differences(part, out, expected=made) == []
            assert len(ical.differences(part, out)) >= 1

            # nothing but the lines that carried the address changed
            def unfold(data: bytes) -> set[bytes]:
                return set(re.sub(rb"\r?\n[ \t]", b"", data).splitlines())

            changed = unfold(out) ^ unfold(part)
            assert changed and all(b"moved@new.example" in line or old.encode() in line.lower() for line in changed)
