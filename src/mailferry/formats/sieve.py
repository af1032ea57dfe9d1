r"""Sieve scripts (RFC 5228): find the addresses and folder names in a script and rewrite them,
keeping every other byte of the user's script as it was. Pure: no I/O.

Terminology: *token* one lexical unit of RFC 5228 section 2 (identifier, tag, number, quoted
string, multi-line ``text:`` string, comment, white space, punctuation); *role* what a string
means to its command: ``address`` (``redirect``, ``vacation :from``/``:addresses``, ``notify
:from``, the keys of ``address``/``envelope`` tests and of ``header`` tests on address headers),
``uri`` (a ``notify`` method's ``mailto:`` URI, RFC 5435) or ``folder`` (``fileinto``,
``vacation :fcc``, ``mailboxexists``).

How a script is rewritten (:func:`rewrite_script`):

1. tokenize the text (bytes decoded as UTF-8 with ``surrogateescape``, so that even invalid
   bytes come back unchanged); comments and ``text:`` blocks are single tokens, so nothing inside
   them is ever looked at;
2. walk the commands and tests (a small recursive descent over RFC 5228's grammar) and give each
   string argument its role, skipping tagged arguments that take a value (``:comparator``,
   ``:flags``, ``:days``, ``:subject``, ...);
3. an ``address`` string that the address map knows is replaced (``Name <old@x>`` keeps the
   name); a ``folder`` string is replaced by the folder map's answer, or reported *unmapped*;
4. the output is the input with only those string tokens replaced (as quoted strings).

A script that does not parse is returned unchanged with ``error`` set: it is never guessed at.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Rewrite",
    "Rewritten",
    "SieveSyntaxError",
    "Token",
    "Unmapped",
    "diff",
    "requires",
    "rewrite_script",
    "tokenize",
]


class SieveSyntaxError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True, slots=True)
class Token:
    """``kind``: ``ws``, ``comment``, ``string`` (quoted), ``text`` (multi-line), ``tag``,
    ``number``, ``ident``, or the punctuation itself (``[ ] { } ( ) , ;``). ``raw``: the exact
    source text; ``value``: a string's value (unescaped / dot-unstuffed)."""

    kind: str
    raw: str
    line: int
    value: str = ""


@dataclass(frozen=True, slots=True)
class Rewrite:
    role: str  # "address" or "folder"
    command: str
    old: str
    new: str
    line: int


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A folder the folder map does not know (the script names a folder the source lacks, or
    one built from variables): carried as written."""

    role: str
    command: str
    value: str
    line: int


@dataclass(frozen=True, slots=True)
class Rewritten:
    content: bytes
    rewrites: tuple[Rewrite, ...] = ()
    unmapped: tuple[Unmapped, ...] = ()
    requires: tuple[str, ...] = ()
    error: str = ""  # the script does not parse: content is the input, unchanged

    @property
    def changed(self) -> bool:
        return bool(self.rewrites)


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*(?:\n|\Z) | /\*.*?\*/)
  | (?P<text>text:[ \t]*(?:\#[^\n]*)?\r?\n(?:.*?\n)??\.\r?\n)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KMGkmg]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[\[\]{}(),;])
    """,
    re.VERBOSE | re.DOTALL,
)
_TEXT_BODY = re.compile(r"text:[ \t]*(?:\#[^\n]*)?\r?\n(.*)", re.DOTALL)


def _text_value(raw: str) -> str:
    body = _TEXT_BODY.match(raw)
    assert body is not None
    lines = body.group(1).split("\n")
    # the last two elements are the terminating "." line and what follows its newline ("")
    kept = lines[:-2]
    return "\n".join(ln[1:] if ln.startswith("..") else ln for ln in kept) + ("\n" if kept else "")


def tokenize(text: str) -> list[Token]:
    """Every token of ``text``; their ``raw`` parts joined give ``text`` back exactly. Raises
    :class:`SieveSyntaxError` on a character no token starts with (or an unterminated string)."""
    out: list[Token] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SieveSyntaxError(f"unexpected {text[pos]!r}", line)
        kind = m.lastgroup or ""
        raw = m.group()
        value = ""
        if kind == "string":
            value = re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.DOTALL)
        elif kind == "text":
            value = _text_value(raw)
        elif kind == "punct":
            kind = raw
        out.append(Token(kind, raw, line, value))
        line += raw.count("\n")
        pos = m.end()
    return out


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Tagged arguments that take one value, per command (RFC 5228, 5229, 5230, 5232, 5490, 8579,
# 9042, 5231, 5260, 5173, 3894, 6134, 6009...): their value is never a positional argument.
_VALUE_TAGS = frozenset(
    {
        ":comparator",
        ":flags",
        ":days",
        ":seconds",
        ":subject",
        ":from",
        ":addresses",
        ":handle",
        ":fcc",
        ":specialuse",
        ":mailboxid",
        ":count",
        ":value",
        ":index",
        ":importance",
        ":options",
        ":message",
        ":zone",
        ":notify",
        ":ret",
        ":by",
        ":param",
        ":uniqueid",
        ":header",
        ":bytimeabsolute",
        ":bytimerelative",
        ":bymode",
    }
)
_ADDRESS_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "sender",
        "reply-to",
        "resent-from",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "resent-sender",
        "delivered-to",
        "return-path",
        "x-original-to",
        "envelope-to",
    }
)
_WILDCARD = re.compile(r"[*?]|\$\{")


