"""Trusted reverse proxies: the client's address, scheme and host behind nginx.

Behind a proxy the TCP peer is the proxy, so every client would share its address (one log-in
allowance for all, ``/metrics`` open to anyone through a proxy on this host) and its ``Host``.
When the peer is in ``CHAT_TRUSTED_PROXIES`` the handler (chat/worker.py) rewrites the WSGI
environ before the Origin check and Django: ``REMOTE_ADDR`` becomes the right-most
``X-Forwarded-For`` hop that is not a trusted proxy (each proxy appends the address it got the
request from, so hops to the right of the first untrusted one were written by us, those to its
left by whoever sent the request; all trusted: the left-most), ``wsgi.url_scheme`` comes from
``X-Forwarded-Proto`` and ``HTTP_HOST`` from ``X-Forwarded-Host``. The peer stays in
``chat.peer``. From any other peer those headers are removed, so nothing downstream (Django's
``SECURE_PROXY_SSL_HEADER`` included) can be fooled by a client that writes them itself.

gunicorn's master imports this module with the worker class: it imports neither Django nor
prometheus_client (metrics created before the fork would write to the master's files).
"""
import functools
import ipaddress
import logging
import re

logger = logging.getLogger(__name__)

FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")
PEER_KEY = "chat.peer"
# A host and optional port as Django accepts them (django.http.request.host_validation_re).
HOST_RE = re.compile(r"([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(:[0-9]+)?")


def parse_networks(values):
    """Parse addresses and CIDR networks; return (networks, the values that are neither)."""
    networks, malformed = [], []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            malformed.append(value)
    return networks, malformed


@functools.lru_cache(maxsize=8)
def trusted_networks(values):
    """Parse the ``CHAT_TRUSTED_PROXIES`` tuple once; malformed entries trust nothing."""
    return tuple(parse_networks(values)[0])


def parse_address(text):
    """Return the IP address of one forwarded hop or peer, or None if it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:80``; an IPv4-mapped IPv6 address counts as its IPv4 address.
    """
    text = text.strip()
    if text.startswith("["):
        text, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            return None
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def is_trusted(ip, networks):
    """Tell whether ``ip`` (an address or None) belongs to a trusted proxy."""
    return ip is not None and any(ip in network for network in networks)


def client_address(peer, forwarded_for, networks):
    """Return the client's address for a request from the trusted ``peer``.

    Walk ``X-Forwarded-For`` from the right over trusted proxies; the first hop that is not
    one is the client. A malformed hop ends the walk at the last trusted address reached: what
    lies to its left was not written by a proxy we trust.
    """
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        ip = parse_address(hop)
        if ip is None:
            break
        client = ip
        if not is_trusted(ip, networks):
            break
    return client


def last_value(header):
    """Return the right-most comma-separated value of a header (the nearest proxy's), lowered."""
    return header.rsplit(",", 1)[-1].strip().lower()


def apply(environ, networks):
    """Rewrite ``environ`` for a request from a trusted proxy; strip the headers otherwise."""
    peer_text = environ.get("REMOTE_ADDR", "")
    environ[PEER_KEY] = peer_text
    peer = parse_address(peer_text)
    if not is_trusted(peer, networks):
        for name in FORWARDED_HEADERS:
            environ.pop(name, None)
        return environ
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded_for:
        environ["REMOTE_ADDR"] = str(client_address(peer, forwarded_for, networks))
    scheme = last_value(environ.get("HTTP_X_FORWARDED_PROTO", ""))
    if scheme in ("http", "https"):
        environ["wsgi.url_scheme"] = scheme
    host = last_value(environ.get("HTTP_X_FORWARDED_HOST", ""))
    if HOST_RE.fullmatch(host):
        environ["HTTP_HOST"] = host
    return environ
