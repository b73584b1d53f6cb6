"""``/healthz`` (the process answers) and ``/readyz`` (its database and broker are reachable).

Both are cheap for load balancers to poll: no session, no template, and the database check
borrows a pooled connection for one ``SELECT 1`` with a short wait, so a busy or absent
database makes the answer 503, never a stalled worker.
"""
import logging

from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from chat import runtime
from chat.db import connection_pool
from chat.errors import ServerBusy

logger = logging.getLogger(__name__)

DATABASE_WAIT = 1.0  # seconds a readiness check waits for a pooled connection


@never_cache
@require_GET
def healthz(request):
    """Say that the process answers."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    """Say whether the database and the broker are reachable: 200 when both are, else 503."""
    checks = {"database": _database(), "broker": _broker()}
    ready = all(state == "ok" for state in checks.values())
    if not ready:
        logger.warning("not ready: %s", checks)
    return JsonResponse({"status": "ok" if ready else "unavailable", **checks},
                        status=200 if ready else 503)


def _database():
    try:
        with connection_pool().lend(DATABASE_WAIT), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except ServerBusy:
        return "busy"
    except DatabaseError as error:
        return f"unreachable: {str(error).strip().splitlines()[0]}"
    return "ok"


def _broker():
    broker = runtime.hub().broker
    connected = getattr(broker, "connected", None)  # listening brokers say whether they listen
    if connected is None or connected.is_set():
        return "ok"
    return "not subscribed"
