"""Pages, and the /ws/ endpoint as an ordinary Django view behind the usual middleware."""
import logging

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import connections
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from chat.db import db_work
from chat.sockets import SocketSession

logger = logging.getLogger(__name__)


@login_required
def home(request):
    """Show the signed-in user's start page."""
    return render(request, "chat/home.html")


def signup(request):
    """Create an account with Django's ``UserCreationForm`` and sign the new user in."""
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


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
        if not authenticated:
            ws.close(4401, "authentication required")
            return HttpResponse()
        logger.info("socket opened by %s", user.get_username())
        SocketSession(ws, user, queue_size=settings.CHAT_SEND_QUEUE_SIZE,
                      ping_interval=settings.CHAT_PING_INTERVAL,
                      idle_timeout=settings.CHAT_IDLE_TIMEOUT).run()
        logger.info("socket of %s closed (%s)", user.get_username(), ws.close_code)
    finally:
        connections.close_all()
    return HttpResponse()
