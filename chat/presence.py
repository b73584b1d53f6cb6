"""Who is in which room, across every worker and host, kept in PostgreSQL.

Each worker counts its own sockets (chat/hub.py) and writes a row per (room, user) it
holds; a user is present while any worker holds a row for them. Workers refresh their rows
every ``CHAT_PRESENCE_HEARTBEAT`` seconds; rows not refreshed for ``CHAT_PRESENCE_TTL``
(a worker that died without leaving) are expired by whichever worker looks first.
"""
import logging
import os
import socket

from django.db import connection
from django.utils import timezone

from chat.db import db_work
from chat.models import Presence

logger = logging.getLogger(__name__)


def worker_id():
    """Name this worker process: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class DatabasePresence:
    """Global presence in the ``chat_presence`` table."""

    def __init__(self, ttl):
        self.ttl = ttl

    def arrive(self, room, username):
        """Record ``username`` in ``room`` here; return (first anywhere?, usernames present)."""
        me = worker_id()
        with db_work():
            Presence.objects.update_or_create(room=room, username=username, worker=me,
                                              defaults={"seen": timezone.now()})
            here = Presence.objects.live(self.ttl).filter(room=room)
            elsewhere = here.filter(username=username).exclude(worker=me).exists()
            names = sorted(set(here.values_list("username", flat=True)))
        return not elsewhere, names

    def depart(self, room, username):
        """Forget ``username`` in ``room`` here; return whether they are gone everywhere."""
        with db_work():
            Presence.objects.filter(room=room, username=username, worker=worker_id()).delete()
            return not Presence.objects.live(self.ttl).filter(room=room, username=username).exists()

    def heartbeat(self):
        """Refresh this worker's rows."""
        with db_work():
            return Presence.objects.filter(worker=worker_id()).update(seen=timezone.now())

    def expire(self):
        """Delete rows of workers that stopped refreshing; return (room, username) now gone."""
        with db_work(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {Presence._meta.db_table} WHERE seen < %s RETURNING room, username",
                [timezone.now() - timezone.timedelta(seconds=self.ttl)])
            expired = set(cursor.fetchall())
            if not expired:
                return []
            still = set(Presence.objects.live(self.ttl).filter(
                room__in={room for room, _ in expired}).values_list("room", "username"))
        gone = sorted(expired - still)
        if gone:
            logger.info("presence expired for %s users of workers that stopped", len(gone))
        return gone
