"""The server's Prometheus metrics, defined in one place (README.md, "Operations").

Under gunicorn every worker writes its values to ``PROMETHEUS_MULTIPROC_DIR`` (set by
gunicorn.conf.py before any worker imports prometheus_client), and ``/metrics`` adds up the
files of all workers; elsewhere (runserver, tests in process) the values live in this
process's registry. Updates sit on the per-message path: each is a lock and a float add
(an mmap write under gunicorn), a few microseconds (bench/metrics_bench.py). Never update
per recipient; add the count once per broadcast.
"""
import os

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from chat.offload import offload

OPEN_SOCKETS = Gauge(
    "chat_open_sockets", "WebSockets open now, all workers.", multiprocess_mode="livesum")
JOINS = Counter("chat_joins", "Successful joins (a joined event sent).")
JOINS_FROM_MEMORY = Counter(
    "chat_joins_from_memory", "Joins whose messages came from the hub's memory, not the database.")
MESSAGES_RECEIVED = Counter(
    "chat_messages_received", "send frames received from clients, refused or resent ones included.")
MESSAGES_DELIVERED = Counter(
    "chat_messages_delivered", "message events handed to a socket's send queue, one per recipient.")
BROADCAST_LATENCY = Histogram(
    "chat_broadcast_latency_seconds",
    "From Hub.publish (after the commit) to a worker's hub having handed a message to its "
    "sockets' queues; once per message and worker with members in the room.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SEND_QUEUE_OVERFLOWS = Counter(
    "chat_send_queue_overflows", "Sockets closed with 1013 because their send queue overflowed.")
RATE_LIMITED = Counter("chat_rate_limited", "send and typing frames refused by the rate limit.")
DB_WAIT = Histogram(
    "chat_db_wait_seconds", "Time socket work waited for a pooled database connection.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
HUB_BLOCKS = Counter(
    "chat_hub_blocks", "Hub stalls over CHAT_MAX_BLOCKING_TIME reported by gevent's monitor.")


def multiprocess_dir():
    """Return the directory shared by the workers' metric files, or None (one process)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition():
    """Render every worker's metrics (or this process's) in Prometheus' text format."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY)
    # Reading and merging the workers' files is file IO: off the hub, with no registry lock.
    return offload(generate_latest, MultiProcessCollector(None, path))
