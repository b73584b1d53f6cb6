"""A client's outbound queue, bounded in frames and in bytes.

A frame count alone let a client that never reads, but keeps asking for big ``joined`` or
``history`` replies, queue gigabytes in one worker (issue 11). One frame is always taken into
an empty queue, however large (a ``joined`` of 500 long messages is legitimate); beyond that
the queue holds at most ``max_bytes``. A close is queued as a ``(code, reason)`` tuple after
everything else is dropped.
"""
from collections import deque

from gevent.event import Event


class Outbox:
    """Frames (bytes) waiting for the writer, then at most one close."""

    def __init__(self, max_frames, max_bytes):
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames = deque()
        self.bytes = 0
        self.closing = None  # (code, reason) once close() was called
        self._ready = Event()

    def __len__(self):
        return len(self.frames)

    def put(self, frame):
        """Queue ``frame``; False (nothing queued) when it would pass a bound."""
        if self.frames and (len(self.frames) >= self.max_frames
                            or self.bytes + len(frame) > self.max_bytes):
            return False
        self.frames.append(frame)
        self.bytes += len(frame)
        self._ready.set()
        return True

    def close(self, code, reason, farewell=None):
        """Drop what is queued; ``get()`` returns ``farewell`` (when given), then ``(code, reason)``."""
        self.frames.clear()
        self.bytes = 0
        if farewell is not None:  # e.g. the drain's reconnect hint, which must precede the close
            self.frames.append(farewell)
        self.closing = (code, reason)
        self._ready.set()

    def get(self, most_bytes):
        """Wait for frames; return them joined (up to ``most_bytes``), or the close tuple."""
        while not self.frames and self.closing is None:
            self._ready.clear()
            self._ready.wait()
        if self.closing is not None and not self.frames:
            return self.closing
        frames = [self.frames.popleft()]
        size = len(frames[0])
        while self.frames and size + len(self.frames[0]) <= most_bytes:
            frame = self.frames.popleft()
            frames.append(frame)
            size += len(frame)
        self.bytes -= size
        return frames[0] if len(frames) == 1 else b"".join(frames)
