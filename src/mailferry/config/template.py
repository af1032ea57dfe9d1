"""The commented project file that ``mailferry init`` writes, and server URLs.

Server URLs: ``imaps://host[:port]`` (implicit TLS, default port 993),
``imap+starttls://host[:port]`` (STARTTLS, 143) and ``imap://host[:port]`` (no encryption, 143).
IPv6 addresses go in brackets: ``imaps://[2001:db8::1]``. A URL never carries a login.

The rendered file documents every key and is accepted by ``load_project`` as it is (its
``[directory]`` block is commented out, and loads too once uncommented), with one deliberate
exception: an ``imap://`` URL to a host that is not loopback is written with
``allow_plaintext_login = false``, so that loading it stops with a problem saying what to decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mailferry.config.model import Security, UrlProblem, default_port, is_loopback, split_server_url
from mailferry.config.secrets import parse_secret_ref
from mailferry.errors import UsageError

_SCHEMES: Mapping[str, Security] = MappingProxyType({"imaps": "tls", "imap+starttls": "starttls", "imap": "none"})
_URL_HELP = "use imaps://host[:port] (TLS), imap+starttls://host[:port] or imap://host[:port] (unencrypted)"


def parse_server_url(url: str) -> tuple[str, int, Security]:
    """``"imaps://mail.example"`` -> ``("mail.example", 993, "tls")``. Raises :class:`UsageError`.

    The URL is repeated in error messages only when it holds no ``@`` (which could start a login
    and password pasted into it).
    """
    shown = f"server URL {url!r}" if "@" not in url else "server URL"
    try:
        return split_server_url(url, _SCHEMES, default_port)
    except UrlProblem as problem:
        if problem.kind == "login":
            raise UsageError(
                f"{shown}: {problem}; give the admin login with its own option "
                "and its password as a reference (env:NAME or file:PATH)"
            ) from None
        raise UsageError(f"{shown}: {problem}; {_URL_HELP}") from None


def _toml(text: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _reference(option: str, text: str) -> str:
    try:
        return parse_secret_ref(text).ref
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def _server(role: str, url: str, admin: str | None, admin_password: str | None) -> str:
    host, port, security = parse_server_url(url)
    if admin_password is not None and admin is None:
        raise UsageError(f"{role} admin password given without a {role} admin login")
    what = "copied from" if role == "source" else "copied to"
    plain = ""
    if security == "none" and not is_loopback(host):
        plain = (
            '# WARNING: security = "none" to a host that is not loopback sends passwords in clear.\n'
            "# mailferry refuses this until you set allow_plaintext_login = true (prefer tls).\n"
        )
    if admin is not None:
        password = _reference(f"{role} admin password", admin_password or f"env:{role.upper()}_ADMIN_PASSWORD")
        admin_lines = [f"[{role}.admin]", f"user = {_toml(admin)}", f"password = {_toml(password)}"]
    else:
        admin_lines = [
            f"[{role}.admin]",
            'user = "mailadmin"',
            f'password = "env:{role.upper()}_ADMIN_PASSWORD"',
        ]
    prefix = "" if admin is not None else "# "
    admin_block = (
        f"{prefix}{admin_lines[0]}\n"
        "# The admin's login name.\n"
        f"{prefix}{admin_lines[1]}\n"
        "# Its password, by reference: env:NAME or file:PATH.\n"
        f"{prefix}{admin_lines[2]}\n"
    )
    comment = "" if admin is not None else "# "
    return f"""\
[{role}]
# The server mail is {what}: a host name or IP address (no brackets, no port).
host = {_toml(host)}
# "tls": TLS from the first byte (usually port 993); "starttls": plain, then STARTTLS (usually
# 143); "none": no encryption at all (only for a server on this machine or a lab).
security = {_toml(security)}
# Default: 993 for "tls", 143 otherwise.
port = {port}
# Check the server's certificate and host name. Turn off only for a throw-away lab server.
verify_certificates = true
# A PEM file of certificate authorities to trust (e.g. an internal CA); path relative to
# this file. Empty: the system's trust store.
ca_file = ""
{plain}# Permit a password over an unencrypted connection to a host that is not loopback.
allow_plaintext_login = false
# Seconds to wait for each network operation before giving up on it.
timeout = 60
# At most this many connections to this server at once, all accounts together: each account
# being migrated holds 1 source and connections_per_account + 1 target connections, and fewer
# accounts run at once when needed to stay under this.
max_connections = 24

