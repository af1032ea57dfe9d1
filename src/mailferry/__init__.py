"""mailferry: move a mail organization between servers, exactly once, verifiably."""

__version__ = "0.1.0"
