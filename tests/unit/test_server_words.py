import pytest

from mailferry.formats.server_words import server_words


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            "APPEND command error: BAD [b'Error in IMAP command APPEND: Invalid arguments. (0.001 + 0.000 secs).']",
            "APPEND command error: BAD Error in IMAP command APPEND: Invalid arguments.",
        ),
        (
            "STATUS failed: [b'Mailbox does not exist (0.001 + 0.000 + 0.001 secs).']",
            "STATUS failed: Mailbox does not exist.",
        ),
        ("Completed (0.000 secs 1 calls)", "Completed"),
        ("FETCH failed: Mailbox does not exist (0.000 sec)", "FETCH failed: Mailbox does not exist"),
        ("APPEND failed: Message contains invalid header", "APPEND failed: Message contains invalid header"),
        ("[b'caf\\xc3\\xa9 is full']", "café is full"),
        (
            'NO [b"[OVERQUOTA] Quota exceeded (mailbox for user is full)"]',
            "NO [OVERQUOTA] Quota exceeded (mailbox for user is full)",
        ),
        ("[CANNOT] Keyword length too long (0.001 + 0.000 secs).", "[CANNOT] Keyword length too long."),
    ],
)
def test_server_words(raw: str, clean: str) -> None:
    assert server_words(raw) == clean


def test_idempotent() -> None:
    raw = "BAD [b'Error in IMAP command: x (0.002 + 0.000 secs).']"
    assert server_words(server_words(raw)) == server_words(raw)
