"""The gunicorn worker: gevent-websocket's handler, with the checks that must come before the upgrade.

gevent-websocket upgrades *before* the WSGI application runs, on any path that carries
upgrade headers: the 101 has been sent by the time Django sees ``wsgi.websocket``. So
the handler itself decides, before upgrading, that only ``CHAT_WS_PATH`` upgrades and that a
foreign ``Origin`` gets HTTP 403 (PROTOCOL.md, Connection). It also bounds the time a
client may take to send its request line and headers (slowloris) and its request body, and
takes the client's address, scheme and host from a trusted proxy's headers (chat/proxies.py)
before anything reads them: the Origin check, Django and the access log.
"""
import logging
import socket
import time

import gevent
from django.conf import settings
from gevent.pywsgi import WSGIHandler
from geventwebsocket.handler import WebSocketHandler
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from chat import admission, proxies
from chat.origins import origin_allowed

logger = logging.getLogger(__name__)


class BodyTimeout(BaseException):
    """The request body missed its deadline.

    A BaseException, so that Django's handlers (``except Exception``) let it through to the
    handler, which answers 408 (unless a response was sent already) and closes the connection.
    """


class DeadlineReader:
    """The connection's reader for one request body: all of it within ``timeout`` seconds.

    The clock starts at the first read (the application may work before it reads), and covers
    every read after it, gevent's discarding of an unread body included.
    """

    def __init__(self, rfile, timeout, clock=time.monotonic):
        self._rfile, self._timeout, self._clock = rfile, timeout, clock
        self._deadline = None

    def read(self, *args):
        return self._within_deadline(self._rfile.read, *args)

    def readline(self, *args):
        return self._within_deadline(self._rfile.readline, *args)

    def _within_deadline(self, read, *args):
        if self._deadline is None:
            self._deadline = self._clock() + self._timeout
        remaining = self._deadline - self._clock()
        late = BodyTimeout(f"no complete request body within {self._timeout:g} s")
        if remaining <= 0:
            raise late
        with gevent.Timeout(remaining, late):
            return read(*args)


