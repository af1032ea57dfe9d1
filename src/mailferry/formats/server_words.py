"""What a server said, as a person reads it (pure).

IMAP libraries put the server's response text into exception messages as Python reprs
(``BAD [b'Error in IMAP command APPEND: ... (0.001 + 0.000 secs).']``). Reports and ``--json``
output show the server's words, not Python's notation, and not the timing that Dovecot
(``(0.001 + 0.000 + 0.001 secs)``) and Cyrus (``(0.000 secs 1 calls)``) append: it differs on every
run and would make identical findings look different.
"""

from __future__ import annotations

import ast
import re

# b'...' or b"..." (with escapes), optionally inside the brackets of a one-element list repr.
_BYTES = re.compile(r"""\[?\bb(['"])((?:\\.|(?!\1).)*)\1(?:,\s*)?\]?""")
_TIMING = r"\s*\(\d+(?:\.\d+)?(?: \+ \d+(?:\.\d+)?)* secs?(?: \d+ calls?)?\)"
_TIMING_AFTER_STOP = re.compile(r"(?<=\.)" + _TIMING + r"\.")  # "done. (0.001 secs)." -> "done."
_TIMING_ANY = re.compile(_TIMING)


def _unbytes(m: re.Match[str]) -> str:
    try:
        raw = ast.literal_eval("b" + m.group(1) + m.group(2) + m.group(1))
    except (ValueError, SyntaxError):
        return m.group(2)
    text: str = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text


def server_words(text: str) -> str:
    """``text`` without Python byte notation and without servers' timing suffixes."""
    out = _BYTES.sub(_unbytes, text)
    out = _TIMING_ANY.sub("", _TIMING_AFTER_STOP.sub("", out))
    return out.strip()
