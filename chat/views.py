"""Pages: the start page and the rooms (accounts: chat/accounts.py; /ws/: chat/wsendpoint.py)."""
import logging
import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from chat import direct, mentions, reads, roompost, throttle
from chat.errors import BadRequest, RateLimited, ServerBusy
from chat.forms import RoomForm
from chat.models import Message, Presence, Room
from chat.protocol import is_text

logger = logging.getLogger(__name__)

ROOM_PAGE_MESSAGES = 50
ROOMS_PER_PAGE = 50
DIRECT_SHOWN = 50  # direct messages on the start page and the room list; /direct/ pages them
ROOMS_LIMITED = "Too many rooms were created from your address. Try again later."
POST_BUSY = "The server is busy. Your message was not sent; press Send again in a moment."


@login_required
def home(request):
    """Show the signed-in user's start page: their direct messages and a page of rooms."""
    return render(request, "chat/home.html", room_lists(request))


@login_required
def room_list(request):
    """List the rooms the user may join, a page at a time, with who is online in each."""
    return render(request, "chat/room_list.html", room_lists(request))


def room_lists(request):
    """The context of the room lists: ``?page=`` of the rooms, and the newest direct messages.

    The newest activity first; ``online`` is read for the rooms shown only, in one query.
    """
    page = Paginator(visible_rooms(request.user), ROOMS_PER_PAGE).get_page(request.GET.get("page"))
    conversations = list(direct.conversations_of(request.user)[:DIRECT_SHOWN + 1])
    directs = direct.listed(conversations[:DIRECT_SHOWN], request.user)
    rooms = list(page.object_list)
    with_presence(rooms + directs)
    reads.with_unread(request.user, rooms + directs)  # one query for the page's rooms
    return {"rooms": rooms, "page_obj": page, "directs": directs,
            "more_directs": len(conversations) > DIRECT_SHOWN}


def visible_rooms(user):
    """The rooms ``user`` may join but direct conversations, the newest activity first.

    Membership as a subquery, not a join: no DISTINCT, so the page's rows come off the
    ``active_at`` index.
    """
    mine = Room.members.through.objects.filter(user_id=user.pk).values("room_id")
    return (Room.objects.filter(Q(private=False) | Q(pk__in=mine)).filter(direct__isnull=True)
            .order_by("-active_at", "-pk"))


def with_presence(rooms):
    """Give each of ``rooms`` ``online``: the usernames present in it, any worker."""
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
    rooms = mentions.with_unseen(reads.with_marker(Room.objects.all(), request.user), request.user)
    room = get_object_or_404(rooms, slug=slug)
    mentions.remember_unseen(request.user, room.unseen_mentions)
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
    messages = list(latest)[::-1]
    last_read = reads.last_read(request.user, room)  # read with the room, when it could
    # The "New messages" line goes above the first message after the marker that others wrote.
    first_unread = next((m.seq for m in messages if m.seq > last_read and m.user_id != request.user.pk),
                        None)
    context = {"room": room, "messages": messages, "error": error, "body": body,
               "last_read": last_read, "first_unread": first_unread,
               "ref": ref or str(uuid.uuid4()), "body_max": settings.CHAT_BODY_MAX_CHARS,
               "edit_window": f"{settings.CHAT_EDIT_WINDOW:g}"}
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


# Direct messages (chat/direct.py)

@login_required
@require_http_methods(["GET", "POST"])
def direct_list(request):
    """GET: the user's direct conversations, ``?page=`` at a time. POST: start one.

    The POST's ``username`` is whom to write to; the pair's room is found or made (once per
    pair, chat/direct.py), then 303 to it. Refusals show the start page with the reason.
    """
    if request.method == "POST":
        return direct_start(request, request.POST.get("username", ""))
    page = Paginator(direct.conversations_of(request.user), ROOMS_PER_PAGE).get_page(
        request.GET.get("page"))
    rooms = with_presence(direct.listed(page.object_list, request.user))
    reads.with_unread(request.user, rooms)
    return render(request, "chat/direct_list.html", {"directs": rooms, "page_obj": page})


@login_required
@require_GET
def direct_confirm(request, username):
    """Open the conversation with ``username`` if it exists; else ask before making it.

    The presence list links here: a GET never creates anything (no CSRF on links).
    """
    try:
        other = direct.counterpart(request.user, username)
    except direct.Refused as refusal:
        return _direct_refused(request, refusal, username)
    room = direct.find(request.user, other)
    if room is not None:
        return redirect("room_detail", slug=room.slug)
    return render(request, "chat/direct_start.html", {"other": other.get_username()})


def direct_start(request, username):
    """Find or make the conversation with ``username``; 303 to its room."""
    try:
        other = direct.counterpart(request.user, username)
    except direct.Refused as refusal:
        return _direct_refused(request, refusal, username)
    if direct.find(request.user, other) is None:
        address = throttle.client_address(request)
        limit = throttle.address_limit("room")  # a new conversation is a new room
        if not limit.allow(address):
            logger.info("direct conversation from %s refused: over the per-address limit", address)
            response = _direct_refused(request, direct.Refused(ROOMS_LIMITED, 429), username)
            response["Retry-After"] = str(limit.retry_after(address))
            return response
    room, _ = direct.start(request.user, other)
    return see_other(room, "end")


def _direct_refused(request, refusal, username):
    """Show the start page with why the conversation can't be started."""
    return render(request, "chat/direct_start.html", {"error": str(refusal), "username": username},
                  status=refusal.status)
