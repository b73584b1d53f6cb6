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

A started broker (one listening: a server worker's) sends from a sender greenlet of its own,
in publish order, several NOTIFYs a statement when they queue up: the socket that sent a
message goes back to reading its next frame instead of waiting a round trip (a tenth of an S3
round trip), and a burst costs one statement. What fails is tried again with backoff; an
event without a seq is then delivered in this worker only, a message is left to the other
workers' cursor checks after the last try (it is committed). A broker never started (a
script's, chat/publish.py) sends in the caller and raises.

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
SEND_DELAYS = (0.1, 0.5, 1, 2, 5)  # seconds before each new try to send what failed
SEND_BATCH = 50  # NOTIFYs sent in one statement, at most
OUTGOING_MAX = 10_000  # payloads waiting for the sender; more are not queued (see _overflow)


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
        self.outgoing = deque()  # (topic, payload, text or None: spill) for the sender, in order
        self.sender = None  # the greenlet sending ``outgoing``, while there is any
        self.overflowed = 0  # messages not queued since ``outgoing`` was last empty

    # --- publishing ---

    def _send(self, topic, payload):
        """Queue ``payload`` for the sender greenlet; send it now if this broker never started."""
        item = (topic, payload, self._notify_text(topic, payload))
        if self.listener is None:  # a script's broker: no hub loop to send later, and errors raise
            self._send_items([item])
            return
        if len(self.outgoing) >= OUTGOING_MAX:
            self._overflow(item)
            return
        self.outgoing.append(item)
        if self.sender is None:
            self.sender = gevent.spawn(self._send_queued)

    def _notify_text(self, topic, payload):
        """Return the NOTIFY text for ``payload`` (by reference when large), or None: spill it."""
        if len(payload) + len(topic.encode("utf-8")) + 1 <= self.notify_max:
            return f"{topic}\n{payload.decode('utf-8')}"
        header = json.loads(payload.partition(b"\n")[0])
        if header.get("seq") is not None:  # receivers read the message from the database
            return f"{topic}\n" + json.dumps({**header, "by_ref": True}, separators=(",", ":")) + "\n"
        return None

    def _send_items(self, items):
        """Send ``items`` in order: NOTIFYs in one statement, or one spilled event."""
        topic, payload, text = items[0]
        if text is None:
            self._spill(topic, payload)  # alone: _next_batch never adds one to a batch
        else:
            self._notify(*[text for _, _, text in items])

    def _next_batch(self):
        """Take the next items to send from ``outgoing``: a spill alone, or up to SEND_BATCH NOTIFYs."""
        batch = [self.outgoing.popleft()]
        while (batch[0][2] is not None and self.outgoing and len(batch) < SEND_BATCH
               and self.outgoing[0][2] is not None):
            batch.append(self.outgoing.popleft())
        return batch

    def _send_queued(self):
        """Send ``outgoing`` until it is empty; retry what failed with backoff (SEND_DELAYS)."""
        failures = 0
        try:
            while self.outgoing:
                batch = self._next_batch()
                try:
                    self._send_items(batch)
                except Exception as error:  # the database is away, or the pool is busy
                    failures += 1
                    retry = self._failed(batch, error, failures)
                    self.outgoing.extendleft(reversed(retry))
                    if retry:
                        self.sleep(SEND_DELAYS[failures - 1])
                    elif failures > len(SEND_DELAYS):
                        failures = 0  # gave up: the next failure starts over with retries
                    continue
                if failures:
                    self.log.info("published again what had failed")
                    failures = 0
            self.overflowed = 0
        finally:
            self.sender = None

    def _failed(self, batch, error, failures):
        """Deal with a batch that failed; return the items to try again (messages only)."""
        if failures == 1:
            self.log.warning("publishing on %s failed (%s); retrying with backoff", self.channel, error)
        retry = []
        for item in batch:
            if _seq(item[1]) is None:  # typing, presence, a notice: its own worker hears it
                self.deliver(item[0], item[1])
            elif failures <= len(SEND_DELAYS):
                retry.append(item)
        if len(retry) < len(batch) and failures > len(SEND_DELAYS):
            self.log.warning("gave up publishing %s messages again; other workers read them "
                             "from the database", len(batch) - len(retry))
        return retry

    def _overflow(self, item):
        """A payload beyond OUTGOING_MAX: no seq, delivered here only; a message, left to the checks."""
        topic, payload, _ = item
        if _seq(payload) is None:
            self.deliver(topic, payload)
            return
        self.overflowed += 1
        if self.overflowed % 1000 == 1:  # one line per thousand, not a flood during an outage
            self.log.warning("%s payloads wait to be published: %s messages left to the other "
                             "workers' cursor checks", len(self.outgoing), self.overflowed)

    def _notify(self, *texts):
        """NOTIFY each of ``texts``, in order, in one statement (one transaction)."""
        with db_work(), connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(["pg_notify(%s, %s)"] * len(texts)),
                           [value for text in texts for value in (self.channel, text)])

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
        if self.sender is not None:
            self.sender.join(timeout=2)  # what is queued goes out, unless it is failing
        super().stop()
        gevent.killall([g for g in (self.sender, *self.readers.values()) if g], block=True, timeout=5)


def _seq(payload):
    """Return the seq in a payload's header, or None (also for a header that is not JSON)."""
    try:
        return json.loads(bytes(payload).partition(b"\n")[0]).get("seq")
    except (ValueError, AttributeError):
        return None
