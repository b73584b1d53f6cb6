"""Redis pub/sub: fan-out between workers and hosts through a Redis server (``REDIS_URL``).

Publishing goes through one client per worker over a bounded ``BlockingConnectionPool``:
greenlets that publish at once wait for a free connection (up to ``pool_timeout``) instead
of opening more. (Django's cache backends keep a connection per greenlet under gevent.)
Options in the URL's query override the defaults, e.g. ``redis://host:6379/0?max_connections=20``.
One more connection per worker listens: ``PSUBSCRIBE chat:*``, read by the listen loop of
``ListeningBroker``. Payloads pass whole up to ``CHAT_EVENT_MAX_BYTES``, so nothing goes by
reference.

Pub/sub is at most once: what is published while the listener reconnects is lost. After
every subscription (the first one too) the hub catches up from the database by seq: messages
are committed there before they are published. A failed publish raises to the hub, which
logs it and delivers in this worker only.
"""
import os
import time

import redis
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

from chat.brokers.base import ListeningBroker

PREFIX = "chat:"  # unless CHAT_BROKER_CHANNEL is set: then "<channel>:"
ERRORS = (redis.RedisError, OSError)


class RedisBroker(ListeningBroker):
    """Publish with ``PUBLISH <prefix><slug>``; listen with ``PSUBSCRIBE <prefix>*``, one connection.

    The prefix is ``chat:``, or ``<channel>:`` for a ``CHAT_BROKER_CHANNEL`` of its own.
    """

    lost_errors = ERRORS

    def __init__(self, url, max_connections=10, pool_timeout=5.0, socket_timeout=5.0,
                 poll_timeout=5.0, channel=None, max_bytes=None, **options):
        if not url:
            raise ImproperlyConfigured("The redis broker needs REDIS_URL, e.g. redis://127.0.0.1:6379/0.")
        self.prefix = PREFIX if channel is None else f"{channel}:"
        self.poll_timeout = poll_timeout
        pid = os.getpid()
        connection = {"socket_connect_timeout": socket_timeout, "socket_timeout": socket_timeout,
                      "socket_keepalive": True}
        try:
            # One immediate retry on a broken connection: pooled sockets go stale when Redis restarts.
            self.pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=pool_timeout,
                client_name=f"chat-publish:{pid}",
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)), **connection)
            self.listen_pool = redis.ConnectionPool.from_url(
                url, max_connections=1, client_name=f"chat-listen:{pid}",
                retry=Retry(NoBackoff(), 0, supported_errors=()), **connection)  # we reconnect
        except ValueError as error:
            raise ImproperlyConfigured(f"REDIS_URL is not a Redis URL: {error}") from None
        self.client = redis.Redis(connection_pool=self.pool)
        self.where = _describe(self.pool.connection_kwargs)
        super().__init__(f"{self.prefix}* at {self.where}", max_bytes, **options)
        self.heard = None  # when the server last said anything on the subscription

    def _send(self, topic, payload):
        self.client.publish(self.prefix + topic, payload)

    def stop(self):
        super().stop()
        self.listen_pool.disconnect()
        self.pool.disconnect()

    def _subscribe(self):
        """PSUBSCRIBE and wait for the server's confirmation: from then on nothing is missed."""
        pubsub = redis.Redis(connection_pool=self.listen_pool).pubsub()
        try:
            pubsub.psubscribe(self.prefix + "*")
            deadline = time.monotonic() + self.poll_timeout
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message["type"] == "psubscribe":
                    self.heard = time.monotonic()
                    return pubsub
            raise redis.TimeoutError(f"no confirmation of PSUBSCRIBE in {self.poll_timeout} s")
        except BaseException:
            pubsub.close()
            raise

    def _receive(self, pubsub):
        message = pubsub.get_message(timeout=self.poll_timeout)
        if message is None:  # quiet for a while: is the server still there?
            if time.monotonic() - self.heard > 2 * self.poll_timeout:
                raise redis.TimeoutError(f"no answer to PING in {self.poll_timeout} s")
            pubsub.ping()
            return ()
        self.heard = time.monotonic()
        if message["type"] != "pmessage":
            return ()  # pong
        return [(message["channel"][len(self.prefix):].decode("utf-8", "replace"), message["data"])]

    def _close(self, pubsub):
        pubsub.close()


def _describe(kwargs):
    """Where the server is, without the password: host:port/db or the socket's path."""
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
