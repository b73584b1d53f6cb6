"""Work done for many greenlets at once: what arrives while one batch runs goes in the next.

No window is waited for, so a lone request on an idle worker is served at once, and under a
storm the batches grow by themselves to what the database can take in the time of one.
"""
import logging
from itertools import islice

import gevent
from gevent.event import AsyncResult

logger = logging.getLogger(__name__)


class Batches:
    """Run ``work(keys) -> {key: result}`` for batches of at most ``batch_max`` keys.

    ``submit(key)`` returns an ``AsyncResult`` of that key's result (None when ``work``
    left it out), or of the exception ``work`` raised for its batch. Keys submitted again
    before their batch runs share one result.
    """

    def __init__(self, work, batch_max=500, name="batch"):
        self.work = work
        self.batch_max = batch_max
        self.name = name  # for the log
        self.pending = {}  # key -> AsyncResult, in arrival order
        self.runner = None  # the greenlet running batches while any are pending

    def submit(self, key):
        """Queue ``key`` for the next batch; return its ``AsyncResult``."""
        result = self.pending.get(key)
        if result is None:
            result = self.pending[key] = AsyncResult()
            if self.runner is None:
                self.runner = gevent.spawn(self._run)
        return result

    def _run(self):
        try:
            while self.pending:
                keys = list(islice(self.pending, self.batch_max))
                batch = {key: self.pending.pop(key) for key in keys}
                try:
                    found = self.work(keys)
                except Exception as error:
                    logger.warning("%s of %s failed: %s", self.name, len(keys), error)
                    for result in batch.values():
                        result.set_exception(error)
                    continue
                for key, result in batch.items():
                    result.set(found.get(key))
        finally:
            self.runner = None
