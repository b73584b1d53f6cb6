"""Full-text search (chat/search.py, chat/searchviews.py) against a real gunicorn (2 workers).

Every test searches for words of its own (random letters), so that the messages of other
tests in the shared database never match. The last test drives it in Chromium, with
tests/test_browser.py's set-up; ORM work goes through its ``orm()`` (Playwright's loop).
"""
import html
import random
import re
import urllib.error
import urllib.parse
import urllib.request

import psycopg2
import pytest

from chat import search
# Its fixtures too, used by name: one Chromium, pages that must end clean, ORM between calls.
from tests.test_browser import XSS, browser, make_room, make_users, open_page, orm  # noqa: F401

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture skips or fails and says why
    expect = None

TIMEOUT = 10
CONSONANTS = "bcdfghjklmnpqrstvwxz"  # no vowels: the stemmer leaves such words as they are
RATE_LIMITED = "Too many searches in a row: wait a few seconds, then search again."


def word():
    """A word no other test uses."""
    return "q" + "".join(random.choices(CONSONANTS, k=9))


class Client:
    """An HTTP client signed in by a session key; answers (status, headers, text), no redirects."""

    def __init__(self, server, session_key):
        self.server = server
        self.cookie = f"sessionid={session_key}"

    def get(self, path, **query):
        url = self.server.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, headers={"Cookie": self.cookie})
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            return response.getcode(), response.headers, response.read().decode()

    def search(self, q, **query):
        return self.get("/search/", q=q, **query)


def snippets(text):
    return re.findall(r'<p class="snippet">(.*?)</p>', text, re.S)


def hits(text):
    """The (room slug, seq) of each result, in page order."""
    return [(slug, int(seq)) for slug, seq in
            re.findall(r'<a href="/rooms/([^/]+)/messages/(\d+)/\?q=[^"]*#m\d+">', text)]


def error_of(text):
    found = re.search(r'<ul class="errorlist" role="alert"><li>(.*?)</li></ul>', text, re.S)
    return html.unescape(found.group(1)) if found else None


@pytest.fixture(scope="module")
def server(start_server):
    """Two workers; searches time out after 0.5 s; 8 searches per user and worker, hardly refilled."""
    return start_server(WEB_CONCURRENCY=2, CHAT_SEARCH_TIMEOUT=0.5, CHAT_SEARCH_RATE=0.01,
                        CHAT_SEARCH_BURST=8)


@pytest.fixture
def people(server, make_users):
    """Two signed-in clients (alice, bob) and their usernames."""
    (a_name, a_key), (b_name, b_key) = make_users(2, prefix="searcher")
    return Client(server, a_key), a_name, Client(server, b_key), b_name


@pytest.fixture
def add_messages(django_db_blocker):
    """Store ``bodies`` in a room after its last seq (committed); return their seqs."""
    def add(slug, username, bodies):
        from django.contrib.auth import get_user_model
        from django.db.models import F

        from chat.models import Message, Room

        with orm(django_db_blocker):
            user = get_user_model().objects.get(username=username)
            room = Room.objects.get(slug=slug)
            seqs = list(range(room.last_seq + 1, room.last_seq + 1 + len(bodies)))
            Message.objects.bulk_create(Message(room=room, seq=seq, user=user, body=body)
                                        for seq, body in zip(seqs, bodies))
            Room.objects.filter(pk=room.pk).update(last_seq=F("last_seq") + len(bodies))
        return seqs

    return add


def test_a_search_finds_public_rooms_and_own_private_rooms_never_another_private_room(
        people, make_room, add_messages):
    alice, a_name, bob, b_name = people
    public, alices, bobs = make_room(), make_room(private=True, members=[a_name]), \
        make_room(private=True, members=[b_name])
    secret = word()
    add_messages(public, b_name, [f"public {secret}"])
    add_messages(alices, a_name, [f"alice's {secret}"])
    add_messages(bobs, b_name, [f"bob's {secret}"])

    status, _, page = alice.search(secret)
    assert status == 200
    assert hits(page) == [(alices, 1), (public, 1)]  # newest first
    status, _, page = bob.search(secret)
    assert hits(page) == [(bobs, 1), (public, 1)]


def test_deleted_messages_are_never_found(people, make_room, add_messages, django_db_blocker):
    from chat.models import Message

    alice, a_name, _, _ = people
    room, secret = make_room(), word()
    add_messages(room, a_name, [f"kept {secret}", f"taken back {secret}"])
    with orm(django_db_blocker):
        Message.objects.filter(room__slug=room, seq=2).update(deleted=True)
    assert hits(alice.search(secret)[2]) == [(room, 1)]


def test_snippets_escape_the_body_and_mark_only_the_matches(people, make_room, add_messages):
    alice, a_name, _, _ = people
    room, secret = make_room(), word()
    add_messages(room, a_name, [f"<script>alert(\"x\")</script> <b>{secret}</b> & \x02stray\x03 marks"])

    status, _, page = alice.search(secret)
    assert status == 200
    assert snippets(page) == [
        f"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &lt;b&gt;<mark>{secret}</mark>&lt;/b&gt; "
        "&amp; stray marks"]
    assert "<script>" not in page
    _, _, page = alice.search(f"{secret} or <img src=x onerror=alert(1)>")
    assert "<img" not in page
    assert f'value="{secret} or &lt;img src=x onerror=alert(1)&gt;"' in page  # echoed escaped


