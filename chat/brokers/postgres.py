"""PostgreSQL LISTEN/NOTIFY: fan-out between workers and hosts with no other service.

One listening connection per worker, waited on cooperatively (gevent's ``wait_read`` on its
file descriptor). NOTIFY payloads must stay under 8,000 bytes, so a larger event goes by
reference: its room and seq only, and each receiving hub reads it from the database.
NOTIFY is at most once while a listener reconnects; after every reconnect the hub catches
up from the database by seq. LISTEN does not pass through PgBouncer in transaction mode, so
the listener connects directly (``CHAT_LISTEN_DATABASE_URL``, default ``DATABASE_URL``).
"""
import json
import logging

import gevent
import psycopg2
from django.db import connection
from gevent.socket import wait_read

from chat.brokers.base import ListeningBroker
from chat.db import db_work

logger = logging.getLogger(__name__)

CHANNEL = "chat_events"
MAX_PAYLOAD = 7999  # bytes: PostgreSQL refuses a NOTIFY payload of 8,000 or more
RETRY_DELAYS = (0.1, 0.5, 1, 2, 5)


class PostgresBroker(ListeningBroker):
    """Publish with ``pg_notify``; listen on one autocommit connection per process."""

    def __init__(self, connect_params, poll_timeout=5.0):
        super().__init__()
        self.connect_params = connect_params
        self.poll_timeout = poll_timeout

    def publish(self, topic, payload):
        """NOTIFY ``payload``; too large, only its header goes and receivers read the rest."""
        text = f"{topic}\n{payload.decode('utf-8')}"
        if len(text.encode("utf-8")) > MAX_PAYLOAD:
            header = json.loads(payload.partition(b"\n")[0])
            text = f"{topic}\n" + json.dumps({**header, "by_ref": True}, separators=(",", ":")) + "\n"
        with db_work(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, text])

    def _listen_forever(self):
        attempt = 0
        while True:
            try:
                conn = psycopg2.connect(**self.connect_params)
            except psycopg2.Error as error:
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                logger.warning("cannot LISTEN (%s); retrying in %s s", str(error).strip(), delay)
                attempt += 1
                gevent.sleep(delay)
                continue
            try:
                self._listen(conn)
                attempt = 0
            except (psycopg2.Error, OSError) as error:
                logger.warning("lost the LISTEN connection (%s); reconnecting", str(error).strip())
                attempt = max(attempt, 1)
            finally:
                self.connected.clear()
                conn.close()

    def _listen(self, conn):
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        self.connected.set()
        logger.info("listening on %s", CHANNEL)
        if self.on_reconnect is not None:
            # What was published before this LISTEN (the first one too: a socket may have
            # joined before it) is read from the database.
            gevent.spawn(self.on_reconnect)
        while True:
            try:
                wait_read(conn.fileno(), timeout=self.poll_timeout)
                conn.poll()
            except TimeoutError:
                with conn.cursor() as cursor:  # quiet for a while: is the server still there?
                    cursor.execute("SELECT 1")
            while conn.notifies:
                notify = conn.notifies.pop(0)
                topic, _, payload = notify.payload.partition("\n")
                self.on_message(topic, payload.encode("utf-8"))
