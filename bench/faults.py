"""The chaos soak's cluster and the faults it injects into it.

The cluster is a PostgreSQL of its own (pgserver's binaries, in a temporary directory, so it
can be stopped and started), a ``redis-server`` of its own when Redis is the broker, and
gunicorn instances started with the project's gunicorn.conf.py (tests/live.py ``Gunicorn``),
all on loopback. ``Faults`` injects one fault at a time and says what it did.
"""
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import gevent
import psycopg2

from tests.live import BASE_DIR, Gunicorn, free_port

logger = logging.getLogger("chaos")

KINDS = ("kill_worker", "restart_postgres", "restart_redis", "drop_listener", "garbage", "pause_worker")
PAUSE_SECONDS = 5.0  # SIGSTOP ... SIGCONT
RESTART_TIMEOUT = 30.0  # seconds a gunicorn master gets to replace a killed worker
# Payloads no hub can take (issue 13 item 3): each must be skipped, never end a listen loop.
GARBAGE = ("x", "{room}\nnot json", '{room}\n{{"seq":"seven"}}\n{{}}', '{room}\n{{"seq":-1}}\n{{}}',
           "{room}\n[1,2,3]\n{{}}", "{room}\nspill:abc", "{room}\nspill:987654321", "!control\n{{}}\n[1]",
           '*\n{{"t":"noon"}}\n{{}}', '{room}\n{{"skip":5}}\n{{}}')


def kinds_for(broker):
    """Return the fault kinds that apply to ``broker`` (Redis is restarted only when it is the broker)."""
    return tuple(kind for kind in KINDS if broker == "redis" or kind != "restart_redis")


class Postgres:
    """A PostgreSQL of the soak's own, to stop and start at will; the same URL throughout."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            import pgserver

            from project import embedded
        # Not under pytest's tmp_path: pytest chmods it 0700 and PostgreSQL, run as the user
        # pgserver when we are root, could not start again in it (tests/test_faults.py).
        self.top = Path(tempfile.mkdtemp(prefix="chat-chaos-"))
        self.pgdata = self.top / "pgdata"
        self.server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        embedded.create_database(self.server, "chat")
        self.url = self.server.get_uri("chat")
        self.socket_dir = self.server.get_postmaster_info().socket_dir

    def pg_ctl(self, *args):
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def stop(self):
        self.pg_ctl("-m", "fast", "stop")  # every client is disconnected at once

    def start(self):
        # As pgserver starts it: no TCP, the same Unix-socket directory, so the same URL.
        self.pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start")

    def connect(self):
        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        return connection

    def execute(self, sql, params=()):
        """Run one statement in its own connection; return its rows (or None)."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else None
        finally:
            connection.close()

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.top, ignore_errors=True)


class Redis:
    """A ``redis-server`` of the soak's own on 127.0.0.1, without persistence."""

    def __init__(self, log_dir):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = Path(log_dir) / f"redis-{self.port}.log"
        self.process = None

    def start(self, timeout=10):
        import redis

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self.client() as client:
                    if client.ping():
                        return self
            except redis.ConnectionError:
                gevent.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer PING in {timeout} s; see {self.log_path}")

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def kill(self):
        """SIGKILL, as in a crash: no goodbye to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)


class Cluster:
    """PostgreSQL, maybe Redis, and ``instances`` gunicorns of ``workers`` workers on one database.

    Use it as a context manager: everything it started is stopped on the way out, a failed
    start included.
    """

    def __init__(self, broker, log_dir, instances=2, workers=2, env=None):
        self.broker, self.log_dir = broker, Path(log_dir)
        self.instance_count, self.workers = instances, workers
        self.extra_env = env or {}
        self.postgres = self.redis = None
        self.instances = []

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        """Start the database (migrated), Redis if needed, then every instance at once."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.postgres = Postgres()
        if self.broker == "redis":
            self.redis = Redis(self.log_dir).start()
        self.env = {"CHAT_BROKER": self.broker, "WEB_CONCURRENCY": self.workers, "CHAT_DB_CONCURRENCY": 5,
                    "DJANGO_DEBUG": "0", "SECRET_KEY": os.urandom(32).hex(), "SECURE_SSL_REDIRECT": "0",
                    **({"REDIS_URL": self.redis.url} if self.redis else {}), **self.extra_env}
        self.manage("migrate", "--noinput", "-v", "0")
        self.instances = [Gunicorn(self.postgres.url, self.log_dir, **self.env)
                          for _ in range(self.instance_count)]
        gevent.joinall([gevent.spawn(instance.start) for instance in self.instances], raise_error=True)
        for instance in self.instances:
            self.wait_workers(instance)
        return self

    def manage(self, *args):
        """Run ``manage.py`` against the soak's database; return its standard output."""
        env = {**os.environ, **{k: str(v) for k, v in self.env.items()}, "DATABASE_URL": self.postgres.url}
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, timeout=300,
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def wait_workers(self, instance, timeout=RESTART_TIMEOUT):
        """Wait until ``instance`` runs all its workers and each said it is ready; return their pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = instance.worker_pids()
            log = instance.log()
            if len(pids) == self.workers and all(f"worker {pid} ready" in log for pid in pids):
                return pids
            gevent.sleep(0.2)
        raise RuntimeError(f"{instance.url} did not run {self.workers} ready workers in {timeout} s")

    def stop(self):
        for instance in self.instances:
            instance.stop()
        if self.redis is not None:
            self.redis.kill()
        if self.postgres is not None:
            self.postgres.remove()

    def logs(self):
        """Return every instance's log, concatenated."""
        return "".join(instance.log() for instance in self.instances)