# One administrator login that opens every mailbox, so user passwords are not needed.
# An account's own password reference (accounts CSV or override), when given, is used instead.
{admin_block}\
# "sasl-authzid": AUTHENTICATE PLAIN with an authorization identity (RFC 4616); Dovecot master
# users and Cyrus admins. "dovecot-master": LOGIN user<master_separator>admin (Dovecot).
{comment}method = "sasl-authzid"
# Between user and admin name, for "dovecot-master" (Dovecot's auth_master_user_separator).
{comment}master_separator = "*"
"""


def _dav(role: str, url: str | None) -> str:
    """The ``[role.dav]`` table: written when a DAV URL is given, else shown commented out."""
    from mailferry.config.model import UrlProblem, normalize_dav_url

    c = "" if url else "# "
    if url is not None:
        try:
            url = normalize_dav_url(url)
        except UrlProblem as problem:
            raise UsageError(f"--{role}-dav: {problem}") from None
    shown = url or f"https://dav.{'old' if role == 'source' else 'new'}.example/"
    return f"""
# Calendars and contacts of this server (CalDAV/CardDAV): the base URL where discovery starts
# (RFC 6764: /.well-known/caldav and /.well-known/carddav lead to each account's calendars).
# https://, or http:// to a loopback address only (unless allow_plaintext_login = true).
{c}[{role}.dav]
{c}url = {_toml(shown)}
{c}verify_certificates = true
{c}ca_file = ""
{c}allow_plaintext_login = false
{c}timeout = 60
# At most this many HTTP connections to this server at once, all accounts together (half
# as many accounts move at once). Cyrus httpd gives each connection a process (maxchild).
{c}max_connections = 16
# One admin login that opens every account's calendars and address books. Without it each
# account needs its own password reference in the accounts CSV. "path": the admin opens each
# account's collections by their path (Radicale, with a rights rule granting the admin);
# "authorize-as": the admin acts as each account (Cyrus httpd admins). See the README.
# [{role}.dav.admin]
# user = "davadmin"
# password = "env:{role.upper()}_DAV_ADMIN_PASSWORD"
# method = "path"
"""


def _sieve(role: str) -> str:
    """The ``[role.sieve]`` table, shown commented out (``items`` gains "filters" with both)."""
    host = f"mail.{'old' if role == 'source' else 'new'}.example"
    return f"""
# Mail filters and out-of-office (Sieve scripts) over ManageSieve (RFC 5804): sieve://host[:4190].
# Logins are this server's: each account's password reference, else the [{role}.admin] login.
# security: "starttls" (default), "tls" (implicit TLS), or "none" (loopback only, unless
# allow_plaintext_login = true). With both [source.sieve] and [target.sieve], items gain "filters".
# [{role}.sieve]
# url = "sieve://{host}:4190"
# security = "starttls"
# verify_certificates = true
# ca_file = ""
# timeout = 60
"""


def _submission(role: str) -> str:
    """The ``[role.submission]`` table, shown commented out (``check`` probes it)."""
    host = f"mail.{'old' if role == 'source' else 'new'}.example"
    return f"""
