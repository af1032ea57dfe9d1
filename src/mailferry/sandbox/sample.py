"""A deterministic sample organization for the demo and the tests: pure, no I/O.

Each account gets nested, non-ASCII, special-use-by-name and separator-clashing folders, an
empty folder, flags and keywords, a message without Message-ID, two identical messages and a
few attachments — the things real mailboxes have and naive tools get wrong.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Logical paths ("/" between levels); the seeding code joins them with the server's separator.
# Names a Courier-style source uses for its special folders when it has no SPECIAL-USE.
FOLDERS: tuple[tuple[str, ...], ...] = (
    ("INBOX",),
    ("Sent Items",),
    ("Drafts",),
    ("Deleted Items",),
    ("Junk E-mail",),
    ("Projects",),
    ("Projects", "2024"),
    ("Projects", "2025", "Q1"),
    ("Ärger & Ökonomie",),
    ("Empty",),
    ("a/b test",),  # contains '/': on a '/' target it is mapped visibly, never split
    ("v1.2 release",),  # contains '.': the same on a '.' target
)


@dataclass(frozen=True, slots=True)
class SampleMessage:
    folder: tuple[str, ...]
    body: bytes
    flags: tuple[str, ...]
    internaldate: datetime


def _message(rng: random.Random, user: str, domain: str, n: int, *, attach: int = 0, mid: bool = True) -> bytes:
    subject = rng.choice(["Quarterly numbers", "Lunch?", "Re: contract", "Besprechung Ärger", "Café à 10h", "Status"])
    date = datetime(2024, 1, 1, 9, 0, tzinfo=UTC) + timedelta(hours=n * 7)
    lines = [
        f"From: Colleague {n} <colleague{n}@{domain}>",
        f"To: {user}@{domain}",
        f"Subject: {subject} #{n}",
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
    ]
    if mid:
        lines.append(f"Message-ID: <{user}.{n}.{rng.getrandbits(48):x}@{domain}>")
    lines.append("MIME-Version: 1.0")
    text = "\r\n".join(f"Line {i} of message {n} for {user}." for i in range(rng.randint(3, 40)))
    if not attach:
        lines += ["Content-Type: text/plain; charset=utf-8", "", text, ""]
        return "\r\n".join(lines).encode()
    payload = base64.encodebytes(rng.randbytes(attach)).decode().replace("\n", "\r\n")
    lines += [
        'Content-Type: multipart/mixed; boundary="b1"',
        "",
        "--b1",
        "Content-Type: text/plain; charset=utf-8",
        "",
        text,
        "--b1",
        'Content-Type: application/octet-stream; name="data.bin"',
        "Content-Transfer-Encoding: base64",
        "",
        payload,
        "--b1--",
        "",
    ]
    return "\r\n".join(lines).encode()


def mailbox(user: str, *, domain: str = "example.test", messages: int = 24, seed: int = 1) -> list[SampleMessage]:
    """The sample mailbox of one user."""
    rng = random.Random(f"{seed}:{user}")  # noqa: S311 - sample data, not security
    folders = [f for f in FOLDERS if f != ("Empty",)]
    flag_choices: list[tuple[str, ...]] = [
        (),
        ("\\Seen",),
        ("\\Seen", "\\Answered"),
        ("\\Flagged",),
        ("\\Seen", "$Label1"),
        ("\\Seen", "Projekt-X"),
    ]
    out: list[SampleMessage] = []
    for n in range(messages):
        folder = folders[n % len(folders)]
        attach = rng.choice([0, 0, 0, 0, 2_000, 60_000]) if n % 5 == 0 else 0
        body = _message(rng, user, domain, n, attach=attach, mid=(n % 11 != 3))
        when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=n * 7 + 1)
        out.append(SampleMessage(folder, body, rng.choice(flag_choices), when))
    # Two identical messages in one folder must give two on the target.
    twin = _message(rng, user, domain, 10_000)
    when = datetime(2024, 6, 1, tzinfo=UTC)
    out += [SampleMessage(("INBOX",), twin, ("\\Seen",), when), SampleMessage(("INBOX",), twin, ("\\Seen",), when)]
    return out
