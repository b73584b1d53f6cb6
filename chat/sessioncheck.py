"""Is a socket's Django session still worth what it was at the handshake?

The same rules as ``django.contrib.auth.get_user`` (the session names the user and a
configured backend, the backend lets the user authenticate, the session's auth hash matches
the password, or one of ``SECRET_KEY_FALLBACKS``), checked for many sessions in a few queries
and without get_user's side effects (it flushes or re-keys the session it checks).
"""
import logging
from importlib import import_module

from django.conf import settings
from django.contrib.auth import (BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY,
                                 get_user_model, load_backend)
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from chat.db import db_work

logger = logging.getLogger(__name__)

#: Close reasons (4401), one per way a session stops being worth anything.
SIGNED_OUT = "signed out"
EXPIRED = "session expired"
PASSWORD_CHANGED = "password changed: sign in again"
DISABLED = "account disabled"
DELETED = "account deleted"


def session_store():
    """Return the ``SessionStore`` class of ``SESSION_ENGINE``."""
    return import_module(settings.SESSION_ENGINE).SessionStore


def session_expiry(session_key):
    """Return when ``session_key`` expires (aware datetime), or None when the engine can't say.

    Only database-backed engines store an expiry that can be read without loading the data;
    for the others the periodic revalidation is the backstop.
    """
    store = session_store()
    if not issubclass(store, DatabaseSessionStore) or not session_key:
        return None
    return (store.get_model_class().objects.filter(session_key=session_key)
            .values_list("expire_date", flat=True).first())


def invalid_sessions(entries):
    """Check ``(session_key, user_id)`` pairs; return ``{session_key: reason}`` for the bad ones.

    Runs its own ``db_work()``: two or three queries for the whole batch on database sessions.
    """
    entries = list(entries)
    if not entries:
        return {}
    with db_work():
        loaded, expired = _load_sessions({key for key, _ in entries})
        users = get_user_model()._default_manager.in_bulk({user_id for _, user_id in entries})
    verdicts = {}
    for key, user_id in entries:
        if key not in loaded:
            verdicts[key] = EXPIRED if key in expired else SIGNED_OUT
            continue
        reason = _verdict(loaded[key][0], user_id, users.get(user_id))
        if reason is not None:
            verdicts[key] = reason
    if verdicts:
        logger.info("%s of %s sessions checked are no longer valid", len(verdicts), len(entries))
    return verdicts


def signed_in(keys):
    """Return ``{session_key: (user, expires_at)}`` for the ``keys`` that sign a user in now.

    ``django.contrib.auth.get_user``'s rules for many sessions at once, in two queries on
    database sessions (the sessions with their expiry, then the users); ``expires_at`` is None
    when the engine can't say. A user signed in by several of the keys is one object.
    """
    keys = {key for key in keys if key}
    if not keys:
        return {}
    with db_work():
        loaded, _ = _load_sessions(keys)
        claimed = {key: _user_id(data) for key, (data, _) in loaded.items()}
        users = get_user_model()._default_manager.in_bulk(
            {user_id for user_id in claimed.values() if user_id is not None})
    found = {}
    for key, (data, expires_at) in loaded.items():
        user = users.get(claimed[key])
        if user is not None and _verdict(data, user.pk, user) is None:
            found[key] = (user, expires_at)
    return found


def _user_id(data):
    try:
        return get_user_model()._meta.pk.to_python(data.get(SESSION_KEY))
    except Exception:  # a session from another user model or version: nobody signed in
        return None


def _load_sessions(keys):
    """Return ``({key: (data, expires_at)}, expired keys)`` for the sessions that still exist.

    ``expires_at`` is None for engines that keep no expiry readable without the data.
    """
    store = session_store()
    if not issubclass(store, DatabaseSessionStore):
        loaded = {key: store(key).load() for key in keys}  # load() gives {} when gone or expired
        return {key: (value, None) for key, value in loaded.items() if value}, set()
    now = timezone.now()
    rows = store.get_model_class().objects.filter(session_key__in=keys).values_list(
        "session_key", "session_data", "expire_date")
    decoder, loaded, expired = store(), {}, set()
    for key, encoded, expire_date in rows:
        if expire_date <= now:
            expired.add(key)
            continue
        data = decoder.decode(encoded)  # {} when tampered with: then SIGNED_OUT
        if data:
            loaded[key] = (data, expire_date)
    return loaded, expired


def _verdict(data, user_id, user):
    """Return why a loaded session no longer signs ``user_id`` in, or None if it still does."""
    if user is None:
        return DELETED
    try:
        if get_user_model()._meta.pk.to_python(data.get(SESSION_KEY)) != user_id:
            return SIGNED_OUT
    except Exception:  # a session from another user model or version: not ours to trust
        return SIGNED_OUT
    backend_path = data.get(BACKEND_SESSION_KEY)
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return SIGNED_OUT
    can_authenticate = getattr(load_backend(backend_path), "user_can_authenticate", None)
    if can_authenticate is not None and not can_authenticate(user):
        return DISABLED
    if hasattr(user, "get_session_auth_hash") and not _hash_matches(data.get(HASH_SESSION_KEY), user):
        return PASSWORD_CHANGED
    return None


def _hash_matches(session_hash, user):
    if not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    fallbacks = getattr(user, "get_session_auth_fallback_hash", lambda: ())()
    return any(constant_time_compare(session_hash, fallback) for fallback in fallbacks)
