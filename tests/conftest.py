"""Fixtures: the test database as a URL, users with sessions, and real gunicorn servers."""
import json
import urllib.parse

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore

from chat.monitor import REPORT_PREFIX
from tests.live import BASE_DIR, Gunicorn

MEASUREMENTS = {}


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """Create the test database for every run, not only when a test asks for ``db``.

    pytest-django sets up only the databases that collected tests mark; the live-server
    tests reach the database through gunicorn instead. Never use ``transactional_db`` here:
    its flush would delete the users that the session-scoped servers rely on.
    """
    import os

    from django.conf import settings
    from django.test.utils import setup_databases, teardown_databases

    # One test database per run, so that runs side by side on one machine don't collide.
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_chat_{os.getpid()}"
    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=0)


@pytest.fixture(scope="session")
def database_url(django_db_setup, django_db_blocker):
    """The URL of pytest-django's test database, for the servers under test."""
    import os

    from django.db import connection

    name = connection.settings_dict["NAME"]
    return urllib.parse.urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + name).geturl()


@pytest.fixture(scope="session")
def make_users(django_db_setup, django_db_blocker):
    """Create users (committed, visible to the servers) and return (username, session key)s."""
    counter = iter(range(1, 1_000_000))

    def make(count, prefix="user", password=None):
        User = get_user_model()
        with django_db_blocker.unblock():
            names = [f"{prefix}{next(counter)}" for _ in range(count)]
            users = [User(username=name) for name in names]
            for user in users:
                if password is None:
                    user.set_unusable_password()
                else:
                    user.password = password  # an encoded hash, computed once by the caller
            User.objects.bulk_create(users)
            users = list(User.objects.filter(username__in=names).order_by("id"))
            return [(user.get_username(), _session_for(user)) for user in users]

    return make


def _session_for(user):
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key


@pytest.fixture(scope="session")
def gunicorn_logs(tmp_path_factory):
    return tmp_path_factory.mktemp("gunicorn")


@pytest.fixture(scope="module")
def start_server(database_url, gunicorn_logs):
    """Start gunicorns with the project's config; stop them when the module is done.

    Each worker keeps a pool of connections: servers must not outlive their module, or the
    run would exceed PostgreSQL's max_connections.
    """
    servers = []

    def start(**env):
        server = Gunicorn(database_url, gunicorn_logs, **env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(database_url, gunicorn_logs):
    """The shared gunicorn, two workers like the default here. Its hub must never block."""
    shared = Gunicorn(database_url, gunicorn_logs, CHAT_ALLOWED_ORIGINS="https://allowed.example",
                      CHAT_DB_CONCURRENCY=10, WEB_CONCURRENCY=2).start()
    yield shared
    shared.stop()
    assert REPORT_PREFIX not in shared.log(), "the hub blocked during the tests:\n" + shared.log()


@pytest.fixture(scope="session")
def measurements():
    """Figures measured by the tests, printed at the end of the run and saved to var/."""
    return MEASUREMENTS


def pytest_terminal_summary(terminalreporter):
    if MEASUREMENTS:
        terminalreporter.section("measured")
        for name, value in MEASUREMENTS.items():
            terminalreporter.write_line(f"{name}: {value}")
        out = BASE_DIR / "var" / "measurements.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(MEASUREMENTS, indent=2))


@pytest.fixture(scope="session")
def make_room(django_db_setup, django_db_blocker):
    """Create a room (committed) and return its slug; ``messages`` are stored from seq 1."""
    counter = iter(range(1, 1_000_000))

    def make(private=False, members=(), messages=0, author=None):
        from chat.models import Message, Room

        User = get_user_model()
        with django_db_blocker.unblock():
            slug = f"room-{next(counter)}"
            room = Room.objects.create(slug=slug, name=slug, private=private, last_seq=messages)
            room.members.set(User.objects.filter(username__in=members))
            if messages:
                user = User.objects.get(username=author)
                Message.objects.bulk_create(
                    Message(room=room, seq=seq, user=user, body=f"message {seq}") for seq in range(1, messages + 1))
        return slug

    return make


@pytest.fixture
def pooled_db(django_db_setup, django_db_blocker):
    """Let a test use db_work()'s pool directly: committed data, like the server's."""
    from chat import db

    pool = db.ConnectionPool(2)
    db.use_connections(pool)
    with django_db_blocker.unblock():
        yield pool
        pool.close()
    db.use_connections(None)


@pytest.fixture
def pair_in_room(make_users, make_room):
    """Sign two new users in (to one server, or one each) and join both to a fresh room."""
    from tests.live import connect, join

    opened = []

    def make(first, second=None, prefix="pair"):
        (_, a_key), (_, b_key) = make_users(2, prefix=prefix)
        room = make_room()
        a, b = connect(first, a_key), connect(second or first, b_key)
        opened.extend([a, b])
        join(a, room)
        join(b, room)
        return room, a, b

    yield make
    for ws in opened:
        ws.close()


@pytest.fixture
def alice(client, django_user_model):
    """A user "alice", signed in on the test client (in-process page tests)."""
    user = django_user_model.objects.create_user("alice")
    client.force_login(user)
    return user


@pytest.fixture
def bob(django_user_model):
    """Another user, "bob", not signed in."""
    return django_user_model.objects.create_user("bob")


@pytest.fixture
def committed_db(django_db_blocker):
    """Let a test read and write the database the servers use (committed, not in a transaction)."""
    with django_db_blocker.unblock():
        yield
