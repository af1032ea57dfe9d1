"""Who may use the console, and from where.

- The console listens on loopback unless told otherwise; anywhere else it needs TLS
  (:func:`check_listen`).
- Login: a random access token, printed once at start as a URL (as Jupyter does). It works
  once: the first ``GET /login?token=`` trades it for a session cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure``
  under TLS) and redirects, so the token leaves the address bar and the history; the URL logs
  nobody in after that (another browser, or a login after logging out: restart the console, which
  prints a new URL).
- Every state-changing request carries the session's CSRF token (a hidden form field or the
  ``X-CSRF-Token`` header), compared in constant time.
- Sessions live in memory: restarting the console logs everyone out (a new token is printed).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass

from mailferry.errors import UsageError

COOKIE = "mailferry_console"
SESSION_SECONDS = 12 * 3600


def is_loopback_address(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, certificate: str | None, key: str | None) -> None:
    """Refuse a listening address other than loopback without TLS."""
    if bool(certificate) != bool(key):
        raise UsageError("--certificate and --key go together", hint="give both files (PEM), or neither")
    if not is_loopback_address(host) and not certificate:
        raise UsageError(
            f"--listen {host}: not a loopback address, and no TLS",
            hint="give --certificate and --key (PEM files) to listen beyond this machine, or leave out --listen",
        )


@dataclass
class Session:
    csrf: str
    expires: float


class Sessions:
    """The one-time access token and the session it opened (in memory; thread-safe)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.used = False
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def login(self, token: str) -> str | None:
        """A new session id for the right token the first time it is given, else None."""
        if not token or not hmac.compare_digest(token.encode(), self.token.encode()):
            return None
        sid = secrets.token_urlsafe(32)
        with self._lock:
            if self.used:
                return None
            self.used = True
            self._by_id[sid] = Session(csrf=secrets.token_urlsafe(32), expires=time.time() + SESSION_SECONDS)
        return sid

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._by_id.get(sid)
            if s is not None and s.expires < time.time():
                del self._by_id[sid]
                return None
            return s

    def logout(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def csrf_ok(session: Session, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest((offered or "").encode(), session.csrf.encode())
