"""A minimal keep-alive HTTP/1.1 client over gevent sockets, for the long-poll transport.

One ``Connection`` carries one request at a time. The load client keeps a few per virtual
user: a general client library (http.client, with its header parsing per response) would
cost the load process more than the server it measures.
"""
import re
import time

from gevent import socket

RECV_SIZE = 65536
MAX_HEAD = 65536
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")
HEADER = re.compile(rb"\r\n([A-Za-z0-9-]+): *([^\r\n]*)")


class ProtocolError(OSError):
    """The server's answer was not HTTP we understand, or the connection ended inside it."""


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def retry_after(self):
        """Return a 503's or 429's Retry-After in seconds, or None."""
        value = self.headers.get("retry-after", "")
        return int(value) if value.isdigit() else None


class Connection:
    """One TCP connection to the server, reused for request after request (keep-alive)."""

    def __init__(self, host, port, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.used = 0  # requests answered on this connection
        self.idle_since = time.monotonic()
        self.stream = None  # the stream id of the last answer here: it tells the worker
        self.open = True

    def post(self, head, body, timeout):
        """Send one request (``head`` ends with the blank line) and return its ``Response``."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(head + body)
            response = self._read_response()
        except (OSError, ValueError) as exc:
            self.close()
            raise exc if isinstance(exc, OSError) else ProtocolError(str(exc))
        self.used += 1
        self.idle_since = time.monotonic()
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    def _read_response(self):
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD:
                raise ProtocolError("response headers over 64 KiB")
            self._fill()
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end])
        del self.buffer[:end + 4]
        status = STATUS.match(head)
        if status is None:
            raise ProtocolError(f"not an HTTP response: {head[:40]!r}")
        headers = {name.decode().lower(): value.decode("latin-1") for name, value in HEADER.findall(head)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self._read_exactly(int(headers.get("content-length", "0")))
        return Response(int(status.group(1)), headers, body)

    def _read_exactly(self, size):
        while len(self.buffer) < size:
            self._fill()
        body = bytes(self.buffer[:size])
        del self.buffer[:size]
        return body

    def _read_chunked(self):
        parts = []
        while True:
            while b"\r\n" not in self.buffer:
                self._fill()
            end = self.buffer.index(b"\r\n")
            size = int(bytes(self.buffer[:end]).split(b";")[0], 16)
            del self.buffer[:end + 2]
            if size == 0:
                while b"\r\n" not in self.buffer:  # no trailers expected: just the blank line
                    self._fill()
                del self.buffer[:self.buffer.index(b"\r\n") + 2]
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            self._read_exactly(2)

    def _fill(self):
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise ProtocolError("the server closed the connection")
        self.buffer += data

    def close(self):
        self.open = False
        self.sock.close()


def request_head(path, host, port, cookie, csrf, length):
    """Return the head of a JSON POST with the session and CSRF cookies and the page's Origin."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Origin: http://{host}:{port}",
             "Content-Type: application/json", f"Content-Length: {length}", f"Cookie: {cookie}"]
    if csrf:
        lines.append(f"X-CSRFToken: {csrf}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
