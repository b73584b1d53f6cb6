"""``/healthz`` (the process answers) and ``/readyz`` (its database and broker are reachable).

Both are cheap for load balancers to poll: no session, no template, and the database check
borrows a pooled connection for one ``SELECT 1`` with a short wait, so a busy or absent
database makes the answer 503, never a stalled worker.
"""
import logging

import gevent
import psycopg2
from django.db import Error, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from chat import runtime
from chat.db import connection_pool
from chat.errors import ServerBusy

logger = logging.getLogger(__name__)

DATABASE_WAIT = 1.0  # seconds a readiness check waits for a pooled connection
PROBE_TIMEOUT = 2.0  # seconds more for its SELECT 1 to answer


@never_cache
@require_GET
def healthz(request):
    """Say that the process answers."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    """Say whether the database and the broker are reachable: 200 when both are, else 503."""
    checks = {"database": database_state(), "broker": _broker()}
    ready = all(state == "ok" for state in checks.values())
    if not ready:
        logger.warning("not ready: %s", checks)
    return JsonResponse({"status": "ok" if ready else "unavailable", **checks},
                        status=200 if ready else 503)


def database_state(pool=None, wait=DATABASE_WAIT):
    """Run ``SELECT 1`` on a connection of ``pool`` (the worker's); return "ok", "busy" or why not.

    Every database error counts, ``InterfaceError`` ("connection already closed") as much as
    ``OperationalError``: a probe that raises answers 500, and load balancers may read a 500
    as the application's fault rather than the database's.
    """
    try:
        # Bounded whatever the socket does: a server that acknowledges and never answers
        # is reported within a few seconds, not when TCP gives up.
        with gevent.Timeout(wait + PROBE_TIMEOUT, ServerBusy("no answer")):
            with (pool or connection_pool()).lend(wait), connection.cursor() as cursor:
                cursor.execute("SELECT 1")
    except ServerBusy as busy:
        if str(busy) == "no answer":
            return f"unreachable: no answer to SELECT 1 within {wait + PROBE_TIMEOUT:g} s"
        return "busy"
    except (Error, psycopg2.Error, OSError) as error:
        reason = str(error).strip().splitlines()
        return f"unreachable: {reason[0] if reason else type(error).__name__}"
    return "ok"


def _broker():
    broker = runtime.hub().broker
    connected = getattr(broker, "connected", None)  # listening brokers say whether they listen
    if connected is None or connected.is_set():
        return "ok"
    return "not subscribed"