# Mail submission (RFC 6409), which `mailferry check` probes (EHLO, STARTTLS, AUTH mechanisms,
# version): "submission://host:587" (STARTTLS) or "submissions://host:465" (implicit TLS).
# mailferry never sends mail through it.
# [{role}.submission]
# url = "submission://{host}:587"
# verify_certificates = true
# ca_file = ""
# timeout = 30
"""


_DIRECTORY_SERVER = """\
# [directory.{role}]
# The {what} directory: ldaps://host[:port] (TLS, 636), ldap+starttls://host[:port] (StartTLS,
# 389) or ldap://host[:port] (unencrypted, 389; refused to a host that is not loopback unless
# you set allow_plaintext_login). Only scheme, host and port: containers go in bases.
# url = "{url}"
# The DN to bind (log in) as, and its password by reference: env:NAME or file:PATH.
# bind_dn = "{bind_dn}"
# password = "env:{role_upper}_LDAP_PASSWORD"
# "ad": Active Directory (Samba AD too); "generic": OpenLDAP inetOrgPerson and mail schemas.
# dialect = "ad"
# DNs of the containers to read (see `mailferry directory discover`). Empty: the whole directory.
# bases = []
# An extra LDAP filter, ANDed with mailferry's own, e.g. "(department=Sales)". Empty: none.
# filter = ""
# Check the server's certificate and host name; ca_file: a PEM file of authorities to trust
# (relative to this file; empty: the system's); tls_server_name: the name to check in the
# certificate when url gives an IP address (a Samba DC's certificate names the DC).
# verify_certificates = true
# ca_file = ""
# tls_server_name = ""
# Permit the bind password over ldap:// to a host that is not loopback.
# allow_plaintext_login = false
# Seconds to wait for each operation; entries asked for a page at a time (AD serves 1000).
# timeout = 30
# page_size = 1000
# Attribute names that differ from the dialect's: logical name = LDAP attribute. Logical names:
# guid, sid, sid_history, login, upn, mail, proxy, alias, legacy_dn, uac, member.
# [directory.{role}.attributes]
# alias = "mailAlternateAddress"
"""

_DIRECTORY = f"""\
# Directory migration (`mailferry directory discover|plan|apply`): match the people of the
# source directory (Active Directory or LDAP) to those of the target, create the missing ones
# (disabled), merge target contacts into users and keep old addresses alive. `directory apply`
# writes the accounts CSV named in [accounts], so with [directory] that file need not exist yet.
# To use it, remove the "# " before each [table] and key line below and give your values.
# [directory]
# Where users are created in the target: a container's DN. Required.
# target_container = "OU=Migrated,DC=new,DC=example"
# Match rules, tried in this order: "sid" (objectSid in the target's sIDHistory or objectSid),
# "x500" (legacyExchangeDN and X500: addresses), "smtp" (any mail address), "login"
# (sAMAccountName / uid), "custom" (custom_attribute). Include "x500", "smtp" or "login".
# rules = ["sid", "x500", "smtp", "login"]
# For the "custom" rule (and only then): the attribute compared, e.g. "employeeID".
# custom_attribute = ""
# Also match contacts and groups, not only mail-enabled users.
# include_contacts = false
# include_groups = false
# Add the source legacyExchangeDN as an X500: address and the old SMTP addresses as secondary
# ones, so replies to old mail and cached addresses still arrive.
# keep_old_addresses = true
# Where `directory apply` writes the accounts list for `migrate`. Empty: the [accounts] csv.
# accounts_csv = ""
# What names an account on the IMAP servers: "login" (sAMAccountName / uid) or "mail".
# account_key = "login"
# After apply, log in to each mailbox on the target with the target admin login to confirm it.
# confirm_mailboxes = true
# Active Directory: the suffix of created users' userPrincipalName (their name part is the
# source UPN's, else the login). Empty: the target domain's DNS name.
# upn_suffix = ""

{
    _DIRECTORY_SERVER.format(
        role="source",
        what="source",
        role_upper="SOURCE",
        url="ldaps://dc1.old.example",
        bind_dn="CN=Administrator,CN=Users,DC=old,DC=example",
    )
}
{
    _DIRECTORY_SERVER.format(
        role="target",
        what="target",
        role_upper="TARGET",
        url="ldaps://dc1.new.example",
        bind_dn="CN=Administrator,CN=Users,DC=new,DC=example",
    )
}
# Attributes of created users, beyond those copied from the source person. Values are
# templates: ${{login}} ${{mail}} ${{given}} ${{sn}} ${{primary_smtp}}; $$ is a dollar sign.
# objectClass is a space-separated list.
# [directory.create]
# description = "Migrated from ${{mail}}"

# Set on every matched and created user so the target mail server serves its mailbox
# (templates, as above), e.g. the address a Dovecot reading users from the directory looks up.
# [directory.mail_attributes]
# mail = "${{login}}@new.example"

# Generic dialect (required there): attributes that keep a created user from logging in,
# e.g. with OpenLDAP's ppolicy overlay. Active Directory users are created disabled instead.
# [directory.lock]
# pwdAccountLockedTime = "000001010000Z"

# Your decision for a person the rules can't place (`directory plan` lists the ambiguous and
# conflicting ones first): the source person's DN, and the target entry's DN (a user; or a
# contact, which is merged into a new user) or "create". Repeat the block for more people.
# [[directory.resolve]]
# source = "CN=Frank Fox,OU=Staff,DC=old,DC=example"
# target = "CN=Frank Fox,OU=Sales,DC=new,DC=example"
"""


def render_project(
    *,
    name: str,
    source_url: str,
    target_url: str,
    accounts_csv: str,
    source_admin: str | None,
    source_admin_password: str | None,
    target_admin: str | None,
    target_admin_password: str | None,
    ledger: str | None,
    source_dav: str | None = None,
    target_dav: str | None = None,
) -> str:
    """The text of a new, fully commented project file. Raises :class:`UsageError` on bad input.

    Admin passwords are references (``env:NAME``/``file:PATH``); an admin without one gets
    ``env:SOURCE_ADMIN_PASSWORD`` / ``env:TARGET_ADMIN_PASSWORD``.
    """
    if name.strip() == "":
        raise UsageError("the project name must not be empty")
    if accounts_csv.strip() == "":
        raise UsageError("the accounts CSV path must not be empty")
    if (source_dav is None) != (target_dav is None):
        raise UsageError("give both --source-dav and --target-dav, or neither (calendars need both sides)")
    source = _server("source", source_url, source_admin, source_admin_password) + _dav("source", source_dav)
    target = _server("target", target_url, target_admin, target_admin_password) + _dav("target", target_dav)
    source, target = source + _sieve("source"), target + _sieve("target")
    source, target = source + _submission("source"), target + _submission("target")
    ledger_line = (
        f"ledger = {_toml(ledger)}"
        if ledger
        else '# ledger = "migration.ledger.sqlite"  # default: <this file name without .toml>.ledger.sqlite'
    )
    return f"""\
