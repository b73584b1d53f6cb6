"""Server settings and hooks for ``gunicorn -c gunicorn.conf.py wsgi``.

Settings come from the environment (README.md, "Configuration"). Django is imported only
inside worker hooks: the master must stay free of it (never ``preload_app``).
"""
import patches  # noqa: F401  (first: nothing may import socket or threading before gevent)

import glob
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

from project import binding, embedded, startup

bind = [os.environ.get("CHAT_BIND", "127.0.0.1:8000")]
# One worker per core (the broker and presence make them one chat), at most 4 by default:
# each worker holds CHAT_DB_CONCURRENCY + 1 connections, and PostgreSQL allows 100.
workers = int(os.environ.get("WEB_CONCURRENCY") or min(os.cpu_count() or 1, 4))
worker_class = "chat.worker.ChatWorker"
# The worker's greenlet pool: every open socket holds a slot and pages wait when it is full,
# so leave headroom above the 10,000 sockets a worker is sized for.
worker_connections = int(os.environ.get("CHAT_WORKER_CONNECTIONS", "11000"))
timeout = 30
keepalive = 5
# A draining worker shares its core with its replacement: 10,000 closes took over 10 s there.
graceful_timeout = int(os.environ.get("CHAT_GRACEFUL_TIMEOUT", "30"))
max_requests = 0  # a restart drops every socket of the worker
preload_app = False  # would import Django (and django.db) in the master, before patching
accesslog = os.environ.get("CHAT_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn 27 opens a control socket at one path shared by every instance of the user.
control_socket_disable = True
proc_name = "chat"

# A file per socket of the pool, and some for the database, the logs and the metrics.
OPEN_FILES = worker_connections + 1_024
MAX_BLOCKING_TIME = float(os.environ.get("CHAT_MAX_BLOCKING_TIME", "0.1"))
BLOCKING_MONITOR = os.environ.get("CHAT_BLOCKING_MONITOR", "1") not in ("0", "false", "no")
# Seconds the master waits for the database before refusing to start (project/startup.py).
DB_START_TIMEOUT = float(os.environ.get("CHAT_DB_START_TIMEOUT", "10"))
_embedded_server = None

# Every worker writes its metrics to files here and /metrics adds them up (prometheus_client's
# multiprocess mode). Set now, in the master, so that workers have it before they import
# prometheus_client: its value class is chosen at import. A directory of our own by default.
METRICS_DIR_PREFIX = "chat-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):
    """Prepare the master: file limit, embedded database, migrations, metrics directory.

    Refuses to start (exit status 1, with what to fix) when the database does not answer
    within ``CHAT_DB_START_TIMEOUT`` seconds: gunicorn prints a RuntimeError and exits.
    """
    global _embedded_server
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, max(soft, OPEN_FILES))
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < OPEN_FILES:
        server.log.warning("open files limited to %s (the hard limit): fewer sockets per worker than "
                           "worker_connections (%s); raise the limit (LimitNOFILE=) or lower "
                           "CHAT_WORKER_CONNECTIONS", wanted, worker_connections)
    _embedded_server = embedded.ensure_database_url()
    startup.wait_for_database(os.environ["DATABASE_URL"], DB_START_TIMEOUT)
    if _embedded_server is not None:
        server.log.info("migrating the embedded database")
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=embedded.BASE_DIR, check=True)
    _remove_metric_files()  # an earlier run's counts (and migrate's) would add to this run's
    if not all(binding.bind_is_loopback(address) for address in bind):
        # Reachable from other machines: refuse DEBUG (chat.E010) before anyone sees a debug
        # page. A subprocess, since the master must not import Django (see patches.py).
        subprocess.run([sys.executable, "manage.py", "check", "--tag", "security",
                        "--fail-level", "ERROR"], cwd=embedded.BASE_DIR, check=True)


def on_exit(server):
    """Stop the embedded database (if this master started it) and drop our metrics directory."""
    embedded.stop(_embedded_server)
    if os.path.basename(METRICS_DIR).startswith(METRICS_DIR_PREFIX):
        shutil.rmtree(METRICS_DIR, ignore_errors=True)


def child_exit(server, worker):
    """Drop the live gauges of a worker that exited (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)


def _remove_metric_files():
    os.makedirs(METRICS_DIR, exist_ok=True)
    for path in glob.glob(os.path.join(METRICS_DIR, "*.db")):
        os.remove(path)


def post_worker_init(worker):
    """Warm Django up, start gevent's blocking monitor and close sockets with 1001 on stop."""
    from chat import monitor, shutdown

    monitor.warm_up()
    if BLOCKING_MONITOR:
        monitor.start(MAX_BLOCKING_TIME)
    from django.conf import settings

    # The drain (chat/shutdown.py) fits in the graceful timeout, with time for the last
    # clients to answer their close frame.
    within = shutdown.drain_budget(worker.cfg.graceful_timeout, settings.CHAT_CLOSE_TIMEOUT)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        previous = signal.getsignal(signum)
        signal.signal(signum, shutdown.going_away_handler(previous, within))
    logging.getLogger("chat").info("worker %s ready", worker.pid)
