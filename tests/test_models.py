"""Message.objects.store: one statement, prepared once per connection, and what if it vanishes."""
import logging

from django.contrib.auth import get_user_model
from django.db import connection

from chat import models
from chat.db import db_work
from chat.models import Message, Room


def room_and_user(make_users, make_room):
    [(name, _)] = make_users(1, prefix="storer")
    slug = make_room()
    with db_work():
        return Room.objects.get(slug=slug), get_user_model().objects.get(username=name)


def prepared_here():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = %s",
                       [models.STORE_PREPARED])
        return cursor.fetchone()[0]


def test_store_prepares_its_statement_once_per_connection_and_stores_each_ref_once(
        pooled_db, make_users, make_room):
    room, user = room_and_user(make_users, make_room)
    with db_work():
        first, created = Message.objects.store(room.id, user, "one", "r1")
        assert created and first.seq == 1 and prepared_here() == 1
        second, created = Message.objects.store(room.id, user, "two", "r2")
        again, resent = Message.objects.store(room.id, user, "another body", "r1")
    assert (second.seq, created) == (2, True)
    assert (again.id, again.body, resent) == (first.id, "one", False)
    with db_work():
        assert list(Message.objects.filter(room=room).values_list("seq", "body")) == [(1, "one"), (2, "two")]


def test_store_without_its_prepared_statement_warns_once_and_stores_unprepared(
        pooled_db, make_users, make_room, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="chat.models")
    monkeypatch.setattr(models, "_prepare", True)
    room, user = room_and_user(make_users, make_room)
    with db_work():
        Message.objects.store(room.id, user, "prepared", "p1")
        with connection.cursor() as cursor:  # as PgBouncer handing the next statement elsewhere
            cursor.execute(f"DEALLOCATE {models.STORE_PREPARED}")
        message, created = Message.objects.store(room.id, user, "unprepared", "p2")
        later, _ = Message.objects.store(room.id, user, "still unprepared", "p3")
    assert (message.seq, created, later.seq) == (2, True, 3)
    assert models._prepare is False
    assert [r.getMessage() for r in caplog.records] == [
        "a prepared statement vanished between two statements (PgBouncer in transaction mode?): "
        "storing messages without preparing them"]
