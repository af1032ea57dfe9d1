"""Secrets by indirection: the project files name where a password is, never the password.

A reference is ``env:NAME`` (an environment variable) or ``file:PATH`` (a file holding only the
password; relative paths are relative to the project folder). A :class:`SecretRef` holds only the
reference text; the value exists only as the return value of :meth:`SecretRef.resolve`, and no
message built here ever contains it (nor any part of it, such as an undecodable byte).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from mailferry.errors import ConfigError

REFERENCE_HELP = "passwords go in by reference: env:NAME or file:PATH"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A reference to a secret: ``env:NAME`` or ``file:PATH``. Shows only the reference.

    Constructing one from anything else raises :class:`ValueError` with a message that does not
    repeat the text (it may be a password typed where a reference belongs).
    """

    ref: str

    def __post_init__(self) -> None:
        _check_reference(self.ref)

    @property
    def kind(self) -> str:
        """``"env"`` or ``"file"``."""
        return self.ref.split(":", 1)[0]

    @property
    def target(self) -> str:
        """The variable name or the file path, as written."""
        return self.ref.split(":", 1)[1]

    def file_path(self, base_dir: Path) -> Path | None:
        """For ``file:``, the file's path (relative ones taken from ``base_dir``); else None."""
        if self.kind != "file":
            return None
        path = Path(self.target)
        return path if path.is_absolute() else base_dir / path

    def resolve(self, base_dir: Path) -> str:
        """Read the secret: the variable's value, or the file's text less one trailing newline.

        Raises :class:`ConfigError` naming the reference (never the value) when the variable is
        unset or empty, or the file is missing, unreadable, not UTF-8 or empty.
        """
        if self.kind == "env":
            value = os.environ.get(self.target)
            if value is None:
                raise ConfigError([f"secret {self.ref}: environment variable {self.target} is not set"])
            if value == "":
                raise ConfigError([f"secret {self.ref}: environment variable {self.target} is empty"])
            return value
        path = self.file_path(base_dir)
        assert path is not None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError([f"secret {self.ref}: file {path} does not exist"]) from None
        except IsADirectoryError:
            raise ConfigError([f"secret {self.ref}: {path} is a folder, not a file"]) from None
        except OSError as error:
            # strerror only: str(error) is safe too, but keep the message shape under our control.
            raise ConfigError([f"secret {self.ref}: cannot read {path}: {error.strerror}"]) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # The decoder's own message quotes the offending byte: a piece of the secret.
            raise ConfigError([f"secret {self.ref}: {path} is not UTF-8 text"]) from None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if text == "":
            raise ConfigError([f"secret {self.ref}: {path} is empty"])
        return text

    def __repr__(self) -> str:
        return f"SecretRef({self.ref!r})"

    def __str__(self) -> str:
        return self.ref


def _check_reference(text: str) -> None:
    if text.startswith("env:"):
        if not _ENV_NAME.fullmatch(text[4:]):
            raise ValueError(
                "env: needs an environment variable name (letters, digits and _, not starting with a digit)"
            )
    elif text.startswith("file:"):
        name = text[5:]
        if name.strip() == "" or "\x00" in name:
            raise ValueError("file: needs a path")
    else:
        raise ValueError(REFERENCE_HELP)


def parse_secret_ref(text: str) -> SecretRef:
    """Parse ``env:NAME`` or ``file:PATH`` (surrounding blanks ignored).

    Raises :class:`ValueError` with a message that never repeats ``text``.
    """
    return SecretRef(text.strip())


def file_mode_warning(path: Path) -> str | None:
    """A warning when a secret file can be read by its group or by others, else None.

    None as well when the file cannot be examined (``resolve`` reports that) or on Windows,
    whose permission model mode bits do not describe.
    """
    if os.name == "nt":
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"secret file {path} is open to its group or others (mode {stat.S_IMODE(mode):04o}): run chmod 600 {path}"
        )
    return None
