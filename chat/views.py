"""Pages: the start page and the rooms (accounts: chat/accounts.py; /ws/: chat/wsendpoint.py)."""
import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from chat import throttle
from chat.forms import RoomForm
from chat.models import Message, Presence, Room

logger = logging.getLogger(__name__)

ROOM_PAGE_MESSAGES = 50
ROOMS_LIMITED = "Too many rooms were created from your address. Try again later."


@login_required
def home(request):
    """Show the signed-in user's start page with the rooms they may join."""
    return render(request, "chat/home.html", {"rooms": rooms_with_presence(request.user)})


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
        address = throttle.client_address(request)
        limit = throttle.address_limit("room")
        if not limit.allow(address):
            logger.info("room creation from %s refused: over the per-address limit", address)
            form.add_error(None, ROOMS_LIMITED)
            response = render(request, "chat/room_form.html", {"form": form}, status=429)
            response["Retry-After"] = str(limit.retry_after(address))
            return response
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
