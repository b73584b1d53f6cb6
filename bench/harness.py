"""Start a server under test pinned to one core, its PostgreSQL beside it, and drive loadtest.py.

The server and its database share CPU 0; the load runs on CPU 1, so each side has a core
of this 2-core machine. Every scenario starts from a fresh database.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import peers  # noqa: E402
from chatload import server as proc_stats  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SERVER_CPU, LOAD_CPU = "0", "1"
SERVERS = ("ours", *peers.NAMES)
# BENCH_PORT_BASE moves them (two checkouts benchmarking on one machine).
_BASE = int(os.environ.get("BENCH_PORT_BASE", "8300"))
PORTS = {"ours": _BASE + 1, "channels": _BASE + 2, "flask": _BASE + 3, "bare": _BASE + 4}


def taskset(cpu):
    return [shutil.which("taskset"), "-c", cpu] if shutil.which("taskset") else []


class Database:
    """The benchmarks' own embedded PostgreSQL (var/bench-pgdata), pinned to the server's core."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        self.server = pgserver.get_server(ROOT / "var" / "bench-pgdata")
        pid = int((ROOT / "var" / "bench-pgdata" / "postmaster.pid").read_text().split()[0])
        self.pid = pid
        for member in proc_stats.tree(pid):  # backends forked later inherit the affinity
            subprocess.run(["taskset", "-a", "-p", "-c", SERVER_CPU, str(member)],
                           stdout=subprocess.DEVNULL, check=False)

    def fresh(self, name):
        """Drop and create database ``name``; return its URL."""
        import psycopg2

        connection = psycopg2.connect(self.server.get_uri("postgres"))
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return self.server.get_uri(name)

    def cpu(self):
        return proc_stats.sample(self.pid)[1]


class Server:
    """One server under test: ``ours`` (this project's gunicorn) or a peer from bench/peers."""

    def __init__(self, name, database, accounts=100, env=None, rooms=1):
        self.name, self.port = name, PORTS[name]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = RESULTS / f"{name}-server.log"
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.database_url = database.fresh(f"bench_{name}")
        self.proc = self._start_ours(accounts, rooms, env or {}) if name == "ours" else peers.start(
            name, self.port, cpu=int(SERVER_CPU), database_url=self.database_url, log_path=self.log_path)

    def _start_ours(self, accounts, rooms, env):
        environ = {**os.environ, "DATABASE_URL": self.database_url, "WEB_CONCURRENCY": "1",
                   # The load test's few senders send far above a person's rate limit.
                   "CHAT_RATE_LIMIT": "100000", "CHAT_RATE_BURST": "100000",
                   # Its few accounts hold thousands of sockets each (CHAT_SOCKETS_PER_USER is 20).
                   "CHAT_SOCKETS_PER_USER": "1000000",
                   "CHAT_MAX_BLOCKING_TIME": "0.05",
                   # Production settings, but plain HTTP on loopback: no redirect to HTTPS.
                   "DJANGO_DEBUG": "0", "SECRET_KEY": os.urandom(32).hex(), "SECURE_SSL_REDIRECT": "0", **env}
        manage = [PYTHON, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v", "0"], env=environ, check=True, cwd=ROOT)
        subprocess.run([*manage, "create_load_users", "--count", str(accounts), "--rooms", str(rooms)],
                       env=environ, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._environ = environ
        return self._run_ours("w")

    def _run_ours(self, mode):
        with open(self.log_path, mode) as log:
            proc = subprocess.Popen([*taskset(SERVER_CPU), str(ROOT / ".venv" / "bin" / "gunicorn"), "-c",
                                     "gunicorn.conf.py", "-b", f"127.0.0.1:{self.port}", "wsgi"],
                                    env=self._environ, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return proc
            except OSError:
                time.sleep(0.3)
        proc.kill()
        raise RuntimeError(f"our server did not come up; see {self.log_path}")

    def loadtest(self, label, *options):
        """Run loadtest.py on the load core against this server; return its JSON result."""
        out = RESULTS / f"{label}.json"
        command = [*taskset(LOAD_CPU), PYTHON, str(ROOT / "loadtest.py"), "--url", self.url,
                   "--server-pid", str(self.proc.pid), "--json", str(out), "--quiet", *options]
        if self.name != "ours":
            command += ["--no-login", "--dialect", peers.DIALECT[self.name], "--ws-path", peers.WS_PATH[self.name]]
        else:
            command += ["--sessions", ""]
        subprocess.run(command, cwd=ROOT, check=True, stdout=sys.stderr)
        return json.loads(out.read_text())

    def hub_blocks(self):
        """Count gevent monitor reports in our server's log (peers have no monitor)."""
        if self.name != "ours":
            return None
        return self.log_path.read_text().count("gevent hub blocked")

    def start_again(self):
        """Start the server once more on the same port and database (after ``stop()``)."""
        if self.name == "ours":
            self.proc = self._run_ours("a")
        else:
            self.proc = peers.start(self.name, self.port, cpu=int(SERVER_CPU), database_url=self.database_url,
                                    log_path=self.log_path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def versions():
    """Return the versions that matter, for the record."""
    import platform

    import django
    import gevent
    import gunicorn
    return {"python": platform.python_version(), "django": django.get_version(), "gevent": gevent.__version__,
            "gunicorn": gunicorn.__version__, "cpus": os.cpu_count(), "kernel": platform.release(),
            "peers": {name: (peers.HERE / f"requirements-{name}.txt").read_text().split("\n", 3)[-1].split()
                      for name in peers.NAMES}}
