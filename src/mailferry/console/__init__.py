"""The migration console: a local web wizard on top of :mod:`mailferry.api`.

Terminology (as everywhere in mailferry): a *project* is one TOML file and its ledger; a *batch*
is a named set of source accounts migrated and approved together (a wave), kept in the project
file's ``[batches]``; an *approval* is an admin's go for a batch's cut-over, kept in the ledger.

Layout:

- ``projectfile``: find or create the project file in PROJECT_DIR; change keys of it line by line
  (comments kept) and only after the whole result loads (nothing half-saved).
- ``security``: the access token, sessions, CSRF tokens, the listen-address rule.
- ``runs``: migrate runs of batches in a worker process (``python -m mailferry.console.worker``)
  that outlives the browser; progress as JSON lines in a file the page streams (server-sent events).
- ``app``: the Starlette application; every page calls the same :mod:`mailferry.api` functions as
  the CLI.
- ``serve``: ``mailferry console``: bind, print the login URL, run uvicorn.
"""
