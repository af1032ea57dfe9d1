"""The target's floor over IMAP: the least work any IMAP migration tool can leave to the target.

Usage (bench/run.py runs ``append`` as the tool ``floor`` and ``copy`` as the tool ``route``, and
both as ``floor-8acct`` and ``route-8acct`` for the eight accounts):

    python bench/floor.py prepare CORPUS_DIR          # once: a CRLF copy of the corpus (not timed)
    python bench/floor.py append --port P --connections 2 CORPUS_DIR USER:PASSWORD[:K/M] ...
    python bench/floor.py copy --from-port S --port P --connections 2 USER:PASSWORD ...

``append`` reads nothing from any source server: the messages come from the corpus files on disk
(CRLF, as a source IMAP server sends them, prepared beforehand and in the page cache), each sent
with ``sendfile`` straight from the file. Per account it creates the folders, then ``--connections``
connections, each given whole folders (largest first to the least loaded), send MULTIAPPEND
commands of at most 100 messages / 16 MB (mailferry's defaults) with LITERAL+, flags, keywords and
INTERNALDATE, two commands in flight per connection. It keeps no state, reads no answer but the
tagged one, and checks nothing but that every command ended OK: what is left is the target's own
cost of storing the corpus, plus the least a client can spend sending it.

``copy`` is the route's floor: the least any IMAP-to-IMAP tool can do on this machine. Per
connection pair, a reader FETCHes ``(UID FLAGS INTERNALDATE BODY.PEEK[])`` 100 messages at a time
from the source (Courier-style ``INBOX.`` names) while a writer MULTIAPPENDs the batch before,
same batches, same folders per connection; no state, no planning, no checks.

``USER:PASSWORD:K/M`` takes every M-th message of each folder starting at K (as bench/corpus.py's
``install(part=(K, M))`` gives the source's accounts ``u1``..``u8``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as corpus_mod  # noqa: E402

BATCH_MESSAGES = 100
BATCH_BYTES = 16_000_000
IN_FLIGHT = 2
LETTERS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "D": "\\Draft", "T": "\\Deleted"}


def crlf_dir(corpus: Path) -> Path:
    return corpus / "crlf"


def folder_files(corpus: Path, index: int) -> Path:
    """The CRLF copies of the ``index``-th folder of ``corpus_mod.FOLDERS`` (flat: no nesting)."""
    return crlf_dir(corpus) / str(index)


def prepare(corpus: Path) -> Path:
    """Write (once) a CRLF copy of every message, same names and mtimes, under ``corpus/crlf``."""
    out = crlf_dir(corpus)
    if (out / ".done").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    for i, (folder, _) in enumerate(corpus_mod.FOLDERS):
        src = corpus_mod.folder_dir(corpus / "Maildir", folder) / "cur"
        dst = folder_files(corpus, i)
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            target = dst / f.name
            target.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
            st = f.stat()
            os.utime(target, (st.st_atime, st.st_mtime))
    (out / ".done").touch()
    return out


def _flags(name: str) -> str:
    info = name.rpartition(":2,")[2]
    out = [LETTERS[c] for c in info if c in LETTERS]
    out += [corpus_mod.KEYWORDS[ord(c) - ord("a")] for c in info if "a" <= c <= "z"]
    return " ".join(out)


def _quoted(folder: str) -> bytes:
    wire = corpus_mod.mutf7_encode(folder)
    return b'"' + wire.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class Conn:
    def __init__(self, port: int, user: str, password: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.file = self.sock.makefile("rb")
        self.n = 0
        self.file.readline()  # greeting
        self.command(b"LOGIN " + self._q(user) + b" " + self._q(password))

    @staticmethod
    def _q(s: str) -> bytes:
        return b'"' + s.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'

    def tag(self) -> bytes:
        self.n += 1
        return b"F%d" % self.n

    def wait(self, tag: bytes) -> None:
        while True:
            line = self.file.readline()
            if not line:
                raise SystemExit("connection closed by the server")
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise SystemExit(f"{tag.decode()} failed: {line.decode(errors='replace').strip()}")
                return

    def command(self, text: bytes) -> None:
        t = self.tag()
        self.sock.sendall(t + b" " + text + b"\r\n")
        self.wait(t)

    def append(self, folder: str, batch: list[tuple[Path, os.stat_result]]) -> bytes:
        """Send one MULTIAPPEND without waiting for its answer; returns its tag."""
        t = self.tag()
        head = t + b" APPEND " + _quoted(folder)
        for path, st in batch:
            when = datetime.fromtimestamp(st.st_mtime, tz=UTC).strftime("%d-%b-%Y %H:%M:%S +0000")
            self.sock.sendall(head + b" (" + _flags(path.name).encode() + b') "' + when.encode()
                              + b'" {%d+}\r\n' % st.st_size)
            with path.open("rb") as f:
                self.sock.sendfile(f)
            head = b""
        self.sock.sendall(b"\r\n")
        return t

    def append_data(self, folder: str, batch: list[tuple[bytes, bytes, bytes]]) -> bytes:
        """Like :meth:`append`, of messages read from a source server."""
        t = self.tag()
        head = t + b" APPEND " + _quoted(folder)
        for flags, when, data in batch:
            self.sock.sendall(head + b" (" + flags + b') "' + when + b'" {%d+}\r\n' % len(data))
            self.sock.sendall(data)
            head = b""
        self.sock.sendall(b"\r\n")
        return t

    def close(self) -> None:
        with contextlib.suppress(SystemExit):
            self.command(b"LOGOUT")
        self.sock.close()


FETCH_META = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|INTERNALDATE \"([^\"]+)\"")


class Reader(Conn):
    """A source connection that reads whole messages, as plainly as IMAP allows."""

    def messages(self, folder: str, chunk: int = BATCH_MESSAGES) -> Iterator[list[tuple[bytes, bytes, bytes]]]:
        """(flags, internaldate, message) of every message in ``folder``, ``chunk`` at a time."""
        src = "INBOX" if folder == "INBOX" else "INBOX." + folder.replace("/", ".")
        t = self.tag()
        self.sock.sendall(t + b" EXAMINE " + _quoted(src) + b"\r\n")
        count = 0
        while True:
            line = self.file.readline()
            if m := re.match(rb"\* (\d+) EXISTS", line):
                count = int(m.group(1))
            if line.startswith(t + b" "):
                if not line.startswith(t + b" OK"):
                    raise SystemExit(f"EXAMINE {src}: {line.decode(errors='replace').strip()}")
                break
        for first in range(1, count + 1, chunk):
            t = self.tag()
            last = min(first + chunk - 1, count)
            self.sock.sendall(t + b" FETCH %d:%d (UID FLAGS INTERNALDATE BODY.PEEK[])\r\n" % (first, last))
            out: list[tuple[bytes, bytes, bytes]] = []
            while True:
                line = self.file.readline()
                if line.startswith(t + b" "):
                    if not line.startswith(t + b" OK"):
                        raise SystemExit(f"FETCH in {src}: {line.decode(errors='replace').strip()}")
                    break
                if not line.startswith(b"* ") or not line.endswith(b"}\r\n"):
                    continue
                size = int(line[line.rindex(b"{") + 1:-3])
                data = self.file.read(size)
                meta = line + self.file.readline()  # items after the literal, if any, and ")"
                flags, when = b"", b""
                for m in FETCH_META.finditer(meta):
                    if m.group(2) is not None:
                        flags = m.group(2).replace(b"\\Recent", b"").strip()
                    elif m.group(3) is not None:
                        when = m.group(3)
                out.append((flags, when, data))
            yield out


def batches(files: list[tuple[Path, os.stat_result]]) -> list[list[tuple[Path, os.stat_result]]]:
    out: list[list[tuple[Path, os.stat_result]]] = []
    cur: list[tuple[Path, os.stat_result]] = []
    size = 0
    for f in files:
        n = f[1].st_size
        if cur and (len(cur) >= BATCH_MESSAGES or size + n > BATCH_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(f)
        size += n
    if cur:
        out.append(cur)
    return out


def _create(port: int, user: str, password: str, folders: list[str]) -> None:
    admin = Conn(port, user, password)
    for folder in folders:
        if folder != "INBOX":
            admin.command(b"CREATE " + _quoted(folder))
    admin.close()


def _share(weights: dict[str, int], connections: int) -> list[list[str]]:
    """Whole folders per connection: the heaviest first, each to the least loaded."""
    loads = [0] * connections
    share: list[list[str]] = [[] for _ in range(connections)]
    for folder in sorted(weights, key=lambda f: -weights[f]):
        i = loads.index(min(loads))
        share[i].append(folder)
        loads[i] += weights[folder]
    return share


def _each(fn: Callable[[list[str]], None], share: list[list[str]]) -> None:
    threads = [threading.Thread(target=fn, args=(s,)) for s in share if s]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def account(port: int, corpus: Path, spec: str, connections: int, errors: list[str]) -> tuple[int, int]:
    user, password, *part = spec.split(":")
    k, m = (int(x) for x in part[0].split("/")) if part else (0, 1)
    folders: dict[str, list[tuple[Path, os.stat_result]]] = {}  # each file's stat taken once
    for i, (folder, _) in enumerate(corpus_mod.FOLDERS):
        files = sorted(folder_files(corpus, i).iterdir())
        folders[folder] = [(f, f.stat()) for j, f in enumerate(files) if j % m == k]
    _create(port, user, password, list(folders))
    share = _share({f: sum(st.st_size for _, st in fs) for f, fs in folders.items()}, connections)

    def writer(mine: list[str]) -> None:
        try:
            c = Conn(port, user, password)
            pending: list[bytes] = []
            for folder in mine:
                for batch in batches(folders[folder]):
                    pending.append(c.append(folder, batch))
                    if len(pending) >= IN_FLIGHT:
                        c.wait(pending.pop(0))
            for t in pending:
                c.wait(t)
            c.close()
        except BaseException as exc:  # reported, and the run fails
            errors.append(f"{user}: {exc!r}\n{traceback.format_exc()}")

    _each(writer, share)
    files = [st for fs in folders.values() for _, st in fs]
    return len(files), sum(st.st_size for st in files)


def copy(port: int, source_port: int, spec: str, connections: int, errors: list[str]) -> tuple[int, int]:
    """The route's floor: copy one account from the source server, a reader and a writer per
    connection pair, each pair given whole folders, one batch read ahead."""
    user, password, *_ = spec.split(":")
    weights = dict(corpus_mod.FOLDERS)  # the corpus's folder weights
    _create(port, user, password, list(weights))
    share = _share(weights, connections)
    totals = [0, 0]

    def pair(mine: list[str]) -> None:
        try:
            r = Reader(source_port, user, password)
            w = Conn(port, user, password)
            q: queue.Queue[tuple[str, list[tuple[bytes, bytes, bytes]]] | None] = queue.Queue(maxsize=1)

            def read() -> None:
                try:
                    for folder in mine:
                        for batch in r.messages(folder):
                            q.put((folder, batch))
                except BaseException as exc:  # reported, and the run fails
                    errors.append(f"{user} (reading): {exc!r}\n{traceback.format_exc()}")
                finally:
                    q.put(None)

            rt = threading.Thread(target=read)
            rt.start()
            pending: list[bytes] = []
            while (item := q.get()) is not None:
                folder, batch = item
                totals[0] += len(batch)
                totals[1] += sum(len(m[2]) for m in batch)
                pending.append(w.append_data(folder, batch))
                if len(pending) >= IN_FLIGHT:
                    w.wait(pending.pop(0))
            rt.join()
            for t in pending:
                w.wait(t)
            w.close()
            r.close()
        except BaseException as exc:  # reported, and the run fails
            errors.append(f"{user}: {exc!r}\n{traceback.format_exc()}")

    _each(pair, share)
    return totals[0], totals[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("corpus", type=Path)
    a = sub.add_parser("append")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--connections", type=int, default=2)
    a.add_argument("corpus", type=Path)
    a.add_argument("accounts", nargs="+", help="USER:PASSWORD[:K/M]")
    c = sub.add_parser("copy")
    c.add_argument("--from-port", type=int, required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--connections", type=int, default=2)
    c.add_argument("accounts", nargs="+", help="USER:PASSWORD")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        print(prepare(args.corpus))
        return 0
    t0 = time.perf_counter()
    errors: list[str] = []
    results: list[tuple[int, int]] = []

    def one(spec: str) -> tuple[int, int]:
        if args.cmd == "copy":
            return copy(args.port, args.from_port, spec, args.connections, errors)
        return account(args.port, args.corpus, spec, args.connections, errors)

    threads = [threading.Thread(target=lambda s=s: results.append(one(s))) for s in args.accounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 3), "messages": sum(r[0] for r in results),
                      "bytes": sum(r[1] for r in results), "connections": args.connections, "errors": errors}))
    return 1 if errors or len(results) != len(args.accounts) else 0


if __name__ == "__main__":
    sys.exit(main())