def test_quotes_or_and_minus_work_as_on_web_search_engines(people, make_room, add_messages):
    alice, a_name, _, _ = people
    room = make_room()
    first, second, third = word(), word(), word()
    add_messages(room, a_name, [f"{first} {second}", f"{second} {first}", f"{third} alone",
                                f"{first} with {third}"])

    assert hits(alice.search(f'"{first} {second}"')[2]) == [(room, 1)]
    assert hits(alice.search(f"{second} or {third}")[2]) == [(room, 4), (room, 3), (room, 2), (room, 1)]
    assert hits(alice.search(f"{first} -{third}")[2]) == [(room, 2), (room, 1)]


def test_results_come_20_a_page_newest_first_with_links_between_pages(people, make_room, add_messages):
    alice, a_name, _, _ = people
    room, secret = make_room(), word()
    add_messages(room, a_name, [f"{secret} number {n}" for n in range(1, 46)])

    status, _, first = alice.search(secret)
    assert status == 200
    assert [seq for _, seq in hits(first)] == list(range(45, 25, -1))
    assert f'<a rel="next" href="?q={secret}&amp;page=2">Older results</a>' in first
    assert 'rel="prev"' not in first
    _, _, third = alice.search(secret, page=3)
    assert [seq for _, seq in hits(third)] == [5, 4, 3, 2, 1]
    assert 'rel="next"' not in third
    assert f'<a rel="prev" href="?q={secret}&amp;page=2">Newer results</a>' in third
    _, _, past = alice.search(secret, page=4)
    assert hits(past) == [] and f"No more messages match <q>{secret}</q>." in past


@pytest.mark.parametrize("query, status, message", [
    ("   ", 400, search.EMPTY),
    ("x" * 201, 400, "The search is too long: at most 200 characters."),
    ("the and of", 200, search.ONLY_STOP_WORDS),
    ("-cats -dogs", 400, search.ONLY_EXCLUSIONS),
    ("cats or -dogs", 400, search.ONLY_EXCLUSIONS),
], ids=["blank", "too long", "only stop words", "only exclusions", "or an exclusion"])
def test_a_query_that_cannot_be_searched_gets_a_clear_message(people, query, status, message):
    alice = people[0]
    got_status, _, page = alice.search(query)
    assert (got_status, error_of(page)) == (status, message)
    assert hits(page) == []


def test_the_search_page_without_a_query_shows_the_form_and_no_error(people):
    status, _, page = people[0].get("/search/")
    assert status == 200
    assert 'id="search-q" name="q" value=""' in page and error_of(page) is None


def test_every_page_has_the_search_form_in_its_header(people):
    _, _, page = people[0].get("/")
    assert '<form class="site-search" method="get" action="/search/" role="search">' in page


def test_searches_past_the_per_user_budget_get_429_with_retry_after(people, make_users, server):
    alice = people[0]
    # 8 a worker: 17 searches exceed it on at least one of the 2 workers, wherever each lands.
    answers = [alice.search(word()) for _ in range(17)]
    refused = [(headers, page) for status, headers, page in answers if status == 429]
    assert refused, [status for status, _, _ in answers]
    headers, page = refused[0]
    assert error_of(page) == RATE_LIMITED and headers["Retry-After"] == "100"
    (_, other_key), = make_users(1, prefix="searcher")
    assert Client(server, other_key).search(word())[0] == 200  # per user, not for everyone


def test_a_search_past_the_statement_timeout_is_stopped_with_503(people, database_url):
    alice = people[0]
    blocker = psycopg2.connect(database_url)
    try:
        with blocker.cursor() as cursor:  # holds the search back until its timeout (0.5 s)
            cursor.execute("LOCK TABLE chat_message IN ACCESS EXCLUSIVE MODE")
        status, headers, page = alice.search(word())
    finally:
        blocker.rollback()
        blocker.close()
    assert (status, error_of(page), headers["Retry-After"]) == (503, search.TIMED_OUT, "5")


def test_a_result_links_to_its_message_among_ten_before_and_ten_after(people, make_room, add_messages):
    alice, a_name, _, _ = people
    room, secret = make_room(), word()
    add_messages(room, a_name, [f"message {n}" if n != 15 else f"the {secret} one" for n in range(1, 31)])

    _, _, results = alice.search(secret)
    link = re.search(r'<a href="(/rooms/[^"]+)">', results[results.index('class="hit"'):]).group(1)
    assert html.unescape(link) == f"/rooms/{room}/messages/15/?q={secret}#m15"
    status, _, page = alice.get(f"/rooms/{room}/messages/15/", q=secret)
    assert status == 200
    assert [int(seq) for seq in re.findall(r'id="m(\d+)" data-seq', page)] == list(range(5, 26))
    assert re.search(r'<li class="msg mine target" id="m15" data-seq="15" aria-current="true">', page)
    assert f'<a class="button" href="/rooms/{room}/">Open the live room</a>' in page
    assert f'<a href="/search/?q={secret}">Back to the results for <q>{secret}</q></a>' in page


