"""A deterministic, realistic mail corpus written straight into a Dovecot Maildir++ tree.

Terminology: the *corpus* is one mailbox (INBOX plus 17 folders) generated from a seed and a
message count; it is cached on disk under ``<out>/corpus-<hash>/`` so that later runs reuse it.

Layout written (Dovecot ``maildir:~/Maildir``, namespace prefix ``INBOX.``, separator ``.``):

- ``Maildir/cur/<unique>,S=<size>,W=<vsize>:2,<flags>`` for INBOX; ``Maildir/.A.B/cur/...`` for
  folder ``A/B`` (names in modified UTF-7, RFC 3501 5.1.3), with a ``maildirfolder`` file.
- ``S=``/``W=`` spare Dovecot a stat and a full read to learn the physical and virtual size (the
  files use LF line ends, so the virtual CRLF size is ``size + number of LFs``).
- Flags in the info part in ASCII order (``DFRS``), then keyword letters ``a..z`` that index the
  folder's ``dovecot-keywords`` file.
- The file's mtime is the INTERNALDATE.

Sizes are drawn at stratified quantiles (then shuffled) so that the total is close to its
expectation for any seed: 90 % small (2-20 KB, log-uniform), ~10 % with a 0.1-2 MB attachment
(log-uniform), and one in 2,000 (at least one) with a 10-25 MB attachment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from imapclient.imap_utf7 import encode as mutf7_encode

CORPUS_VERSION = 1

# (canonical path, weight). 18 folders: nested up to three levels, one non-ASCII, one empty.
FOLDERS: tuple[tuple[str, int], ...] = (
    ("INBOX", 26),
    ("Sent", 14),
    ("Drafts", 1),
    ("Trash", 3),
    ("Junk", 2),
    ("Archive", 2),
    ("Archive/2022", 9),
    ("Archive/2023", 9),
    ("Archive/2024", 9),
    ("Projects", 2),
    ("Projects/Alpha", 5),
    ("Projects/Beta", 4),
    ("Projects/Beta/Specs", 3),
    ("Clients", 2),
    ("Clients/Zürich", 4),
    ("Newsletters", 3),
    ("Receipts", 2),
    ("Empty", 0),
)
KEYWORDS: tuple[str, ...] = ("$Forwarded", "$MDNSent", "Work", "Personal")

WORDS = (  # noqa: SIM905 - one prose string reads better than 100 quoted words
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no more what up out who about "
    "meeting project budget invoice report schedule deadline review draft contract proposal update team "
    "customer server migration mailbox folder quarter forecast attached please regards thanks tomorrow "
    "Monday Friday agenda minutes summary decision action item owner status risk issue release version "
    "Grüße café naïve Zürich São Paulo résumé jalapeño façade Ærø Kraków Øresund smörgåsbord"
).split()
NAMES = ("Alice Martin", "Bob Dupont", "Chloé Müller", "David Okafor", "Eva Nowak", "Frank Li", "Grete Sørensen")
ATTACH_TYPES = (("application/pdf", "pdf"), ("image/jpeg", "jpg"), ("application/zip", "zip"),
                ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"))


@dataclass(frozen=True)
class CorpusSpec:
    messages: int
    seed: int = 20240611

    @property
    def key(self) -> str:
        text = json.dumps({"v": CORPUS_VERSION, "n": self.messages, "seed": self.seed}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def folder_dir(maildir: Path, folder: str) -> Path:
    """Maildir++ directory of a canonical folder path (``A/B`` -> ``.A.B``, mUTF-7 encoded)."""
    if folder == "INBOX":
        return maildir
    return maildir / ("." + mutf7_encode(folder.replace("/", ".")).decode("ascii"))


def _sizes(rng: random.Random, n: int) -> list[int]:
    large = max(1, n // 2000)
    medium = max(1, n // 10 - large)
    small = n - medium - large

    def strata(k: int, lo: float, hi: float, log: bool) -> list[int]:
        out = []
        for i in range(k):
            q = (i + 0.5) / k
            value = math.exp(math.log(lo) + q * (math.log(hi) - math.log(lo))) if log else lo + q * (hi - lo)
            out.append(int(value))
        return out

    sizes = strata(small, 2_000, 20_000, True) + strata(medium, 100_000, 2_000_000, True)
    sizes += strata(large, 10_000_000, 25_000_000, False)
    rng.shuffle(sizes)
    return sizes


def _text(rng: random.Random, nbytes: int) -> str:
    lines: list[str] = []
    size = 0
    while size < nbytes:
        line = " ".join(rng.choices(WORDS, k=rng.randint(6, 13)))
        lines.append(line)
        size += len(line.encode()) + 1
    return "\n".join(lines) + "\n"


def _message(rng: random.Random, i: int, size: int, when: datetime, folder: str) -> bytes:
    sender, rcpt = rng.sample(NAMES, 2)
    if folder == "Sent":
        sender = NAMES[0]
    addr = {n: n.split()[0].lower().replace("é", "e").replace("ø", "o") + "@example.org" for n in NAMES}
    subject = " ".join(rng.choices(WORDS, k=rng.randint(3, 8))).capitalize()
    sent = when - timedelta(seconds=rng.randint(1, 600))
    head = [
        f"Return-Path: <{addr[sender]}>",
        f"Received: from mx{rng.randint(1, 9)}.example.org by mail.example.org with ESMTPS id {i:08x}; "
        + format_datetime(when),
        f"From: {sender} <{addr[sender]}>",
        f"To: {rcpt} <{addr[rcpt]}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(sent)}",
        f"Message-ID: <bench.{i}.{rng.getrandbits(48):012x}@example.org>",
        "MIME-Version: 1.0",
    ]
    if rng.random() < 0.3:
        head.append(f"In-Reply-To: <bench.{rng.randrange(max(i, 1))}.0@example.org>")
    budget = max(size - sum(len(h) + 1 for h in head) - 200, 200)
    if size < 50_000:
        kind = rng.random()
        if kind < 0.65:
            head += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
            body = _text(rng, budget).encode()
        elif kind < 0.9:
            b = f"=_alt_{i}"
            half = _text(rng, budget // 3)
            html = "<html><body><p>" + half.replace("\n", "</p>\n<p>") + "</p></body></html>\n"
            head.append(f'Content-Type: multipart/alternative; boundary="{b}"')
            body = (f"--{b}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{half}"
                    f"--{b}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{html}"
                    f"--{b}--\n").encode()
        else:
            head += ["Content-Type: text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: quoted-printable"]
            text = _text(rng, budget * 9 // 10)
            body = "\n".join(
                line.encode("latin-1", "replace").decode("latin-1").replace("ü", "=FC").replace("é", "=E9")[:76]
                for line in text.splitlines()
            ).encode("latin-1", "replace") + b"\n"
    else:
        b = f"=_mixed_{i}"
        ctype, ext = rng.choice(ATTACH_TYPES)
        text = _text(rng, rng.randint(300, 3000))
        raw = rng.randbytes(max(int((budget - len(text)) * 57 / 77), 1))
        head.append(f'Content-Type: multipart/mixed; boundary="{b}"')
        body = (f"--{b}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{text}"
                f"--{b}\nContent-Type: {ctype}; name=\"file{i}.{ext}\"\nContent-Transfer-Encoding: base64\n"
                f"Content-Disposition: attachment; filename=\"file{i}.{ext}\"\n\n").encode()
        body += base64.encodebytes(raw) + f"--{b}--\n".encode()
    return ("\n".join(head) + "\n\n").encode() + body


def _flags(rng: random.Random, folder: str) -> tuple[str, list[int]]:
    flags = set()
    if folder == "Drafts":
        flags.add("D")
    elif folder == "Sent" or rng.random() < 0.7:
        flags.add("S")
    if rng.random() < 0.15:
        flags.add("R")
    if rng.random() < 0.05:
        flags.add("F")
    kws = [k for k, p in enumerate((0.05, 0.02, 0.06, 0.03)) if rng.random() < p]
    return "".join(sorted(flags)), kws


def build(spec: CorpusSpec, out: Path, log=print) -> Path:
    """Return the corpus directory for ``spec`` under ``out``, generating it if not cached."""
    root = out / f"corpus-{spec.key}"
    if (root / "manifest.json").exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    tmp = out / f"corpus-{spec.key}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    maildir = tmp / "Maildir"
    log(f"generating corpus: {spec.messages} messages, seed {spec.seed} -> {root}")
    rng = random.Random(spec.seed)
    for folder, _ in FOLDERS:
        d = folder_dir(maildir, folder)
        for sub in ("cur", "new", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        if folder != "INBOX":
            (d / "maildirfolder").touch()
        if folder != "Empty":
            (d / "dovecot-keywords").write_text("".join(f"{k} {name}\n" for k, name in enumerate(KEYWORDS)))
    sizes = _sizes(rng, spec.messages)
    names = [f for f, w in FOLDERS if w]
    weights = [w for _, w in FOLDERS if w]
    start = datetime(2015, 1, 1, tzinfo=UTC).timestamp()
    span = datetime(2025, 1, 1, tzinfo=UTC).timestamp() - start
    stats: dict = {"messages": 0, "bytes": 0, "folders": {f: {"messages": 0, "bytes": 0} for f, _ in FOLDERS},
                   "size_buckets": {"<2KB": 0, "2-20KB": 0, "20-100KB": 0, "0.1-2MB": 0, "2-10MB": 0, "10-25MB": 0,
                                    ">25MB": 0},
                   "flags": {"\\Seen": 0, "\\Answered": 0, "\\Flagged": 0, "\\Draft": 0},
                   "keywords": dict.fromkeys(KEYWORDS, 0), "largest": 0}
    letter_flag = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "D": "\\Draft"}
    for i, size in enumerate(sizes):
        folder = rng.choices(names, weights)[0]
        when = datetime.fromtimestamp(int(start + rng.random() * span), tz=UTC)
        data = _message(rng, i, size, when, folder)
        flags, kws = _flags(rng, folder)
        info = flags + "".join(chr(ord("a") + k) for k in kws)
        ts = int(when.timestamp())
        vsize = len(data) + data.count(b"\n")
        name = f"{ts}.M{i}P{spec.seed % 100000}.bench,S={len(data)},W={vsize}:2,{info}"
        path = folder_dir(maildir, folder) / "cur" / name
        path.write_bytes(data)
        os.utime(path, (ts, ts))
        n = len(data)
        stats["messages"] += 1
        stats["bytes"] += n
        stats["largest"] = max(stats["largest"], n)
        stats["folders"][folder]["messages"] += 1
        stats["folders"][folder]["bytes"] += n
        for bound, label in ((2e3, "<2KB"), (2e4, "2-20KB"), (1e5, "20-100KB"), (2e6, "0.1-2MB"), (1e7, "2-10MB"),
                             (2.5e7, "10-25MB"), (math.inf, ">25MB")):
            if n < bound:
                stats["size_buckets"][label] += 1
                break
        for ch in flags:
            stats["flags"][letter_flag[ch]] += 1
        for k in kws:
            stats["keywords"][KEYWORDS[k]] += 1
    sorted_sizes = sorted(sizes)
    stats["median_target_size"] = sorted_sizes[len(sorted_sizes) // 2]
    stats["folder_count"] = len(FOLDERS)
    stats["spec"] = {"messages": spec.messages, "seed": spec.seed, "version": CORPUS_VERSION}
    (tmp / "manifest.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
    tmp.rename(root)
    return root


def install(corpus: Path, home: Path, uid: int, gid: int, *, part: tuple[int, int] | None = None) -> int:
    """Hard-link the corpus Maildir into ``home/Maildir`` (Dovecot never rewrites a message file in
    place: flag changes are renames, so the cache stays intact). ``part=(k, m)`` takes only every
    m-th message starting at k, to split the corpus over m users. Returns the message count."""
    src = corpus / "Maildir"
    dst = home / "Maildir"
    count = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        target = dst / rel
        target.mkdir(parents=True, exist_ok=True)
        msgs = sorted(filenames) if rel.name == "cur" else filenames
        for j, fn in enumerate(msgs):
            if rel.name == "cur" and part is not None and j % part[1] != part[0]:
                continue
            if rel.name == "cur":
                os.link(Path(dirpath) / fn, target / fn)
                count += 1
            else:
                shutil.copy2(Path(dirpath) / fn, target / fn)
        dirnames.sort()
    for dirpath, _dirnames, filenames in os.walk(home):
        os.chown(dirpath, uid, gid)
        for fn in filenames:
            os.chown(Path(dirpath) / fn, uid, gid)
    return count
