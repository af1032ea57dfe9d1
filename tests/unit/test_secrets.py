"""Secret references: resolution, and no secret ever in an error's text."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.config import SecretRef, file_mode_warning, load_project, parse_secret_ref
from mailferry.errors import ConfigError


def test_parse_and_show_only_the_reference() -> None:
    ref = parse_secret_ref("  env:MY_PW ")
    assert ref == SecretRef("env:MY_PW")
    assert (ref.kind, ref.target) == ("env", "MY_PW")
    assert str(ref) == "env:MY_PW" and repr(ref) == "SecretRef('env:MY_PW')"
    assert parse_secret_ref("file:secrets/x").file_path(Path("/p")) == Path("/p/secrets/x")
    assert parse_secret_ref("file:/abs/x").file_path(Path("/p")) == Path("/abs/x")
    assert ref.file_path(Path("/p")) is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hunter2", "passwords go in by reference: env:NAME or file:PATH"),
        ("", "passwords go in by reference"),
        ("ENV:X", "passwords go in by reference"),
        ("env:", "environment variable name"),
        ("env:9X", "environment variable name"),
        ("env:A-B", "environment variable name"),
        ("file:", "file: needs a path"),
        ("file:  ", "file: needs a path"),
    ],
)
def test_parse_refuses_without_echo(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        parse_secret_ref(text)
    if text.strip():
        assert text.strip() not in str(caught.value) or text.strip() in ("env:", "file:")


def test_resolve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_PW", "s3cret\n")
    assert SecretRef("env:MF_PW").resolve(Path("/")) == "s3cret\n"  # env values are taken as they are
    monkeypatch.setenv("MF_PW", "")
    with pytest.raises(ConfigError, match="environment variable MF_PW is empty"):
        SecretRef("env:MF_PW").resolve(Path("/"))
    monkeypatch.delenv("MF_PW")
    with pytest.raises(ConfigError) as caught:
        SecretRef("env:MF_PW").resolve(Path("/"))
    assert caught.value.problems == ["secret env:MF_PW: environment variable MF_PW is not set"]


@pytest.mark.parametrize(
    ("content", "value"),
    [
        (b"pw\n", "pw"),
        (b"pw\r\n", "pw"),
        (b"pw\n\n", "pw\n"),
        (b"pw", "pw"),
        (b" pw ", " pw "),
        ("pä ss".encode(), "pä ss"),
    ],
)
def test_resolve_file_strips_one_newline(tmp_path: Path, content: bytes, value: str) -> None:
    (tmp_path / "s").write_bytes(content)
    assert SecretRef("file:s").resolve(tmp_path) == value


def test_resolve_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SecretRef("file:none").resolve(tmp_path)
    with pytest.raises(ConfigError, match="is a folder"):
        SecretRef("file:.").resolve(tmp_path)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        SecretRef("file:empty").resolve(tmp_path)
    (tmp_path / "latin").write_bytes(b"p\xe4ss")
    with pytest.raises(ConfigError) as caught:
        SecretRef("file:latin").resolve(tmp_path)
    assert caught.value.problems == [f"secret file:latin: {tmp_path / 'latin'} is not UTF-8 text"]
    assert "xe4" not in str(caught.value)


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_file_mode_warning(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_text("x")
    path.chmod(0o600)
    assert file_mode_warning(path) is None
    path.chmod(0o640)
    warning = file_mode_warning(path)
    assert warning is not None and "0640" in warning and "chmod 600" in warning
    path.chmod(0o604)
    assert file_mode_warning(path) is not None
    assert file_mode_warning(tmp_path / "missing") is None


# --- no secret in any error text ------------------------------------------------------------------

# Distinctive enough that finding one in an error message can only mean it leaked.
secrets_ = st.builds(lambda middle: f"Zq{middle}qZ", st.text(min_size=4, max_size=30)).filter(
    lambda s: "\x00" not in s and "\n" not in s and "\r" not in s
)


def toml_string(text: str) -> str:
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )
    return f'"{escaped}"'


PROJECT = """\
[project]
name = "p"
[source]
host = "imap.old.example"
port = "not a port"
[source.admin]
user = "admin"
password = {source_password}
[target]
host = "imap.new.example"
[target.admin]
user = "admin"
password = {target_password}
[accounts]
csv = "accounts.csv"
"""


def leak_check(error: ConfigError, secret: str) -> None:
    assert secret not in str(error)
    assert secret not in repr(error)
    assert all(secret not in problem for problem in error.problems)


@settings(max_examples=60, deadline=None)
@given(secret=secrets_)
def test_literal_passwords_in_the_project_file_never_echoed(secret: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        # One cell: no comma, no quote (quoting would make it another value).
        csv_secret = secret.replace(",", ";").replace('"', "'")
        (base / "accounts.csv").write_text(
            f"source_user,target_user,source_password,target_password\nalice,,{csv_secret},env:OK\n",
            encoding="utf-8",
        )
        (base / "project.toml").write_text(
            PROJECT.format(source_password=toml_string(secret), target_password=toml_string(secret)),
            encoding="utf-8",
        )
        with pytest.raises(ConfigError) as caught:
            load_project(base / "project.toml")
        leak_check(caught.value, secret)
        leak_check(caught.value, csv_secret.strip())
        assert sum("passwords go in by reference" in p for p in caught.value.problems) == 3


@settings(max_examples=60, deadline=None)
@given(secret=secrets_)
def test_resolved_secrets_never_in_error_text(secret: str) -> None:
    with tempfile.TemporaryDirectory() as folder, mock.patch.dict(os.environ, {"MF_SECRET": secret}):
        base = Path(folder)
        (base / "pw").write_text(secret + "\n", encoding="utf-8")
        assert SecretRef("env:MF_SECRET").resolve(base) == secret
        assert SecretRef("file:pw").resolve(base) == secret
        # A secret file that is not UTF-8: the decoder would quote its bytes.
        (base / "bad").write_bytes(secret.encode() + b"\xff")
        with pytest.raises(ConfigError) as caught:
            SecretRef("file:bad").resolve(base)
        leak_check(caught.value, secret)
        # A broken project that names both references.
        (base / "accounts.csv").write_text(
            "source_user,target_user,source_password,target_password\nalice,,env:MF_SECRET,file:pw\n"
            "alice,,env:MF_SECRET,file:pw\n",
            encoding="utf-8",
        )
        (base / "project.toml").write_text(
            PROJECT.format(source_password='"env:MF_SECRET"', target_password='"file:pw"'), encoding="utf-8"
        )
        with pytest.raises(ConfigError) as caught:
            load_project(base / "project.toml")
        leak_check(caught.value, secret)
        assert secret not in repr(SecretRef("env:MF_SECRET"))


def test_password_where_a_table_belongs_is_not_echoed(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text("source_user,target_user\nalice,\n")
    text = PROJECT.format(source_password='"env:A"', target_password='"env:B"')
    text = text.replace('[target.admin]\nuser = "admin"\npassword = "env:B"\n', 'admin = "Hunter2pw"\n')
    (tmp_path / "project.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_project(tmp_path / "project.toml")
    assert "project.toml:11: target.admin: must be a table [target.admin], got a string" in caught.value.problems
    assert "Hunter2pw" not in str(caught.value)
