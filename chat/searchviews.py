"""Pages of search: the results (``/search/?q=&page=``) and a message in its context
(``/rooms/<slug>/messages/<seq>/``), where each result links to.
"""
import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from chat import search
from chat.errors import BadRequest
from chat.models import Message, Room
from chat.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

CONTEXT_MESSAGES = 10  # shown before and after the message
RATE_LIMITED = "Too many searches in a row: wait a few seconds, then search again."

_limiter = None


def limiter():
    """This worker's per-user search budget (``CHAT_SEARCH_RATE``, ``CHAT_SEARCH_BURST``)."""
    global _limiter
    if _limiter is None:
        _limiter = RateLimiter(settings.CHAT_SEARCH_RATE, settings.CHAT_SEARCH_BURST)
    return _limiter


@login_required
@require_GET
def search_page(request):
    """Show the search form and, given ``q``, one page of the messages that match it."""
    if "q" not in request.GET:
        return _render(request, "")
    text = request.GET["q"]
    try:
        query, page = search.checked(text), search.page_number(request.GET.get("page"))
    except BadRequest as error:
        return _render(request, text, error=error.detail, status=400)
    if not limiter().allow(request.user.pk):
        logger.info("search by %s refused: over the rate limit", request.user.get_username())
        response = _render(request, text, error=RATE_LIMITED, status=429)
        response["Retry-After"] = str(max(1, round(1 / settings.CHAT_SEARCH_RATE)))
        return response
    try:
        results = search.search(request.user, query, page)
    except BadRequest as error:
        return _render(request, text, error=error.detail, status=400)
    except search.SearchTimedOut as error:
        response = _render(request, text, error=error.detail, status=503)
        response["Retry-After"] = "5"
        return response
    error = search.ONLY_STOP_WORDS if results.only_stop_words else None
    return _render(request, text, results=results, query=query, error=error)


def _render(request, text, results=None, query=None, error=None, status=200):
    context = {"q": text, "query": query, "results": results, "error": error,
               "max_chars": settings.CHAT_SEARCH_MAX_CHARS}
    return render(request, "chat/search.html", context, status=status)


@login_required
@require_GET
def message_context(request, slug, seq):
    """Show a message with the messages around it; 403 for a private room's outsider.

    A deleted or unknown message is 404, after the room's check, so that an outsider learns
    nothing of which seqs a private room holds.
    """
    room = get_object_or_404(Room, slug=slug)
    if not room.admits(request.user):
        return render(request, "chat/room_private.html", status=403)
    shown = Message.objects.shown().select_related("user")
    target = shown.filter(room=room, seq=seq).first()
    if target is None:
        raise Http404("no such message")
    before = list(shown.before(room, seq)[:CONTEXT_MESSAGES])[::-1]
    after = list(shown.after(room, seq)[:CONTEXT_MESSAGES])
    context = {"room": room, "target": target, "messages": [*before, target, *after],
               "q": request.GET.get("q", "")[:settings.CHAT_SEARCH_MAX_CHARS],
               "more_before": bool(before) and before[0].seq > 1,
               "more_after": bool(after) and after[-1].seq < room.last_seq}
    return render(request, "chat/message_context.html", context)
