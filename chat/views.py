"""Pages: the start page and the rooms (accounts: chat/accounts.py; /ws/: chat/wsendpoint.py)."""
import logging
import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from chat import roompost, throttle
from chat.errors import BadRequest, RateLimited, ServerBusy
from chat.forms import RoomForm
from chat.models import Message, Presence, Room
from chat.protocol import is_text

logger = logging.getLogger(__name__)

ROOM_PAGE_MESSAGES = 50
ROOMS_LIMITED = "Too many rooms were created from your address. Try again later."
POST_BUSY = "The server is busy. Your message was not sent; press Send again in a moment."


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
    return room_page(request, room)


def room_page(request, room, status=200, error=None, body="", ref=None):
    """Render the room page; the form carries ``ref`` (a fresh UUID4 unless given) and ``body``.

    The ref makes the form's submit idempotent: a double submit or a resend after an error
    stores one message (chat/rooms.py, ``post``). The JavaScript client makes refs of its own.
    """
    latest = (Message.objects.shown().before(room, room.last_seq + 1)
              .select_related("user")[:ROOM_PAGE_MESSAGES])
    context = {"room": room, "messages": list(latest)[::-1], "error": error, "body": body,
               "ref": ref or str(uuid.uuid4()), "body_max": settings.CHAT_BODY_MAX_CHARS}
    return render(request, "chat/room_detail.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def room_post(request, slug):
    """Post the room page's form: store the message once per ref, publish it, 303 to the page.

    A GET (the page's "Show new messages" link, or the way back from the login page) is sent
    to the page's newest messages: a link to the page itself would, from a URL with a
    fragment, scroll without reloading.
    """
    room = get_object_or_404(Room, slug=slug)
    if not room.admits(request.user):
        return render(request, "chat/room_private.html", status=403)
    if request.method == "GET":
        return see_other(room, "end")
    body, ref = request.POST.get("body", ""), request.POST.get("ref", "")
    try:
        message = roompost.post(request.user, room, roompost.checked(body, ref), ref)
    except BadRequest as error:
        return room_page(request, room, 400, error.detail, body, _reusable(ref))
    except RateLimited as error:
        response = room_page(request, room, 429, error.detail, body, _reusable(ref))
        response["Retry-After"] = "1"
        return response
    except ServerBusy:
        response = room_page(request, room, 503, POST_BUSY, body, _reusable(ref))
        response["Retry-After"] = "1"
        return response
    return see_other(room, f"m{message.seq}")


def _reusable(ref):
    """Keep a valid ref for the resend of a refused post: if it was stored after all, once."""
    return ref if 1 <= len(ref) <= settings.CHAT_REF_MAX_CHARS and is_text(ref) else None


def see_other(room, anchor):
    """Answer 303 See Other to the room page at ``#anchor`` (GET, whatever the method was)."""
    response = HttpResponseRedirect(f"{reverse('room_detail', args=[room.slug])}#{anchor}")
    response.status_code = 303
    return response
