"""PostgreSQL LISTEN/NOTIFY: fan-out between workers and hosts with no other service.

One listening connection per worker, waited on cooperatively (gevent's ``wait_read`` on its
file descriptor); the listen loop itself is ``ListeningBroker``'s. The channel is
``CHAT_BROKER_CHANNEL`` (default ``chat_events``): deployments sharing one database each use
their own. NOTIFY payloads must stay under 8,000 bytes, so a larger event goes another way:

- a ``message`` (an event with a seq) by reference: its room and seq only, and each
  receiving hub reads the message from the database as it reads any gap;
- an event without a seq (a notice, a presence event) is stored whole in a spill table
  (``chat.models.EventSpill``) in the statement that sends the NOTIFY of its row's id; each
  receiving worker reads the row under ``db_work()`` in a greenlet of its own (the listen
  loop goes on) and hands the payload on whole. Later events of that topic wait behind it,
  so a topic's events keep their order. Publishers delete rows older than ``spill_keep``.

NOTIFY is at most once while a listener reconnects; after every reconnect the hub catches
up from the database by seq. LISTEN does not pass through PgBouncer in transaction mode, so
the listener connects directly (``CHAT_LISTEN_DATABASE_URL``, default ``DATABASE_URL``).
"""
import json
from collections import deque

import gevent
import psycopg2
from django.db import connection
from gevent.socket import wait_read
from psycopg2 import sql

from chat.brokers.base import ListeningBroker
from chat.db import db_work
from chat.models import EventSpill

CHANNEL = "chat_events"
NOTIFY_MAX = 7999  # bytes: PostgreSQL refuses a NOTIFY payload of 8,000 or more
SPILL = "spill:"  # a NOTIFY of "<topic>\nspill:<id>" refers to a row of EventSpill
READ_DELAYS = (0.5, 1, 2)  # seconds between tries to read a spilled event


class PostgresBroker(ListeningBroker):
    """Publish with ``pg_notify``; listen on one autocommit connection per process."""

    lost_errors = (psycopg2.Error, OSError)

    def __init__(self, connect_params, channel=CHANNEL, poll_timeout=5.0, max_bytes=None,
                 notify_max=NOTIFY_MAX, spill_keep=300.0, clean_every=60.0, **options):
        super().__init__(channel, max_bytes, **options)
        self.connect_params = connect_params
        self.channel = channel
        self.poll_timeout = poll_timeout
        self.notify_max = notify_max
        self.spill_keep = spill_keep  # seconds a spilled event is kept for slow listeners
        self.clean_every = clean_every
        self.cleaned_at = None  # when this process last deleted old spilled events
        self.waiting = {}  # topic -> deque of payloads behind a spilled event being read
        self.readers = {}  # topic -> the greenlet reading that topic's spilled events

    # --- publishing ---

    def _send(self, topic, payload):
        """NOTIFY ``payload``; too large, by reference (a seq) or through the spill table."""
        if len(payload) + len(topic.encode("utf-8")) + 1 <= self.notify_max:
            self._notify(f"{topic}\n{payload.decode('utf-8')}")
            return
        header = json.loads(payload.partition(b"\n")[0])
        if header.get("seq") is not None:  # receivers read the message from the database
            self._notify(f"{topic}\n" + json.dumps({**header, "by_ref": True}, separators=(",", ":")) + "\n")
            return
        self._spill(topic, payload)

    def _notify(self, text):
        with db_work(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [self.channel, text])

    def _spill(self, topic, payload):
        # One statement: the row and its NOTIFY commit together, and the NOTIFY is delivered
        # on commit, so every listener finds the row.
        table = EventSpill._meta.db_table
        with db_work(), connection.cursor() as cursor:
            cursor.execute(
                f"WITH spilled AS (INSERT INTO {table} (topic, payload, created) "
                f"VALUES (%s, %s, now()) RETURNING id) "
                f"SELECT pg_notify(%s, %s || id::text) FROM spilled",
                [topic, payload, self.channel, f"{topic}\n{SPILL}"])
            if self.cleaned_at is None or self.clock() - self.cleaned_at >= self.clean_every:
                cursor.execute(f"DELETE FROM {table} WHERE created < now() - make_interval(secs => %s)",
                               [self.spill_keep])
                self.cleaned_at = self.clock()

    # --- listening ---

    def _subscribe(self):
        conn = psycopg2.connect(**self.connect_params)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _receive(self, conn):
        try:
            wait_read(conn.fileno(), timeout=self.poll_timeout)
            conn.poll()
        except TimeoutError:
            with conn.cursor() as cursor:  # quiet for a while: is the server still there?
                cursor.execute("SELECT 1")
        items = [notify.payload for notify in conn.notifies]
        del conn.notifies[:]
        return items

    def _close(self, conn):
        conn.close()

    def _handle(self, text):
        """Deliver ``<topic>\\n<payload>`` now, or queue it behind the topic's spilled events."""
        topic, _, rest = text.partition("\n")
        queue = self.waiting.get(topic)
        if rest.startswith(SPILL):
            rest = int(rest[len(SPILL):])  # its id; a bad one is a bad payload (ValueError)
            if queue is None:
                self.waiting[topic] = deque([rest])
                self.readers[topic] = gevent.spawn(self._drain, topic)
                return
        if queue is not None:
            queue.append(rest)
        else:
            self.deliver(topic, rest.encode("utf-8"))

    def _drain(self, topic):
        """Deliver the topic's queue in order, reading each spilled event whole."""
        queue = self.waiting[topic]
        try:
            while queue:
                item = queue[0]
                payload = self._read_spilled(topic, item) if isinstance(item, int) else item.encode("utf-8")
                queue.popleft()
                if payload is not None:
                    self.deliver(topic, payload)
        finally:  # nothing yields between the last look at the queue and here: none is lost
            del self.waiting[topic]
            self.readers.pop(topic, None)

    def _read_spilled(self, topic, spill_id):
        """Return the payload of spilled event ``spill_id``, or None once reading it failed."""
        table = EventSpill._meta.db_table
        for delay in (*READ_DELAYS, None):
            try:
                with db_work(), connection.cursor() as cursor:
                    cursor.execute(f"SELECT payload FROM {table} WHERE id = %s", [spill_id])
                    row = cursor.fetchone()
            except Exception as error:  # ServerBusy, or the database is away: try again
                if delay is None:
                    self.skips.skip("spilled event that could not be read", topic, error)
                    return None
                gevent.sleep(delay)
                continue
            if row is None:
                gone = LookupError(f"spilled event {spill_id} is gone (kept {self.spill_keep} s)")
                self.skips.skip("spilled event that could not be read", topic, gone)
                return None
            return bytes(row[0])

    def stop(self):
        super().stop()
        gevent.killall(list(self.readers.values()), block=True, timeout=5)
