"""Typed configuration of a migration project: the project file, the accounts CSV, secrets.

``load_project(path)`` checks everything at once and raises one ``ConfigError`` listing every
problem (``file:line: key.path: what``), the optional ``[directory]`` section included;
``render_project(...)`` writes the commented template.
"""

from mailferry.config.accounts import parse_accounts_csv, read_accounts_csv
from mailferry.config.load import (
    KNOWN_KEYS,
    LDAP_LOGICAL_ATTRIBUTES,
    TEMPLATE_PLACEHOLDERS,
    LineIndex,
    check_secrets,
    ldap_default_port,
    load_project,
    parse_ldap_url,
)
from mailferry.config.model import (
    ADMIN_METHODS,
    DIRECTORY_RULES,
    LDAP_DIALECTS,
    SECURITY_CHOICES,
    AccountConfig,
    AdminLogin,
    AdminMethod,
    DirectoryConfig,
    FolderRename,
    FolderRules,
    LdapDialect,
    LdapServerConfig,
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
    "DIRECTORY_RULES",
    "KNOWN_KEYS",
    "LDAP_DIALECTS",
    "LDAP_LOGICAL_ATTRIBUTES",
    "SECURITY_CHOICES",
    "TEMPLATE_PLACEHOLDERS",
    "AccountConfig",
    "AdminLogin",
    "AdminMethod",
    "DirectoryConfig",
    "FolderRename",
    "FolderRules",
    "LdapDialect",
    "LdapServerConfig",
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
    "ldap_default_port",
    "load_project",
    "parse_accounts_csv",
    "parse_date",
    "parse_ldap_url",
    "parse_secret_ref",
    "parse_server_url",
    "parse_size",
    "read_accounts_csv",
    "render_project",
]