@dataclass(slots=True)
class _Arg:
    """One argument: a tag, a number, or strings (one string or a list); ``at``: token indexes."""

    kind: str  # "tag", "number", "strings"
    tag: str = ""
    at: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Roles:
    found: list[tuple[int, str, str]] = field(default_factory=list)  # token index, role, command
    requires: list[str] = field(default_factory=list)


class _Parser:
    """Recursive descent over the significant tokens (RFC 5228 section 8.2)."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.t = tokens
        self.idx = [i for i, tok in enumerate(tokens) if tok.kind not in ("ws", "comment")]
        self.p = 0
        self.roles = _Roles()

    def peek(self) -> Token | None:
        return self.t[self.idx[self.p]] if self.p < len(self.idx) else None

    def line(self) -> int:
        tok = self.peek()
        return tok.line if tok else (self.t[-1].line if self.t else 1)

    def take(self, kind: str | None = None) -> int:
        tok = self.peek()
        if tok is None or (kind is not None and tok.kind != kind):
            want = kind or "more"
            raise SieveSyntaxError(f"expected {want!r}, found {tok.raw if tok else 'end of script'!r}", self.line())
        self.p += 1
        return self.idx[self.p - 1]

    def commands(self, *, until: str | None) -> None:
        while True:
            tok = self.peek()
            if tok is None:
                if until is not None:
                    raise SieveSyntaxError("missing '}'", self.line())
                return
            if until is not None and tok.kind == until:
                return
            self.command()

    def command(self) -> None:
        name = self.t[self.take("ident")].raw.lower()
        args = self.arguments()
        if name in ("if", "elsif"):
            self.test()
        self.assign(name, args)
        tok = self.peek()
        if tok is not None and tok.kind == "{":
            self.take("{")
            self.commands(until="}")
            self.take("}")
        else:
            self.take(";")

    def arguments(self) -> list[_Arg]:
        args: list[_Arg] = []
        while (tok := self.peek()) is not None:
            if tok.kind == "tag":
                args.append(_Arg("tag", tag=tok.raw.lower(), at=[self.take()]))
            elif tok.kind == "number":
                args.append(_Arg("number", at=[self.take()]))
            elif tok.kind in ("string", "text"):
                args.append(_Arg("strings", at=[self.take()]))
            elif tok.kind == "[":
                self.take("[")
                at = [self.take_string()]
                while (nxt := self.peek()) is not None and nxt.kind == ",":
                    self.take(",")
                    at.append(self.take_string())
                self.take("]")
                args.append(_Arg("strings", at=at))
            else:
                break
        return args

    def take_string(self) -> int:
        tok = self.peek()
        if tok is None or tok.kind not in ("string", "text"):
            raise SieveSyntaxError(f"expected a string, found {tok.raw if tok else 'end of script'!r}", self.line())
        return self.take()

    def test(self) -> None:
        name = self.t[self.take("ident")].raw.lower()
        args = self.arguments()
        if name in ("anyof", "allof"):
            self.take("(")
            self.test()
            while (nxt := self.peek()) is not None and nxt.kind == ",":
                self.take(",")
                self.test()
            self.take(")")
        elif name == "not":
            self.test()
        self.assign(name, args)

    def positional(self, name: str, args: list[_Arg]) -> tuple[dict[str, _Arg], list[_Arg]]:
        """Tagged values by tag, and the positional arguments in order."""
        tagged: dict[str, _Arg] = {}
        positional: list[_Arg] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a.kind == "tag":
                if a.tag in _VALUE_TAGS and i + 1 < len(args) and args[i + 1].kind != "tag":
                    tagged[a.tag] = args[i + 1]
                    i += 2
                    continue
                tagged.setdefault(a.tag, _Arg("tag", tag=a.tag))
            else:
                positional.append(a)
            i += 1
        return tagged, positional

    def assign(self, name: str, args: list[_Arg]) -> None:
        tagged, positional = self.positional(name, args)
        found = self.roles.found
        if name == "require" and positional:
            self.roles.requires += [self.t[i].value for i in positional[0].at]
        elif name == "redirect" and positional:
            found += [(i, "address", name) for i in positional[-1].at]
        elif name in ("fileinto", "mailboxexists") and positional:
            found += [(i, "folder", name) for i in positional[-1].at]
        elif name == "notify":  # RFC 5435: the method is a URI, "mailto:" names an address
            if positional:
                found += [(i, "uri", name) for i in positional[-1].at]
            if ":from" in tagged:
                found += [(i, "address", "notify :from") for i in tagged[":from"].at]
        elif name == "vacation":
            for tag in (":from", ":addresses"):
                if tag in tagged:
                    found += [(i, "address", f"vacation {tag}") for i in tagged[tag].at]
            if ":fcc" in tagged:
                found += [(i, "folder", "vacation :fcc") for i in tagged[":fcc"].at]
        elif name in ("address", "envelope", "header") and len(positional) >= 2:
            part = {":localpart", ":domain", ":user", ":detail"} & set(tagged)
            if part:
                return  # keys compare parts of addresses, not whole ones
            if name == "header":
                headers = {self.t[i].value.strip().lower() for i in positional[-2].at}
                if not headers & _ADDRESS_HEADERS:
                    return
            found += [(i, "address", name) for i in positional[-1].at]


def _decode(content: bytes) -> str:
    return content.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def requires(content: bytes) -> tuple[str, ...]:
    """The extensions a script's ``require`` commands name (empty when it does not parse)."""
    try:
        parser = _Parser(tokenize(_decode(content)))
        parser.commands(until=None)
    except SieveSyntaxError:
        return ()
    return tuple(parser.roles.requires)


