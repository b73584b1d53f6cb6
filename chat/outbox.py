"""A client's outbound queue, bounded in frames and in bytes.

A frame count alone let a client that never reads, but keeps asking for big ``joined`` or
``history`` replies, queue gigabytes in one worker (issue 11). One frame is always taken into
an empty queue, however large (a ``joined`` of 500 long messages is legitimate); beyond that
the queue holds at most ``max_bytes``. A close is kept as a ``(code, reason)`` tuple after
everything else is dropped. Nothing here waits: the socket session decides who writes.
"""
from collections import deque


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

    def give_back(self, data):
        """Put ``data`` from ``take()`` back in front: it goes first, whatever the bounds."""
        self.frames.appendleft(data)
        self.bytes += len(data)
