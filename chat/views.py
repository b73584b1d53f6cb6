"""Pages, and the /ws/ endpoint as an ordinary Django view behind the usual middleware."""
import logging

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import LoginView
from django.db import connections, transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from chat import runtime, sessioncheck, throttle
from chat.db import db_work
from chat.forms import RoomForm
from chat.models import Message, Presence, Room
from chat.ratelimit import Budgets
from chat.sockets import SocketSession

logger = logging.getLogger(__name__)

ROOM_PAGE_MESSAGES = 50


@login_required
def home(request):
    """Show the signed-in user's start page with the rooms they may join."""
    return render(request, "chat/home.html", {"rooms": rooms_with_presence(request.user)})


class ThrottledLoginView(LoginView):
    """Django's log-in, refused with 429 after too many failures (chat/throttle.py)."""

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        if throttle.is_throttled(username, throttle.client_address(request)):
            minutes = max(1, round(settings.CHAT_LOGIN_WINDOW / 60))
            form = self.get_form_class()(request, initial={"username": username})
            context = self.get_context_data(form=form, throttled=(
                f"Too many failed log-in attempts. Wait {minutes} minute{'s' * (minutes > 1)} "
                "and try again."))
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        throttle.record_failure(self.request.POST.get("username", ""),
                                throttle.client_address(self.request))
        return super().form_invalid(form)

    def form_valid(self, form):
        throttle.forget(form.get_user().get_username())
        return super().form_valid(form)


def signup(request):
    """Create an account with Django's ``UserCreationForm`` and sign the new user in."""
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def room_list(request):
    """List the rooms the user may join, with who is online in each."""
    return render(request, "chat/room_list.html", {"rooms": rooms_with_presence(request.user)})


def rooms_with_presence(user):
    """The rooms ``user`` may join, each with ``online``: the usernames present, any worker."""
    rooms = list(Room.objects.visible_to(user))
    online = {}
    for slug, username in (Presence.objects.live(settings.CHAT_PRESENCE_TTL)
                           .filter(room__in=[room.slug for room in rooms])
                           .values_list("room", "username").distinct()):
        online.setdefault(slug, []).append(username)
    for room in rooms:
        room.online = sorted(online.get(room.slug, []))
    return rooms


@login_required
@require_http_methods(["GET", "POST"])
def room_create(request):
    """Create a room from ``RoomForm``, make its creator a member and open its page."""
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            room = form.save()
            room.members.add(request.user)
        logger.info("room %s created by %s", room.slug, request.user.get_username())
        return redirect("room_detail", slug=room.slug)
    return render(request, "chat/room_form.html", {"form": form})


@login_required
@require_GET
def room_detail(request, slug):
    """Show a room and its latest messages, oldest first; 403 for a private room's outsiders."""
    room = get_object_or_404(Room, slug=slug)
    if not room.admits(request.user):
        return render(request, "chat/room_private.html", status=403)
    latest = (Message.objects.shown().before(room, room.last_seq + 1)
              .select_related("user")[:ROOM_PAGE_MESSAGES])
    return render(request, "chat/room_detail.html",
                  {"room": room, "messages": list(latest)[::-1]})


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
        session.run(expires_at)  # logs its opening, its errors and its close
    finally:
        connections.close_all()
    return HttpResponse()