_ANGLE = re.compile(r"^(.*<)([^<>]+)(>\s*)$", re.DOTALL)


def _rewrite_address(value: str, addresses: Callable[[str], str | None]) -> str | None:
    if _WILDCARD.search(value):
        return None
    m = _ANGLE.match(value)
    if m is not None:
        new = addresses(m.group(2).strip())
        return f"{m.group(1)}{new}{m.group(3)}" if new else None
    if "@" not in value:
        return None
    new = addresses(value.strip())
    return new if new and new != value else None


_MAILTO = re.compile(r"^(mailto:)([^?]+)(\?.*)?$", re.IGNORECASE | re.DOTALL)


def _rewrite_mailto(value: str, addresses: Callable[[str], str | None]) -> str | None:
    """``mailto:old@x?subject=...`` -> ``mailto:new@y?subject=...`` (one plain address only)."""
    m = _MAILTO.match(value)
    if m is None or "%" in m.group(2) or "," in m.group(2):
        return None
    new = _rewrite_address(m.group(2), addresses)
    return f"{m.group(1)}{new}{m.group(3) or ''}" if new else None


def rewrite_script(
    content: bytes,
    addresses: Callable[[str], str | None],
    folders: Callable[[str], str | None],
) -> Rewritten:
    """``content`` with its addresses and folder names rewritten (see the module docstring).
    ``addresses``: old address -> new one, or None to keep it; ``folders``: a source folder name
    (as written in the script) -> the target's name, or None when unknown."""
    text = _decode(content)
    try:
        tokens = tokenize(text)
        parser = _Parser(tokens)
        parser.commands(until=None)
    except SieveSyntaxError as e:
        return Rewritten(content, error=str(e))
    new_raw = [tok.raw for tok in tokens]
    rewrites: list[Rewrite] = []
    unmapped: list[Unmapped] = []
    for i, role, command in parser.roles.found:
        tok = tokens[i]
        if role in ("address", "uri"):
            new = _rewrite_address(tok.value, addresses) if role == "address" else _rewrite_mailto(tok.value, addresses)
            if new is not None and new != tok.value:
                new_raw[i] = _quote(new)
                rewrites.append(Rewrite(role, command, tok.value, new, tok.line))
        else:
            target = folders(tok.value)
            if target is None:
                unmapped.append(Unmapped(role, command, tok.value, tok.line))
            elif target != tok.value:
                new_raw[i] = _quote(target)
                rewrites.append(Rewrite(role, command, tok.value, target, tok.line))
    out = _encode("".join(new_raw)) if rewrites else content
    return Rewritten(out, tuple(rewrites), tuple(unmapped), tuple(parser.roles.requires))


def diff(name: str, old: bytes, new: bytes) -> str:
    """A unified diff of a script before and after rewriting ('' when equal)."""
    if old == new:
        return ""
    a = _decode(old).splitlines(keepends=True)
    b = _decode(new).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"source/{name}", f"target/{name}"))