class Faults:
    """Inject one fault of a given kind into ``cluster``; return what was done, for the record."""

    def __init__(self, cluster, rng=None, rooms=(), pg_down=2.0, redis_down=1.0, pause=PAUSE_SECONDS):
        self.cluster, self.rng, self.rooms = cluster, rng or random.Random(), list(rooms) or ["lobby"]
        self.pg_down, self.redis_down, self.pause = pg_down, redis_down, pause

    def inject(self, kind):
        return getattr(self, kind)()

    def _worker(self):
        instance = self.rng.choice(self.cluster.instances)
        return instance, self.rng.choice(instance.worker_pids())

    def kill_worker(self):
        """SIGKILL a worker: its sockets drop without a close frame; its master starts another."""
        instance, pid = self._worker()
        os.kill(pid, signal.SIGKILL)
        began = time.monotonic()
        self.cluster.wait_workers(instance)
        return {"pid": pid, "instance": instance.port, "replaced_in_s": round(time.monotonic() - began, 1)}

    def pause_worker(self):
        """SIGSTOP a worker for a few seconds, then SIGCONT: its sockets stay open but silent."""
        instance, pid = self._worker()
        os.kill(pid, signal.SIGSTOP)
        try:
            gevent.sleep(self.pause)
        finally:
            os.kill(pid, signal.SIGCONT)
        return {"pid": pid, "instance": instance.port, "seconds": self.pause}

    def restart_postgres(self):
        """Stop PostgreSQL (``-m fast``: every connection cut), wait, start it again."""
        began = time.monotonic()
        self.cluster.postgres.stop()
        gevent.sleep(self.pg_down)
        self.cluster.postgres.start()
        return {"down_s": round(time.monotonic() - began, 1)}

    def restart_redis(self):
        """SIGKILL Redis, wait, start it again on the same port."""
        began = time.monotonic()
        self.cluster.redis.kill()
        gevent.sleep(self.redis_down)
        self.cluster.redis.start()
        return {"down_s": round(time.monotonic() - began, 1)}

    def drop_listener(self):
        """Cut every worker's listening connection (PostgreSQL's LISTEN, Redis's PSUBSCRIBE)."""
        if self.cluster.broker == "redis":
            with self.cluster.redis.client() as client:
                return {"killed": client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")}
        [(killed,)] = self.cluster.postgres.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'chat-listener:%%' OR query ILIKE 'LISTEN %%'")
        return {"killed": killed}

    def garbage(self, count=4):
        """Send a few payloads no hub can read through the broker, as another program could."""
        texts = [text.format(room=self.rng.choice(self.rooms)) for text in self.rng.sample(GARBAGE, count)]
        if self.cluster.broker == "redis":
            with self.cluster.redis.client() as client:
                for text in texts:
                    topic, _, payload = text.partition("\n") if "\n" in text else (self.rooms[0], "", text)
                    client.publish(f"chat:{topic}", payload.encode())
        else:
            connection = self.cluster.postgres.connect()
            try:
                with connection.cursor() as cursor:
                    for text in texts:
                        cursor.execute("SELECT pg_notify('chat_events', %s)", [text])
            finally:
                connection.close()
        return {"payloads": texts}
