"""Presence in PostgreSQL: global across workers, expiring with a worker that died."""
import pytest
from django.utils import timezone

from chat.db import db_work
from chat.models import Presence
from chat.presence import DatabasePresence, worker_id


@pytest.fixture
def presence(pooled_db):
    with db_work():
        Presence.objects.all().delete()
    yield DatabasePresence(ttl=30)
    with db_work():
        Presence.objects.all().delete()


def add(**fields):
    with db_work():
        Presence.objects.create(**fields)


def test_the_first_arrival_anywhere_is_announced_once(presence):
    assert presence.arrive("r", "ann") == (True, ["ann"])
    add(room="r", username="bob", worker="other-host:1")
    assert presence.arrive("r", "bob") == (False, ["ann", "bob"])  # bob is on another worker


def test_leaving_one_worker_keeps_presence_held_by_another(presence):
    add(room="r", username="ann", worker="other-host:1")
    presence.arrive("r", "ann")
    assert presence.depart("r", "ann") is False
    with db_work():
        Presence.objects.filter(worker="other-host:1").delete()
    presence.arrive("r", "ann")
    assert presence.depart("r", "ann") is True


def test_rows_of_a_dead_worker_expire_and_end_presence(presence):
    stale = timezone.now() - timezone.timedelta(seconds=60)
    add(room="r", username="ghost", worker="dead:1", seen=stale)
    add(room="r", username="ann", worker="dead:1", seen=stale)
    add(room="r", username="ann", worker="alive:2")
    assert presence.expire() == [("r", "ghost")]  # ann is still held by a live worker
    assert presence.arrive("r", "cat")[1] == ["ann", "cat"]


def test_heartbeat_refreshes_only_this_workers_rows(presence):
    stale = timezone.now() - timezone.timedelta(seconds=60)
    add(room="r", username="ann", worker=worker_id(), seen=stale)
    add(room="r", username="bob", worker="dead:1", seen=stale)
    assert presence.heartbeat() == 1
    assert presence.expire() == [("r", "bob")]