def test_the_context_page_is_403_for_an_outsider_and_404_for_a_deleted_or_unknown_message(
        people, make_room, add_messages, django_db_blocker):
    from chat.models import Message

    alice, a_name, bob, _ = people
    private, secret = make_room(private=True, members=[a_name]), word()
    add_messages(private, a_name, [secret, "taken back"])
    with orm(django_db_blocker):
        Message.objects.filter(room__slug=private, seq=2).update(deleted=True)

    assert alice.get(f"/rooms/{private}/messages/1/")[0] == 200
    assert alice.get(f"/rooms/{private}/messages/2/")[0] == 404
    assert alice.get(f"/rooms/{private}/messages/3/")[0] == 404
    assert alice.get("/rooms/no-such-room/messages/1/")[0] == 404
    status, _, page = bob.get(f"/rooms/{private}/messages/1/")
    assert status == 403 and "This room is private." in page and secret not in page
    assert bob.get(f"/rooms/{private}/messages/3/")[0] == 403  # no seq is told apart


def test_the_search_page_needs_a_signed_in_user(server):
    request = urllib.request.Request(server.url + "/search/?q=anything")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        assert (error.code, error.headers["Location"]) == (
            302, "/accounts/login/?next=/search/%3Fq%3Danything")
    else:
        pytest.fail("an anonymous search was answered")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.django_db
def test_the_query_uses_the_gin_index_on_the_same_expression(make_users):
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    (name, _), = make_users(1, prefix="searcher")
    user = get_user_model().objects.get(username=name)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # On a small table the planner rather reads it all, or walks the primary key
            # newest first: forbid both, so that only an expression the GIN index can't serve
            # would still end in a scan of the whole table.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_indexscan = off")
        plan = "\n".join(search.explain(user, '"quick brown" or fox -dog'))
    assert "Bitmap Index Scan on chat_message_body_search" in plan, plan
    assert "Seq Scan on chat_message" not in plan, plan


def test_a_long_message_is_shown_as_its_matching_fragments(people, make_room, add_messages):
    alice, a_name, _, _ = people
    room, secret = make_room(), word()
    filler = " ".join(["filler"] * 100)
    add_messages(room, a_name, [f"{filler} the {secret} is here {filler} and {secret} again {filler}"])

    snippet, = snippets(alice.search(secret)[2])
    assert snippet.count(f"<mark>{secret}</mark>") == 2
    assert " \u2026 " in snippet and snippet.count("filler") < 60


def test_in_a_browser_the_header_search_finds_a_message_and_opens_it_among_its_neighbours(
        server, make_users, make_room, add_messages, open_page):
    (name, key), = make_users(1, prefix="searcher")
    room, secret = make_room(), word()
    body = f"{XSS} the {secret} one"
    add_messages(room, name, [body if n == 15 else f"message {n}" for n in range(1, 31)])
    page = open_page(key)
    page.page.goto(f"{server.url}/")

    box = page.page.get_by_role("searchbox", name="Search messages")
    box.fill(secret)
    box.press("Enter")
    expect(page.page).to_have_url(f"{server.url}/search/?q={secret}")
    expect(page.page.locator(".hit")).to_have_count(1)
    expect(page.page.locator(".snippet")).to_have_text(body)  # the markup shown as text
    expect(page.page.locator(".snippet mark")).to_have_text(secret)
    page.page.locator(".hit-where a").click()

    expect(page.page).to_have_url(f"{server.url}/rooms/{room}/messages/15/?q={secret}#m15")
    expect(page.page.locator(".messages.context > li.msg")).to_have_count(21)
    target = page.page.locator("li.msg.target")
    expect(target).to_have_attribute("id", "m15")
    expect(target.locator(".body")).to_have_text(body)
    expect(target).to_be_in_viewport()
    assert page.page.evaluate("document.querySelectorAll('img').length") == 0
    page.page.get_by_role("link", name="Open the live room").click()
    expect(page.page).to_have_url(f"{server.url}/rooms/{room}/")
    page.online()


@pytest.mark.django_db
def test_an_index_built_with_another_config_than_the_setting_is_logged_once(
        settings, caplog, monkeypatch, make_users):
    from django.contrib.auth import get_user_model

    (name, _), = make_users(1, prefix="searcher")
    user = get_user_model().objects.get(username=name)
    settings.CHAT_SEARCH_CONFIG = "simple"
    monkeypatch.setattr(search, "_index_checked", False)
    search.search(user, "anything")
    search.search(user, "anything")
    warnings = [r.getMessage() for r in caplog.records if r.name == "chat.search"]
    assert len(warnings) == 1 and warnings[0].startswith(
        "CHAT_SEARCH_CONFIG=simple but index chat_message_body_search is CREATE INDEX")
