"""The /ws/ endpoint: an ordinary Django view behind the usual middleware."""
from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from chat import runtime
from chat.errors import ServerBusy
from chat.ratelimit import Budgets
from chat.sockets import SocketSession

#: The environ key under which the view leaves the socket session for the worker to run.
SOCKET_SESSION = "chat.socket_session"


@require_GET
def websocket(request):
    """Set up one WebSocket: the user comes from the session cookie, like any view.

    gevent-websocket has already sent the 101 (after the handler checked the Origin), so an
    anonymous user gets the socket closed with 4401. The view returns once the socket is set
    up and leaves its session in the environ: the worker runs it after Django has finished
    the request (chat/worker.py), so nothing of the request stays alive for the socket's life.
    """
    ws = request.environ.get("wsgi.websocket")
    if ws is None:
        return HttpResponse("This endpoint speaks WebSocket; see docs/protocol.md.\n",
                            status=426, headers={"Upgrade": "websocket"},
                            content_type="text/plain")
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    try:
        # get_user's rules (chat/sessioncheck.py), batched with the other handshakes waiting.
        signed_in = runtime.sign_ins().look_up(session_key)
    except ServerBusy:
        ws.close(1013, "the server is busy: try again later")  # RFC 6455 7.4.1, Try Again Later
        return HttpResponse()
    if signed_in is None:
        ws.close(4401, "authentication required")
        return HttpResponse()
    user, expires_at = signed_in
    session = SocketSession(ws, user, hub=runtime.hub(), limiter=runtime.limiter(),
                            authority=runtime.authority(), session_key=session_key,
                            budgets=Budgets.from_settings(),
                            ping_interval=settings.CHAT_PING_INTERVAL,
                            idle_timeout=settings.CHAT_IDLE_TIMEOUT,
                            close_timeout=settings.CHAT_CLOSE_TIMEOUT)
    request.environ[SOCKET_SESSION] = (session, expires_at)
    return HttpResponse()
