"""Turn Django's own auth events into control events, so sockets end when their authority does.

- ``user_logged_out``: the sockets of *that* session close with 4401; the user's others stay.
- a user saved (password, ``is_active``) or deleted: that user's sockets are revalidated (or
  closed) on every worker. ``update_session_auth_hash`` re-keys the session that changed its
  own password; :class:`RevocationMiddleware` tells the workers the new key, after the session
  is saved, so that session's sockets are found valid and stay.
- a private room's members changed, or a room made private or deleted: the sockets joined to
  it re-check who may read it and the others are evicted.

Inside a request the events wait until the response is done (and the session saved); outside
one (the shell, a command) until the transaction commits.
"""
import contextvars
import logging

from django.conf import settings
from django.contrib.auth import get_user_model, user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from chat import publish
from chat.models import Room

logger = logging.getLogger(__name__)

#: Control events waiting for the end of the current request (None outside a request).
_deferred = contextvars.ContextVar("chat_deferred_control", default=None)
#: A user saved with only these fields changed cannot have lost their authority.
_HARMLESS_FIELDS = frozenset({"last_login"})


class RevocationMiddleware:
    """Publish the request's control events once its response is done and its session saved.

    Must come before ``SessionMiddleware`` (checked by chat.E008): its response half then runs
    after the session was written.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.environ.get("wsgi.websocket") is not None:
            # A socket's "request" lasts as long as the socket: nothing may wait for its end.
            return self.get_response(request)
        old_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        token = _deferred.set([])
        try:
            response = self.get_response(request)
            events = _deferred.get()
        finally:
            _deferred.reset(token)
        session = getattr(request, "session", None)
        new_key = session.session_key if session is not None else None
        for event in events:
            if event["type"] == "revalidate" and old_key and new_key and new_key != old_key:
                event["rekey"] = [old_key, new_key]  # update_session_auth_hash cycled the key
            _send(event)
        return response


def defer(event):
    """Publish ``event`` after this request's response, or after the commit outside one."""
    pending = _deferred.get()
    if pending is not None:
        if event not in pending:
            pending.append(event)
        return
    transaction.on_commit(lambda: _send(event))


def _send(event):
    try:
        publish.control(event)
    except Exception:  # the periodic revalidation is the backstop
        logger.exception("could not publish a %s control event", event["type"])


@receiver(user_logged_out, dispatch_uid="chat.revocation.logged_out")
def _logged_out(sender, request, user, **kwargs):
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        _send(publish.disconnect_event(session_key=session_key, reason="signed out"))


@receiver(post_save, dispatch_uid="chat.revocation.user_saved")
def _user_saved(sender, instance, created, update_fields=None, **kwargs):
    if sender is not get_user_model() or created:
        return
    if update_fields is not None and set(update_fields) <= _HARMLESS_FIELDS:
        return
    defer({"type": "revalidate", "user": instance.pk})


@receiver(post_delete, dispatch_uid="chat.revocation.user_deleted")
def _user_deleted(sender, instance, **kwargs):
    if sender is get_user_model():
        defer(publish.disconnect_event(user=instance.pk, reason="account deleted"))


@receiver(m2m_changed, sender=Room.members.through, dispatch_uid="chat.revocation.members")
def _members_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action not in ("post_remove", "post_clear"):
        return
    if not reverse:
        defer({"type": "room", "room": instance.slug})
        return
    # user.chat_rooms.remove(...): the rooms are in pk_set (None for a clear: every room).
    rooms = Room.objects.filter(private=True)
    if pk_set is not None:
        rooms = rooms.filter(pk__in=pk_set)
    for slug in rooms.values_list("slug", flat=True):
        defer({"type": "room", "room": slug})


@receiver(post_save, sender=Room, dispatch_uid="chat.revocation.room_saved")
def _room_saved(sender, instance, created, **kwargs):
    if instance.private and not created:
        defer({"type": "room", "room": instance.slug})


@receiver(post_delete, sender=Room, dispatch_uid="chat.revocation.room_deleted")
def _room_deleted(sender, instance, **kwargs):
    defer({"type": "room", "room": instance.slug})
