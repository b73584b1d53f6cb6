"""The Origin rule of PROTOCOL.md: same host and port, or listed; the scheme is not compared."""
import pytest

from chat.worker import origin_allowed


@pytest.mark.parametrize("origin, host", [
    (None, "chat.example.com"),
    ("https://chat.example.com", "chat.example.com"),
    ("http://chat.example.com", "chat.example.com"),
    ("https://chat.example.com:443", "chat.example.com"),
    ("https://chat.example.com", "chat.example.com:443"),
    ("http://localhost:8000", "localhost:8000"),
    ("HTTPS://Chat.Example.com", "chat.example.com"),
    ("https://app.example.com", "chat.example.com"),  # listed
])
def test_allowed(origin, host):
    assert origin_allowed(origin, host, ["https://app.example.com/"])


@pytest.mark.parametrize("origin, host", [
    ("https://evil.example", "chat.example.com"),
    ("http://localhost:8001", "localhost:8000"),
    ("null", "chat.example.com"),
    ("", "chat.example.com"),
    ("https://chat.example.com.evil.example", "chat.example.com"),
    ("https://chat.example.com", None),
])
def test_refused(origin, host):
    assert not origin_allowed(origin, host, ["https://app.example.com"])
