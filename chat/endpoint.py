"""The /ws/ endpoint: an ordinary Django view behind the usual middleware."""
import logging

from django.conf import settings
from django.db import connections
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from chat import admission, runtime, sessioncheck
from chat.db import db_work
from chat.ratelimit import Budgets
from chat.sockets import SocketSession

logger = logging.getLogger(__name__)


@require_GET
def websocket(request):
    """Serve one WebSocket: the user comes from the session cookie, like any view.

    gevent-websocket has already sent the 101 (after the handler checked the Origin), so
    an anonymous user gets the socket closed with 4401. The response is never sent and
    ``request_finished`` never fires, so this view closes its own connections.
    """
    ws = request.environ.get("wsgi.websocket")
    if ws is None:
        return HttpResponse("This endpoint speaks WebSocket; see docs/protocol.md.\n",
                            status=426, headers={"Upgrade": "websocket"},
                            content_type="text/plain")
    try:
        with db_work():
            user = request.user
            authenticated = user.is_authenticated  # loads the session and the user now
            if authenticated:  # the socket is checked again the moment its session expires
                expires_at = sessioncheck.session_expiry(request.session.session_key)
        if not authenticated:
            ws.close(4401, "authentication required")
            return HttpResponse()
        session = SocketSession(ws, user, hub=runtime.hub(), limiter=runtime.limiter(),
                                authority=runtime.authority(),
                                session_key=request.session.session_key,
                                budgets=Budgets.from_settings(),
                                ping_interval=settings.CHAT_PING_INTERVAL,
                                idle_timeout=settings.CHAT_IDLE_TIMEOUT,
                                close_timeout=settings.CHAT_CLOSE_TIMEOUT)
        admission.registered(request.environ)  # set up: the next handshake may take its slot
        session.run(expires_at)  # logs its opening, its errors and its close
    finally:
        connections.close_all()
    return HttpResponse()
