"""One load process: open this process's share of the sockets, send by plan, drain, tally."""
import logging
import os
import time
import urllib.parse
from dataclasses import dataclass

import gevent
from gevent.pool import Pool

from chatload import wire
from chatload.longpoll import HttpUser
from chatload.user import Tally, VirtualUser

logger = logging.getLogger("loadtest")


@dataclass
class Target:
    """Where the sockets go and how they talk."""

    host: str
    port: int
    ws_path: str
    dialect: str = "chat"
    user_in_query: bool = False  # peers without a login take the username from the URL
    transport: str = "ws"  # or "http": the long-poll of docs/protocol.md, section 7
    http_path: str = "/http/"

    @classmethod
    def from_url(cls, url, ws_path, dialect, transport="ws", http_path="/http/"):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "ws"):
            raise ValueError(f"--url must be http://host:port (TLS is not supported), not {url!r}")
        return cls(parts.hostname, parts.port or 80, ws_path, dialect, transport=transport, http_path=http_path)

    def path(self, name):
        if not self.user_in_query:
            return self.ws_path
        return self.ws_path + ("&" if "?" in self.ws_path else "?") + "user=" + urllib.parse.quote(name)


@dataclass
class Share:
    """The virtual users one process runs: global indexes ``index::procs`` of ``users``."""

    users: int
    rooms: list
    senders: int
    accounts: list
    index: int = 0
    procs: int = 1

    def members(self):
        for i in range(self.index, self.users, self.procs):
            yield i, self.accounts[i % len(self.accounts)], self.rooms[i % len(self.rooms)], i < self.senders


def plan(epoch, rates, duration, pause, senders):
    """Return per step (begins, ends, one sender's interval or None for a silent step)."""
    steps = []
    for k, rate in enumerate(rates):
        begins = epoch + k * (duration + pause)
        steps.append((begins, begins + duration, senders / rate if rate > 0 else None))
    return steps


class LoadProcess:
    def __init__(self, target, share, cookies, epoch, options):
        self.target, self.share, self.cookies = target, share, cookies
        self.epoch, self.options = epoch, options
        self.tally = Tally()
        self.users, self.senders = [], []
        self.run_id = os.urandom(4).hex()

    def open_all(self):
        """Open sockets (or HTTP streams) spread evenly over the ramp, a bounded number at a time."""
        members = list(self.share.members())
        pool, ramp, began = Pool(self.options.connect_concurrency), self.options.ramp, time.time()
        user_class = HttpUser if self.target.transport == "http" else VirtualUser
        for n, (i, account, room, sends) in enumerate(members):
            at = began + ramp * n / max(1, len(members))
            delay = at - time.time()
            if delay > 0:
                gevent.sleep(delay)
            user = user_class(account, self.cookies.get(account), room, self.target, self.tally, self.epoch,
                               reconnect=getattr(self.options, "reconnect", False))
            pool.spawn(self._open, user, i, sends)
        pool.join()
        self.tally.open_seconds = time.time() - began
        logger.info("process %d: %d sockets open, %d failed, in %.1f s", self.share.index,
                    len(self.users), sum(self.tally.failed.values()), time.time() - began)

    def _open(self, user, index, sends):
        try:
            user.open(self.options.open_timeout)
        except (OSError, wire.HandshakeError, wire.Closed, TimeoutError) as exc:
            reason = getattr(exc, "code", None) or getattr(exc, "status", None) or type(exc).__name__
            self.tally.failed[str(reason)] += 1
            user.stop()
            return
        self.users.append(user)
        if sends:
            self.senders.append((index, user))

    def send_all(self, steps, limit):
        """Send by ``steps``; ``limit[0]`` may lower the number of steps while they run."""
        senders = self.share.senders
        greenlets = [gevent.spawn(user.send_steps, steps, limit, index / senders, self.run_id, self.options.size)
                     for index, user in self.senders]
        gevent.joinall(greenlets)
        ends = steps[limit[0] - 1][1]  # receive until the last step ends, senders or not
        gevent.sleep(max(0, ends - time.time()))

    def drain(self, timeout):
        """Wait until every socket has every seq this process knows of, or ``timeout``."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            newest = {}
            for user in self.users:
                if user.closed is None:
                    newest[user.room] = max(newest.get(user.room, 0), user.last or 0)
            behind = [u for u in self.users if u.closed is None and (u.last < newest[u.room] or u.missing)]
            away = any(user.comeback is not None for user in self.users)  # still reconnecting
            if not behind and not away and not any(user.pending for _, user in self.senders):
                return
            gevent.sleep(0.05)

    def members(self):
        """Return {room: sockets open in it now}."""
        counts = {}
        for user in self.users:
            if user.closed is None:
                counts[user.room] = counts.get(user.room, 0) + 1
        return counts

    def stop(self):
        for user in self.users:
            user.stop()
        return self.tally
