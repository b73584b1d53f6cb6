"""Redis pub/sub: fan-out between workers and hosts through a Redis server (``REDIS_URL``).

Publishing goes through one client per worker over a bounded ``BlockingConnectionPool``:
greenlets that publish at once wait for a free connection (up to ``pool_timeout``) instead
of opening more. (Django's cache backends keep a connection per greenlet under gevent.)
Options in the URL's query override the defaults, e.g. ``redis://host:6379/0?max_connections=20``.
One more connection per worker listens: ``PSUBSCRIBE chat:*``, read by a listener greenlet.
Payloads of any size pass whole, so nothing goes by reference.

Pub/sub is at most once: what is published while the listener reconnects is lost. After
every subscription (the first one too) the hub catches up from the database by seq: messages
are committed there before they are published. The listener reconnects with backoff and logs
one line per change of state. A failed publish raises to the hub, which logs it and delivers
in this worker only.
"""
import logging
import os
import time

import gevent
import gevent.event
import redis
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

from chat.brokers.base import ListeningBroker

logger = logging.getLogger(__name__)

PREFIX = "chat:"
PATTERN = PREFIX + "*"
RETRY_DELAYS = (0.1, 0.5, 1, 2, 5)
ERRORS = (redis.RedisError, OSError)


class RedisBroker(ListeningBroker):
    """Publish with ``PUBLISH chat:<slug>``; listen with ``PSUBSCRIBE chat:*``, one connection."""

    def __init__(self, url, max_connections=10, pool_timeout=5.0, socket_timeout=5.0,
                 poll_timeout=5.0):
        if not url:
            raise ImproperlyConfigured("The redis broker needs REDIS_URL, e.g. redis://127.0.0.1:6379/0.")
        super().__init__()
        self.poll_timeout = poll_timeout
        pid = os.getpid()
        options = {"socket_connect_timeout": socket_timeout, "socket_timeout": socket_timeout,
                   "socket_keepalive": True}
        try:
            # One immediate retry on a broken connection: pooled sockets go stale when Redis restarts.
            self.pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=pool_timeout,
                client_name=f"chat-publish:{pid}",
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)), **options)
            self.listen_pool = redis.ConnectionPool.from_url(
                url, max_connections=1, client_name=f"chat-listen:{pid}",
                retry=Retry(NoBackoff(), 0, supported_errors=()), **options)  # we reconnect
        except ValueError as error:
            raise ImproperlyConfigured(f"REDIS_URL is not a Redis URL: {error}") from None
        self.client = redis.Redis(connection_pool=self.pool)
        self.where = _describe(self.pool.connection_kwargs)

    def publish(self, topic, payload):
        self.client.publish(PREFIX + topic, payload)

    def stop(self):
        super().stop()
        self.listen_pool.disconnect()
        self.pool.disconnect()

    def _listen_forever(self):
        attempt = 0  # attempts since the last subscription ended (or since start)
        lost = False  # a subscription was lost or never made (for the log line)
        warned = False  # the failure to subscribe was logged (one line per state change)
        while True:
            if attempt:
                gevent.sleep(RETRY_DELAYS[min(attempt - 1, len(RETRY_DELAYS) - 1)])
            attempt += 1
            pubsub = redis.Redis(connection_pool=self.listen_pool).pubsub()
            try:
                self._subscribe(pubsub)
            except ERRORS as error:
                pubsub.close()
                if not warned:
                    logger.warning("cannot subscribe to %s at %s (%s); retrying with backoff",
                                   PATTERN, self.where, _reason(error))
                    warned = True
                else:
                    logger.debug("subscribing failed again (%s)", _reason(error))
                lost = True
                continue
            try:
                self.connected.set()
                logger.info("subscribed to %s at %s%s", PATTERN, self.where,
                            " again; catching up from the database" if lost else "")
                if self.on_reconnect is not None:
                    # What was published before the subscription is in the database. The first
                    # time too: a room joined while the listener was connecting may have missed some.
                    gevent.spawn(self.on_reconnect)
                attempt, lost, warned = 0, True, False
                self._receive(pubsub)
            except ERRORS as error:
                logger.warning("lost the Redis subscription at %s (%s); reconnecting",
                               self.where, _reason(error))
                attempt, warned = 1, True
            finally:
                self.connected.clear()
                pubsub.close()

    def _subscribe(self, pubsub):
        """PSUBSCRIBE and wait for the server's confirmation: from then on nothing is missed."""
        pubsub.psubscribe(PATTERN)
        deadline = time.monotonic() + self.poll_timeout
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "psubscribe":
                return
        raise redis.TimeoutError(f"no confirmation of PSUBSCRIBE in {self.poll_timeout} s")

    def _receive(self, pubsub):
        heard = time.monotonic()
        while True:
            message = pubsub.get_message(timeout=self.poll_timeout)
            if message is None:  # quiet for a while: is the server still there?
                if time.monotonic() - heard > 2 * self.poll_timeout:
                    raise redis.TimeoutError(f"no answer to PING in {self.poll_timeout} s")
                pubsub.ping()
                continue
            heard = time.monotonic()
            if message["type"] != "pmessage":
                continue  # pong
            topic = message["channel"][len(PREFIX):].decode("utf-8", "replace")
            try:
                self.on_message(topic, message["data"])
            except Exception:
                logger.exception("dropped a message on %s that the hub could not take", topic)


def _describe(kwargs):
    """Where the server is, without the password: host:port/db or the socket's path."""
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _reason(error):
    return str(error).strip() or type(error).__name__
