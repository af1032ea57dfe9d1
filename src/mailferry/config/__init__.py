"""Typed configuration of a migration project: the project file, the accounts CSV, secrets.

``load_project(path)`` checks everything at once and raises one ``ConfigError`` listing every
problem (``file:line: key.path: what``); ``render_project(...)`` writes the commented template.
"""

from mailferry.config.accounts import parse_accounts_csv, read_accounts_csv
from mailferry.config.load import KNOWN_KEYS, LineIndex, check_secrets, load_project
from mailferry.config.model import (
    ADMIN_METHODS,
    SECURITY_CHOICES,
    AccountConfig,
    AdminLogin,
    AdminMethod,
    FolderRename,
    FolderRules,
    MessageRules,
    Performance,
    Project,
    Security,
    ServerConfig,
    default_port,
    is_loopback,
    parse_date,
    parse_size,
)
from mailferry.config.secrets import SecretRef, file_mode_warning, parse_secret_ref
from mailferry.config.template import parse_server_url, render_project

__all__ = [
    "ADMIN_METHODS",
    "KNOWN_KEYS",
    "SECURITY_CHOICES",
    "AccountConfig",
    "AdminLogin",
    "AdminMethod",
    "FolderRename",
    "FolderRules",
    "LineIndex",
    "MessageRules",
    "Performance",
    "Project",
    "SecretRef",
    "Security",
    "ServerConfig",
    "check_secrets",
    "default_port",
    "file_mode_warning",
    "is_loopback",
    "load_project",
    "parse_accounts_csv",
    "parse_date",
    "parse_secret_ref",
    "parse_server_url",
    "parse_size",
    "read_accounts_csv",
    "render_project",
]
