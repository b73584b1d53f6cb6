"""A client's outbound queue, bounded in frames and in bytes.

A frame count alone let a client that never reads, but keeps asking for big ``joined`` or
``history`` replies, queue gigabytes in one worker (issue 11). One frame is always taken into
an empty queue, however large (a ``joined`` of 500 long messages is legitimate); beyond that
the queue holds at most ``max_bytes``. A close is kept as a ``(code, reason)`` tuple after
everything else is dropped. Nothing here waits: the socket session decides who writes, and
the :class:`Flusher` when (once per turn of the event loop).
"""
from collections import deque

import gevent


class Outbox:
    """Frames (bytes) waiting to be written, then at most one close."""

    __slots__ = ("max_frames", "max_bytes", "frames", "bytes", "closing")

    def __init__(self, max_frames, max_bytes):
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames = deque()
        self.bytes = 0
        self.closing = None  # (code, reason) once close() was called

    def __len__(self):
        return len(self.frames)

    def put(self, frame):
        """Queue ``frame``; False (nothing queued) when it would pass a bound."""
        if self.frames and (len(self.frames) >= self.max_frames
                            or self.bytes + len(frame) > self.max_bytes):
            return False
        self.frames.append(frame)
        self.bytes += len(frame)
        return True

    def close(self, code, reason, farewell=None):
        """Drop what is queued but ``farewell`` (a frame, e.g. the drain's reconnect hint);
        keep ``(code, reason)`` as the last thing to write, once the frames are written."""
        self.frames.clear()
        self.bytes = 0
        if farewell is not None:
            self.put(farewell)
        self.closing = (code, reason)

    def take(self, most_bytes):
        """Return the queued frames joined (up to ``most_bytes``, at least one), or None."""
        if not self.frames:
            return None
        frames = [self.frames.popleft()]
        size = len(frames[0])
        while self.frames and size + len(self.frames[0]) <= most_bytes:
            frame = self.frames.popleft()
            frames.append(frame)
            size += len(frame)
        self.bytes -= size
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def take_all(self):
        """Return every queued frame, in order, leaving the queue empty."""
        frames = list(self.frames)
        self.frames.clear()
        self.bytes = 0
        return frames

    def give_back(self, data):
        """Put ``data`` from ``take()`` back in front: it goes first, whatever the bounds."""
        self.frames.appendleft(data)
        self.bytes += len(data)


class Flusher:
    """The hub's one callback that writes the outboxes of the sessions queued this turn.

    One callback object per session and message cost a fifth of a 10,000-socket fan-out; a
    list does not. At most ``chunk`` sessions are written per turn of the loop: a big room's
    fan-out then lets the other greenlets run between chunks (each outbox keeps its order).
    """

    def __init__(self, chunk=1000):
        self.chunk = chunk
        self.due = deque()  # sessions whose outbox waits for the next turn
        self.scheduled = False

    def add(self, session):
        self.due.append(session)
        if not self.scheduled:
            self.scheduled = True
            gevent.get_hub().loop.run_callback(self._run)

    def _run(self):
        due = self.due
        for _ in range(min(self.chunk, len(due))):
            due.popleft()._flush()
        if due:
            gevent.get_hub().loop.run_callback(self._run)  # the rest on the next turn
        else:
            self.scheduled = False


_flusher = None


def flusher():
    """Return this process's flusher (built in the worker, after the fork)."""
    global _flusher
    if _flusher is None:
        _flusher = Flusher()
    return _flusher
