"""A tiny SMTP sink for the sandbox: records every message a test server sends, sends nothing.

Dovecot's LMTP (Pigeonhole vacation, redirect) submits outgoing mail to ``submission_host``;
the sandbox points it here. Its mail processes run chrooted, so a ``sendmail_path`` script
outside the chroot would not be found: a TCP peer is reachable from anywhere.
"""

from __future__ import annotations

import re
import socketserver
import threading
from dataclasses import dataclass

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One message as handed over: the SMTP envelope and the bytes of DATA (dot-unstuffed)."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes


def _address(line: str) -> str:
    found = re.search(r"<([^>]*)>", line)
    return found.group(1) if found else line.split(":", 1)[1].strip().split(" ")[0]


class SmtpSink:
    """``SmtpSink()`` listens on a free port of 127.0.0.1 at once; :attr:`messages` grows as
    mail arrives; :meth:`close` stops it."""

    def __init__(self) -> None:
        self.messages: list[SentMessage] = []
        lock = threading.Lock()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self) -> None:
                mail_from, rcpt = "", list[str]()
                data: list[bytes] | None = None
                self.reply("220 localhost mailferry-sink ESMTP")
                for raw in self.rfile:
                    if data is not None:
                        if raw.rstrip(b"\r\n") == b".":
                            with lock:
                                sink.messages.append(SentMessage(mail_from, tuple(rcpt), b"".join(data)))
                            mail_from, rcpt = "", []
                            data = None
                            self.reply("250 2.0.0 recorded")
                        else:
                            data.append(raw[1:] if raw.startswith(b".") else raw)
                        continue
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    verb = line[:4].upper()
                    if verb in ("EHLO", "LHLO"):
                        self.reply("250-localhost")
                        self.reply("250 8BITMIME")
                    elif verb == "MAIL":
                        mail_from = _address(line)
                        self.reply("250 2.1.0 ok")
                    elif verb == "RCPT":
                        rcpt.append(_address(line))
                        self.reply("250 2.1.5 ok")
                    elif verb == "DATA":
                        data = []
                        self.reply("354 go ahead")
                    elif verb == "QUIT":
                        self.reply("221 2.0.0 bye")
                        return
                    else:
                        self.reply("250 ok")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((HOST, 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"smtp-sink-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
