"""The trusted-proxy rules (chat/proxies.py): who the client is, and which headers count."""
import ipaddress

import pytest

from chat.proxies import apply, client_address, parse_address, trusted_networks

TRUSTED = trusted_networks(("127.0.0.1", "10.0.0.0/8", "2001:db8::/32"))


def environ(peer, **headers):
    return {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:8000",
            **{f"HTTP_{name.upper()}": value for name, value in headers.items()}}


def test_a_trusted_peer_gives_the_client_scheme_and_host():
    env = apply(environ("127.0.0.1", x_forwarded_for="203.0.113.9", x_forwarded_proto="https",
                        x_forwarded_host="chat.example.com"), TRUSTED)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"]) == (
        "203.0.113.9", "https", "chat.example.com")
    assert env["chat.peer"] == "127.0.0.1"


def test_an_untrusted_peer_keeps_its_address_and_loses_the_headers():
    env = apply(environ("198.51.100.7", x_forwarded_for="127.0.0.1", x_forwarded_proto="https",
                        x_forwarded_host="evil.example"), TRUSTED)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"]) == (
        "198.51.100.7", "http", "127.0.0.1:8000")
    assert not any(name.startswith("HTTP_X_FORWARDED") for name in env), env


def test_nobody_is_trusted_by_default():
    env = apply(environ("127.0.0.1", x_forwarded_for="203.0.113.9"), trusted_networks(()))
    assert env["REMOTE_ADDR"] == "127.0.0.1" and "HTTP_X_FORWARDED_FOR" not in env


def test_the_right_most_untrusted_hop_is_the_client():
    # The client wrote "6.6.6.6" itself; our proxies appended 203.0.113.9 and 10.1.2.3.
    assert client_address(ipaddress.ip_address("127.0.0.1"), "6.6.6.6, 203.0.113.9, 10.1.2.3",
                          TRUSTED) == ipaddress.ip_address("203.0.113.9")


def test_all_hops_trusted_gives_the_left_most():
    assert client_address(ipaddress.ip_address("127.0.0.1"), "10.0.0.5, 10.0.0.6",
                          TRUSTED) == ipaddress.ip_address("10.0.0.5")


@pytest.mark.parametrize("forwarded_for, client", [
    ("not-an-address", "127.0.0.1"),             # garbage from our own proxy: the proxy itself
    ("6.6.6.6, garbage, 10.0.0.7", "10.0.0.7"),  # stop at the last trusted hop before it
    ("garbage, 203.0.113.9", "203.0.113.9"),     # to the left of the client: never read
    (" , ", "127.0.0.1"),
    ("203.0.113.9:4711", "203.0.113.9"),
    ("203.0.113.9, [2001:db8::5]:443", "203.0.113.9"),
    ("::ffff:203.0.113.9", "203.0.113.9"),
    ("999.1.1.1", "127.0.0.1"),
    ("1.2.3.4:http", "127.0.0.1"),
])
def test_garbage_and_odd_hops(forwarded_for, client):
    env = apply(environ("127.0.0.1", x_forwarded_for=forwarded_for), TRUSTED)
    assert env["REMOTE_ADDR"] == client


def test_an_ipv6_proxy_and_an_ipv4_mapped_peer_are_trusted():
    assert apply(environ("2001:db8::1", x_forwarded_for="203.0.113.9"), TRUSTED)["REMOTE_ADDR"] == "203.0.113.9"
    assert apply(environ("::ffff:127.0.0.1", x_forwarded_for="203.0.113.9"), TRUSTED)["REMOTE_ADDR"] == "203.0.113.9"


@pytest.mark.parametrize("proto, host, scheme, host_after", [
    ("gopher", "chat.example.com\r\nX: y", "http", "127.0.0.1:8000"),  # garbage: kept as is
    ("http, https", "a.example, chat.example.com:8443", "https", "chat.example.com:8443"),
    ("HTTPS", "Chat.Example.com", "https", "chat.example.com"),
    ("", "", "http", "127.0.0.1:8000"),
    ("https", "[::1]:8443", "https", "[::1]:8443"),
    ("https", "bad_host!", "https", "127.0.0.1:8000"),
])
def test_scheme_and_host_come_from_the_nearest_proxy_when_valid(proto, host, scheme, host_after):
    env = apply(environ("127.0.0.1", x_forwarded_proto=proto, x_forwarded_host=host), TRUSTED)
    assert (env["wsgi.url_scheme"], env["HTTP_HOST"]) == (scheme, host_after)


def test_a_trusted_peer_without_forwarded_for_stays_the_client():
    env = apply(environ("10.0.0.9", x_forwarded_proto="https"), TRUSTED)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("10.0.0.9", "https")


def test_a_unix_socket_peer_is_never_trusted():
    env = apply(environ("", x_forwarded_for="203.0.113.9"), TRUSTED)
    assert env["REMOTE_ADDR"] == "" and "HTTP_X_FORWARDED_FOR" not in env


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.1", "10.0.0.1"), ("[::1]", "::1"), ("[::1]:80", "::1"), ("::1", "::1"),
    ("[::1", None), ("[::1]x", None), ("", None), ("localhost", None),
])
def test_parse_address(text, expected):
    ip = parse_address(text)
    assert (str(ip) if ip else None) == expected


def test_malformed_trusted_entries_trust_nothing_and_are_reported(settings):
    from chat.checks import check_proxy_settings

    assert trusted_networks(("proxy.example", "10.0.0.0/8")) == (ipaddress.ip_network("10.0.0.0/8"),)
    settings.CHAT_TRUSTED_PROXIES = ["proxy.example"]
    [error] = check_proxy_settings(None)
    assert error.id == "chat.E030" and "'proxy.example'" in error.msg


def test_the_proxy_ssl_header_without_trusted_proxies_is_reported(settings):
    from chat.checks import check_proxy_settings

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.CHAT_TRUSTED_PROXIES = []
    [error] = check_proxy_settings(None)
    assert error.id == "chat.E032"
    settings.CHAT_TRUSTED_PROXIES = ["127.0.0.1"]
    assert check_proxy_settings(None) == []


def test_production_behind_a_trusted_proxy_passes_check_deploy():
    from tests.test_settings import PRODUCTION, manage

    result = manage("check", "--deploy", "--fail-level", "WARNING", CHAT_TRUSTED_PROXIES="127.0.0.1",
                    CHAT_BODY_TIMEOUT="30", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    # security.W021 (HSTS preload off, opt-in here) is the one silenced.
    assert "System check identified no issues (1 silenced)." in result.stdout