class ChatHandler(WebSocketHandler, PyWSGIHandler):
    """Upgrade only ``CHAT_WS_PATH`` from allowed origins; log upgrades in the access log."""

    _head_timer = None

    def handle_one_request(self):
        """Serve one request; drop a client whose request head takes too long.

        A slowloris client trickles header bytes and never ends them: gevent's handler
        would wait forever, holding a greenlet and a file descriptor (CVE-2007-6750). The
        request line and headers must arrive within ``CHAT_HANDSHAKE_TIMEOUT`` seconds,
        counted from the first read (an idle keep-alive connection is closed after it
        too); the clock stops once they are parsed, before the application runs.
        """
        self._head_timer = gevent.Timeout(settings.CHAT_HANDSHAKE_TIMEOUT)
        self._head_timer.start()
        try:
            return super().handle_one_request()
        except gevent.Timeout as timeout:
            if timeout is not self._head_timer:
                raise
            logger.info("dropped %s: no complete request head within %s s",
                        self.client_address, settings.CHAT_HANDSHAKE_TIMEOUT)
            return None  # closes the connection, like nginx's client_header_timeout
        finally:
            self._head_timer.close()

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)
        finally:
            self._head_timer.cancel()  # the head is read: the application may take its time

    def get_environ(self):
        """Build the environ: the client as a trusted proxy tells it, the body on a deadline."""
        environ = super().get_environ()
        proxies.apply(environ, proxies.trusted_networks(tuple(settings.CHAT_TRUSTED_PROXIES)))
        # A client trickling its body would hold the greenlet forever, like a slow head.
        self.wsgi_input.rfile = DeadlineReader(self.rfile, settings.CHAT_BODY_TIMEOUT)
        return environ

    def run_application(self):
        if not self._asks_for_upgrade() or self.environ.get("PATH_INFO") != settings.CHAT_WS_PATH:
            # Plain HTTP, even with upgrade headers: Django answers it like any request.
            return WSGIHandler.run_application(self)
        origin = self.environ.get("HTTP_ORIGIN")
        if not origin_allowed(origin, self.environ.get("HTTP_HOST"), settings.CHAT_ALLOWED_ORIGINS):
            logger.warning("refused WebSocket from origin %r (host %r)", origin,
                           self.environ.get("HTTP_HOST"))
            return self._refuse(b"403 Forbidden", b"This origin may not open a WebSocket here.\n")
        self.max_message_size = settings.CHAT_MAX_MESSAGE_BYTES
        # Frame floods (chat/wsmends.py): ping and pong frames come in bursts of twice the rate.
        self.max_fragments = settings.CHAT_MAX_FRAGMENTS
        rate = settings.CHAT_CONTROL_FRAMES_PER_SECOND
        self.control_frames_per_second, self.control_frames_burst = rate, 2 * rate
        if settings.CHAT_SOCKET_SEND_BUFFER:
            # Bounds what the kernel holds for a slow reader (up to 4 MiB a socket by default),
            # so that a stalled client fills its send queue, and is closed, sooner.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.CHAT_SOCKET_SEND_BUFFER)
        ticket = admission.current().enter()
        if not callable(ticket):  # over the rate or draining: the client comes back later
            return self._busy(ticket)
        self.environ[admission.TICKET_KEY] = ticket
        try:
            return super().run_application()
        finally:
            ticket()  # a socket that ended before its first joined frees its slot (idempotent)

    def run_websocket(self):
        """Run the application for an upgraded socket, then the socket session it set up.

        The view (chat/endpoint.py) returns once the socket is set up; Django finishes the
        request (``request_finished`` closes its connections) and only then does the session
        run here, so the request, its session and its frames are not kept for the socket's
        life. Unlike 0.10.1, keep no registry of clients by address: with a Unix-socket bind
        every address is '' and its ``del`` raised KeyError when several sockets closed. When
        Django answered without setting a socket up (a disallowed Host gets 400, a crash 500),
        the client gets 1008 or 1011 with that status as the reason.
        """
        from django.db import connections  # not at import: the master imports us

        from chat.endpoint import SOCKET_SESSION

        statuses = []

        def start_response(status, headers, exc_info=None):
            statuses.append(status)

        try:
            result = self.application(self.environ, start_response)
            try:
                list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()  # PEP 3333: Django's request_finished
            session, expires_at = self.environ.pop(SOCKET_SESSION, (None, None))
            if session is not None:
                # Its slot is freed at its first joined: until then the socket costs the database.
                session.settle_with(admission.take_ticket(self.environ), settings.CHAT_HANDSHAKE_TIMEOUT)
                try:
                    session.run(expires_at)  # logs its opening, its errors and its close
                finally:
                    connections.close_all()  # any this greenlet opened outside db_work()
        finally:
            if not self.websocket.closed:
                status = statuses[-1] if statuses else "500 Internal Server Error"
                self.websocket.close(1008 if status.startswith("4") else 1011, status)
            self.environ["wsgi.websocket"] = None
            self.websocket = None

    def handle_error(self, kind, error, tb):
        """Drop a client whose body missed its deadline (408 if nothing was sent); else 500."""
        if not isinstance(error, BodyTimeout):
            return super().handle_error(kind, error, tb)
        logger.info("dropped %s (peer %s): %s", self.environ.get("REMOTE_ADDR"),
                    self.environ.get(proxies.PEER_KEY), error)
        from django.db import close_old_connections  # not at import: the master imports us

        close_old_connections()  # Django's request_finished never came
        self.close_connection = True
        if not self.headers_sent:
            try:
                self._refuse(b"408 Request Timeout", b"The request body did not arrive in time.\n")
            except OSError:
                pass  # the client is gone: nothing to tell it
        return None

    def log_request(self):
        # gunicorn's access log, upgrades included (gevent-websocket's own skips 101s). A
        # request refused before its environ existed (400: TLS spoken to this port) has none,
        # and gunicorn's log would raise AttributeError on it.
        if self.environ is None:
            self.environ = {}
        PyWSGIHandler.log_request(self)

    def _asks_for_upgrade(self):
        return (self.environ.get("HTTP_UPGRADE", "").lower() == "websocket"
                and "upgrade" in self.environ.get("HTTP_CONNECTION", "").lower())

    def _busy(self, retry_after):
        """Answer 503 before the upgrade, and close: the retry may reach another worker."""
        self.close_connection = True
        body = b"Too many connections are being set up: retry after the seconds in Retry-After.\n"
        self.start_response("503 Service Unavailable", [
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
            ("Retry-After", str(retry_after)), ("Connection", "close")])
        self.result = [body]
        self.process_result()

    def _refuse(self, status, body):
        self.start_response(status.decode(), [("Content-Type", "text/plain; charset=utf-8"),
                                              ("Content-Length", str(len(body)))])
        self.result = [body]
        self.process_result()


class ChatServer(PyWSGIServer):
    """gevent's WSGI server, accepting one connection per wake-up.

    With the default (100), the worker that wakes first takes every pending connection, and
    a burst of sockets lands on one worker while the others idle; gunicorn sets 1 for its
    plain gevent worker with several workers, but not for this server class.
    """

    max_accept = 1


class ChatWorker(GeventPyWSGIWorker):
    """gunicorn's gevent worker serving Django pages and WebSockets with :class:`ChatHandler`."""

    server_class = ChatServer
    wsgi_handler = ChatHandler
