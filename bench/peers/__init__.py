"""The peer servers our benchmarks compare against, each in its own venv from PyPI.

``channels`` (the Channels tutorial chat on uvicorn, PostgreSQL, in-memory layer), ``flask``
(Flask-SocketIO, gevent, gunicorn) and ``bare`` (gevent-websocket alone). All speak the
dialect of ``bench/peers/README.md``. Runs with any Python 3.11; imports nothing outside
the standard library::

    from bench import peers
    proc = peers.start("bare", 9001, cpu=1)
    ...  # connect to ws://127.0.0.1:9001 + peers.WS_PATH["bare"] + "?user=alice"
    peers.stop(proc)
"""
import fcntl
import hashlib
import os
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path

NAMES = ("channels", "flask", "bare")
DIALECT = {"channels": "chat", "flask": "socketio", "bare": "chat"}
WS_PATH = {"channels": "/ws/", "flask": "/socket.io/?EIO=4&transport=websocket", "bare": "/ws/"}

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENVS = ROOT / "var" / "peers"
PYTHON = "python3.11"
START_TIMEOUT = 30.0
OPEN_FILES = 10_000 + 1_024  # as our own server: room for 10,000 sockets
WORKER_CONNECTIONS = 11_000  # gunicorn's gevent pool; our server's default (1,000 otherwise)


def venv_path(name):
    """Return the venv directory of peer ``name``: ``var/peers/<name>`` in the checkout."""
    _check_name(name)
    return VENVS / name


def setup(name):
    """Create the venv of peer ``name`` and install its pinned requirements; return its path.

    Skipped when the venv's stamp holds the requirements file's hash. A file lock keeps two
    bench processes from installing the same venv at once."""
    venv = venv_path(name)
    requirements = HERE / f"requirements-{name}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / ".requirements-sha256"
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == digest:
            return venv
        subprocess.run([PYTHON, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check",
                        "-q", "-r", str(requirements)], check=True)
        stamp.write_text(digest)
    return venv


def start(name, port, cpu=None, database_url=None, log_path=None, env=None):
    """Start peer ``name`` on 127.0.0.1:``port`` and return its ``Popen`` once it accepts TCP.

    ``cpu``: pin it with ``taskset -c``. ``database_url``: PostgreSQL for ``channels``
    (default: ``DATABASE_URL`` from the environment); migrated before the server starts.
    ``log_path``: its stdout and stderr (default ``var/peers/<name>-<port>.log``).
    ``env``: extra environment variables. Stop it with ``stop(proc)`` or ``terminate()``."""
    venv = setup(name)
    if _accepts(port):
        raise RuntimeError(f"port {port} is already in use")
    environ = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    if name == "channels":
        environ["DATABASE_URL"] = database_url or environ.get("DATABASE_URL") or ""
        if not environ["DATABASE_URL"]:
            raise ValueError("the channels peer needs database_url or DATABASE_URL")
    log_path = Path(log_path or VENVS / f"{name}-{port}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command, cwd = _command(name, venv, port)
    with open(log_path, "ab") as log:
        if name == "channels":
            subprocess.run([str(venv / "bin" / "python"), "manage.py", "migrate", "--noinput",
                            "-v", "0"], cwd=cwd, env=environ, stdout=log, stderr=log, check=True)
        if cpu is not None:
            command = [shutil.which("taskset") or "taskset", "-c", str(cpu), *command]
        proc = subprocess.Popen(command, cwd=cwd, env=environ, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, preexec_fn=_raise_file_limit)
    _wait_until_up(proc, port, log_path)
    return proc


def stop(proc, timeout=10.0):
    """Terminate a peer started by ``start()``; kill it if it is still there after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _command(name, venv, port):
    """Return (argv, cwd) that serves peer ``name`` on 127.0.0.1:``port``."""
    bin_ = venv / "bin"
    if name == "channels":
        return [str(bin_ / "uvicorn"), "mysite.asgi:application", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--no-access-log"], HERE / "channels_chat"
    if name == "flask":
        return [str(bin_ / "gunicorn"), "-k", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                "-w", "1", "--worker-connections", str(WORKER_CONNECTIONS),
                "--no-control-socket", "-b", f"127.0.0.1:{port}", "flask_chat:app"], HERE
    return [str(bin_ / "python"), "bare_chat.py", "--port", str(port)], HERE


def _check_name(name):
    if name not in NAMES:
        raise ValueError(f"unknown peer {name!r}; expected one of {NAMES}")


def _raise_file_limit():
    """In the child: raise the soft open-files limit as our own server does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _wait_until_up(proc, port, log_path):
    """Return once ``port`` accepts TCP; raise (stopping ``proc``) with the log's tail if not."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode}:\n{_tail(log_path)}")
        if _accepts(port):
            return
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"peer not up on port {port} after {START_TIMEOUT:.0f} s:\n{_tail(log_path)}")


def _tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