# mailferry project file, written by `mailferry init`.
#
# Every key is described here; a line starting with "# key =" shows an optional key and its form.
# Relative paths are relative to the folder of this file. Passwords never go in this file (nor
# in the accounts CSV): write a reference instead, env:NAME (an environment variable) or
# file:PATH (a file holding only the password; keep it private, chmod 600).
# `mailferry check` reads this file and the accounts CSV and reports every problem at once.

[project]
# A name for this migration, shown in reports.
name = {_toml(name)}
# The ledger: what mailferry has copied, so that runs resume and never duplicate (SQLite).
# For runs spread over several machines (`migrate --distributed`) it is a PostgreSQL database,
# ledger = "postgresql://mailferry@db.example:5432/mailferry", its password by reference:
# ledger_password = "env:MAILFERRY_LEDGER_PASSWORD"
{ledger_line}
# Folder for run reports.
reports = "reports"
# What to move: "mail", "calendars", "contacts", "filters" (Sieve scripts), "public" (public
# folders), "permissions" (folder ACLs) and "metadata" (folder comments, RFC 5464). Default:
# mail, permissions and metadata (these two where both IMAP servers have them), with calendars
# and contacts when both servers have a [*.dav] table, filters when both have a [*.sieve] table,
# and public when there is a [public] table.
# `mailferry migrate --only calendars,contacts` narrows one run.
# items = ["mail", "calendars", "contacts", "filters", "public", "permissions", "metadata"]

{source}
{target}
[accounts]
# The accounts to migrate, one a line, after a header row. Columns: source_user,target_user
# and optionally source_password,target_password (each a reference env:NAME or file:PATH, or
# empty). An empty target_user means the same name as source_user. Lines starting with # and
# blank lines are ignored.
csv = {_toml(accounts_csv)}

# Settings for one account, matched by source_user; repeat the block for more accounts.
# [[accounts.override]]
# source_user = "bob"
# target_user = "robert.smith"            # another name on the target
# source_password = "file:secrets/bob"    # reference; instead of the CSV cell / admin login
# target_password = "env:BOB_NEW"         # reference
# exclude_folders = ["^Archive/2010$"]    # regular expressions, added to [folders] exclude
# skip = false                            # true: leave this account out

[folders]
# Folder paths are canonical: "/" between levels whatever the server uses, e.g.
# "Projects/2024", and "INBOX". Rules are regular expressions (Python syntax) searched in the path.
# Only folders matching one of these; empty: every folder.
include = []
# Leave out folders matching one of these, e.g. ["^Junk$", "^Trash(/|$)"].
exclude = []
# Replaces, in a source folder name, a character that is the target's hierarchy separator.
separator_substitute = "_"
# Copy which folders each user is subscribed to.
subscriptions = true

# Rename folders on the target; applied in order, the first matching pattern wins. The
# replacement may use \\1 or \\g<name> for the pattern's groups (literal 'strings' keep \\ as is).
# [[folders.rename]]
# pattern = '^Old Archive/(.*)$'
# replacement = 'Archive/\\1'

[messages]
# Only messages whose INTERNALDATE is on or after this date (YYYY-MM-DD). Empty: no limit.
since = ""
# Only messages whose INTERNALDATE is before this date. Empty: no limit.
before = ""
# Skip (and report) messages larger than this. Units: B, KB, MB, GB (1000-based) and
# KiB, MiB, GiB (1024-based), e.g. "50 MB". Empty: no limit.
max_size = ""
# Skip (and report) messages smaller than this. Empty: no limit.
min_size = ""
# Remove from the target the messages mailferry copied that the source no longer has.
# Off by default: mailferry deletes nothing on the target unless told.
propagate_deletions = false
# Carry flag changes (\\Seen, \\Flagged, keywords) over on later passes.
sync_flags = true

