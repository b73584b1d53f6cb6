"""Many greenlets' small database writes as one statement: gather for a short window, then run.

A reconnect storm brings thousands of joins a second; one statement each saturates the
database. Callers of :meth:`Batch.submit` wait at most ``window`` seconds (less when the
batch fills up) and get their own item's result, or the statement's exception.
"""
import logging

import gevent
from gevent.event import AsyncResult

logger = logging.getLogger(__name__)


class Batch:
    """Run ``run(items) -> results`` (same order) over the items submitted within ``window``."""

    def __init__(self, run, window, max_items, spawn=gevent.spawn):
        self.run = run
        self.window = window
        self.max_items = max_items
        self.spawn = spawn
        self.pending = []  # (item, AsyncResult)
        self.gatherer = None

    def submit(self, item):
        """Add ``item`` to the next statement; return its result once that statement ran."""
        result = AsyncResult()
        self.pending.append((item, result))
        if self.gatherer is None:
            self.gatherer = self.spawn(self._gather)
        return result.get()

    def _gather(self):
        """Cut the pending items into batches, each run in its own greenlet (the pool bounds them)."""
        try:
            while self.pending:
                if len(self.pending) < self.max_items:
                    gevent.sleep(self.window)
                batch = self.pending[:self.max_items]
                del self.pending[:self.max_items]
                self.spawn(self._run, batch)
        finally:
            self.gatherer = None

    def _run(self, batch):
        try:
            results = self.run([item for item, _ in batch])
        except BaseException as error:  # each waiter raises it: a join then fails visibly
            for _, result in batch:
                result.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, result), value in zip(batch, results, strict=True):
            result.set(value)
