"""Throw-away servers and sample data for the tests, the demo and the benchmark.

- :mod:`mailferry.sandbox.servers`: private Dovecot and Cyrus IMAP servers on 127.0.0.1 (each in
  its own directory, several side by side), a TCP proxy that drops connections on demand, and
  ``seed_messages`` to put messages into a server. Needs the server binaries listed in
  ``tests/servers/REQUIREMENTS.txt``; nothing here is used by a migration itself.
"""