# Public (shared) folders: Dovecot's public namespace, Cyrus' shared mailboxes, a "Public
# Folders" tree. They move as their own unit, "#public" in plans and reports, once, not per
# user. Uncomment the table (or add "public" to [project] items) to move them.
# [public]
# The source's and the target's public prefix; default: each server's shared namespace as its
# NAMESPACE answer shows it (Dovecot "Public/", Cyrus "" = shared mailboxes at the top level).
# source_prefix = "Public/"
# target_prefix = ""
# Who reads and writes them. Default: the side's admin logged in as itself (a Cyrus admin); a
# Dovecot master user needs an account to log in as (source_user). With a user and no password,
# the side's admin logs in for that user.
# source_user = "publisher"
# source_password = "env:PUBLISHER_PW"
# target_user = "publisher"
# target_password = "env:PUBLISHER_NEW_PW"
# Each account's own \\Seen on public folders (Dovecot INDEXPVT, Cyrus' per-user seen), carried
# to its target account, and its subscriptions to public folders.
# per_user_seen = true
# subscriptions = true

[calendars]
# Meetings and implicit scheduling (RFC 6638): a server that schedules would e-mail every
# attendee of every imported meeting. "auto": mailferry asks the target; when it schedules,
# imported meetings get SCHEDULE-AGENT=CLIENT on their attendees (nobody is notified, and the
# server will not schedule later updates of those meetings either: the report names them).
# "paused": you have paused the target's scheduling for the migration window (Cyrus:
# caldav_allowscheduling: off), meetings are imported unchanged and scheduling works again
# once you switch it back on. "client": always mark.
scheduling = "auto"
# Remove from the target the items mailferry copied that the source no longer has.
propagate_deletions = false
# Re-create who may see or edit each calendar and address book, for the mapped people.
sharing = true
# Items per calendar-multiget / addressbook-multiget request.
batch_items = 100
# ORGANIZER and ATTENDEE addresses of people who moved are rewritten to their new address:
# through the identity map of `mailferry directory apply`, then these tables. Others are untouched.
# [calendars.addresses]
# "ann@old.example" = "ann.smith@new.example"
# [calendars.domains]
# "old.example" = "new.example"

# Folder permissions (ACLs, item type "permissions"): users are mapped through the accounts and
# the identity map; a group keeps its name on the target (as $name on Dovecot, group:name on
# Cyrus) unless renamed here: a source group = its target name.
# [permissions]
# [permissions.groups]
# "staff" = "team"

[performance]
# Accounts migrated at the same time.
accounts_in_parallel = 4
# Connections writing to the target for one account (at most target max_connections); when
# several accounts run at once they share these, with at least one each.
connections_per_account = 2
# At most this many messages per MULTIAPPEND (RFC 3502) command...
batch_messages = 100
# ...and at most this many bytes.
batch_bytes = "16 MB"
# Tries per failed operation, waiting twice as long each time (exponential backoff).
retries = 5

# The organization around the mailboxes, which `mailferry check` (readiness) and `mailferry
# cutover check` look at: the mail domains whose DNS is checked (MX, A/AAAA, SRV of RFC 6186 and
# RFC 6764, autoconfig/autodiscover, SPF, DKIM, DMARC), the DNS server to ask (default: the
# system resolver), the host names each side's servers are known by (the host of [source] and
# [target] counts too when it is a name), the target's DKIM selectors, how old the last delta
# pass may be at cut-over, and how many days before a certificate's expiry check warns.
# [organization]
# domains = ["example.org"]
# resolver = "192.0.2.53:53"
# source_names = ["mail.old.example"]
# target_names = ["mail.new.example"]
# dkim_selectors = ["mail"]
# delta_window_hours = 24
# expiry_warning_days = 21

# Runs spread over several machines: `mailferry worker` on each, `mailferry migrate
# --distributed` submits the accounts and follows them (needs the PostgreSQL ledger above). The
# Celery broker (Redis; amqp:// for RabbitMQ, then `limits` names a Redis for the cluster's
# connection slots), accounts one worker moves at once, seconds after which a dead worker's task
# goes to another (longer than the longest account takes), seconds after which a dead worker's
# connection slots come back, and messages and bytes per second for the whole cluster (0: no limit).
# [distributed]
# broker = "redis://queue.example:6379/0"
# broker_password = "env:MAILFERRY_BROKER_PASSWORD"
# limits = "redis://queue.example:6379/1"
# accounts_per_worker = 2
# visibility_timeout = 3600
# lease_seconds = 30
# rate_messages = 0
# rate_bytes = 0

# Batches (waves): named sets of source accounts migrated and approved together, as the console
# (`mailferry console`) groups them. A batch names at least one account.
# [batches]
# "wave 1" = ["alice", "bob"]

{_DIRECTORY}"""
