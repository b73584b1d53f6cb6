"""``/metrics``: Prometheus' scrape of every worker's metrics, for allowed clients only.

A client may scrape when its address is in ``CHAT_METRICS_ALLOWED`` (networks; loopback by
default) or, when ``CHAT_METRICS_TOKEN`` is set, when it sends ``Authorization: Bearer
<token>``. Anyone else gets 403. The address is ``REMOTE_ADDR``: the TCP peer's, or, when the
peer is in ``CHAT_TRUSTED_PROXIES``, the client's as the proxy tells it (chat/proxies.py), so
that a proxy on this host does not make every client look local (README, Deploy).
"""
import hmac
import ipaddress
import logging

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from chat import metrics as chat_metrics
from chat.proxies import parse_networks  # noqa: F401  (chat.checks imports it from here)

logger = logging.getLogger(__name__)

REFUSAL = "metrics are served to CHAT_METRICS_ALLOWED addresses and CHAT_METRICS_TOKEN holders only\n"


@never_cache
@require_GET
def metrics(request):
    """Serve the metrics in Prometheus' text format, or 403 to a client not allowed."""
    if not scrape_allowed(request.META):
        logger.info("refused /metrics to %s (peer %s)", request.META.get("REMOTE_ADDR"),
                    request.META.get("chat.peer", request.META.get("REMOTE_ADDR")))
        return HttpResponseForbidden(REFUSAL, content_type="text/plain")
    return HttpResponse(chat_metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


def scrape_allowed(meta):
    """Tell whether the request (its WSGI environ) may read the metrics."""
    return (token_matches(meta.get("HTTP_AUTHORIZATION", ""), settings.CHAT_METRICS_TOKEN)
            or address_allowed(meta.get("REMOTE_ADDR", ""), settings.CHAT_METRICS_ALLOWED))


def token_matches(authorization, token):
    """Tell whether ``authorization`` is ``Bearer <token>`` (never when no token is set)."""
    scheme, _, given = authorization.partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    # In constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(given.strip().encode("latin-1", "replace"), token.encode("utf-8"))


def address_allowed(address, allowed):
    """Tell whether ``address`` is in one of the ``allowed`` networks (malformed ones: none)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # '' with a Unix-socket bind: only the token lets such a client in
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 on a dual-stack bind
        ip = ip.ipv4_mapped
    return any(ip in network for network in parse_networks(allowed)[0])

