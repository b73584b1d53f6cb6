"""The Origin rule of PROTOCOL.md: same host and port, or listed; the scheme is not compared."""
import pytest

from chat.origins import origin_allowed


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


@pytest.mark.parametrize("peer, allowed", [("127.0.0.1", True), ("198.51.100.7", False)])
def test_the_host_compared_is_the_forwarded_one_only_from_a_trusted_proxy(peer, allowed):
    from chat.proxies import apply, trusted_networks

    environ = apply({"REMOTE_ADDR": peer, "HTTP_HOST": "127.0.0.1:8000",
                     "HTTP_X_FORWARDED_HOST": "chat.example.com"}, trusted_networks(("127.0.0.1",)))
    assert origin_allowed("https://chat.example.com", environ["HTTP_HOST"], []) is allowed
