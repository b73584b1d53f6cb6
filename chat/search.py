"""Full-text search over the messages a user may read (PostgreSQL's own, no search server).

The query matches ``to_tsvector(CHAT_SEARCH_CONFIG, body)``, the very expression of the GIN
index ``chat_message_body_search`` (chat/models.py), so that the index serves it; the user's
words go through ``websearch_to_tsquery`` (quotes for phrases, ``or``, ``-word`` to exclude).

Results are the newest first, not by rank: people look for "that message from last week", a
short chat message ranks about as well as any other, and ranking must compute the vector of
every matching message (the index stores none), so its cost grows with the matches
(docs/benchmarks.md, "Search (issue 16)"). Pages are 20 hits, fetched as 21 to know whether
another follows, without counting them all.

Readable rooms are public rooms and the private rooms the user is a member of; deleted
messages are never found. Each search runs under ``SET LOCAL statement_timeout``.
"""
import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, transaction
from django.utils.safestring import mark_safe

from chat.errors import BadRequest, ChatError
from chat.models import Message, Room
from chat.protocol import is_text

logger = logging.getLogger(__name__)

PAGE_SIZE = 20
MAX_PAGE = 50
QUERY_CANCELED = "57014"  # SQLSTATE of a statement cut short by statement_timeout
INDEX_NAME = "chat_message_body_search"
# ts_headline marks matches with these; stripped from bodies first, so they mark only matches.
START, STOP = "\x02", "\x03"

EMPTY = "Type a word or two to search for."
TOO_LONG = "The search is too long: at most {max} characters."
NOT_TEXT = "The search must be plain text."
PAST_LAST_PAGE = (f"Only the first {MAX_PAGE} pages of results are shown: "
                  "add words to narrow the search.")
ONLY_STOP_WORDS = ("Those words are too common to be searched for (like \u201cthe\u201d or "
                   "\u201cand\u201d): add a more specific word.")
ONLY_EXCLUSIONS = ("Say what to find, not only what to leave out: a search needs a word "
                   "that must be there (\u201c-word\u201d and \u201cor -word\u201d alone "
                   "would match nearly every message).")
TIMED_OUT = ("The search took too long and was stopped. Try more specific words, "
             "or a phrase in quotes.")


class SearchTimedOut(ChatError):
    """The query ran past ``CHAT_SEARCH_TIMEOUT``."""

    code = "server_error"


@dataclass
class Hit:
    """A message found: where it is, who wrote it, and its snippet as safe HTML."""

    room_slug: str
    room_name: str
    seq: int
    username: str
    created: object
    snippet: str


@dataclass
class Results:
    hits: list
    page: int
    has_next: bool
    only_stop_words: bool = False

    @property
    def first(self):
        """The number of the page's first hit, counted from 1 across pages."""
        return (self.page - 1) * PAGE_SIZE + 1


def checked(text):
    """Return the query stripped, or raise ``BadRequest`` saying what is wrong with it."""
    text = (text or "").strip()
    if not text:
        raise BadRequest(EMPTY)
    if len(text) > settings.CHAT_SEARCH_MAX_CHARS:
        raise BadRequest(TOO_LONG.format(max=settings.CHAT_SEARCH_MAX_CHARS))
    if not is_text(text):
        raise BadRequest(NOT_TEXT)
    return text


def page_number(value):
    """Read ``?page=``: 1 for anything that is not a positive number; ``BadRequest`` past the cap."""
    try:
        page = int(value)
    except (TypeError, ValueError):
        return 1
    if page > MAX_PAGE:
        raise BadRequest(PAST_LAST_PAGE)
    return max(page, 1)


def search(user, text, page=1):
    """Find the messages matching ``text`` that ``user`` may read: one page of :class:`Results`.

    Raises ``BadRequest`` for a query of exclusions only, and ``SearchTimedOut`` when the
    query runs past ``CHAT_SEARCH_TIMEOUT``.
    """
    sql, params = _query(user, text, page)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            _set_timeout(cursor)
            _check_index_once(cursor)
            kind = _kind(cursor, text)
            if kind == "empty":
                return Results([], page, False, only_stop_words=True)
            if kind == "unindexable":
                raise BadRequest(ONLY_EXCLUSIONS)
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    except OperationalError as error:
        if getattr(error.__cause__, "pgcode", None) != QUERY_CANCELED:
            raise
        # The length, not the words: what people search for stays out of the logs.
        logger.warning("search by %s stopped after %ss (%s characters, page %s)",
                       user.get_username(), settings.CHAT_SEARCH_TIMEOUT, len(text), page)
        raise SearchTimedOut(TIMED_OUT) from None
    hits = [Hit(*row[:5], snippet=snippet(row[5])) for row in rows[:PAGE_SIZE]]
    return Results(hits, page, len(rows) > PAGE_SIZE)


def explain(user, text, page=1, analyze=False):
    """Return the plan of ``search``'s query as text lines (EXPLAIN, ANALYZE if asked)."""
    sql, params = _query(user, text, page)
    options = "ANALYZE, BUFFERS" if analyze else "COSTS"
    with transaction.atomic(), connection.cursor() as cursor:
        _set_timeout(cursor)
        cursor.execute(f"EXPLAIN ({options}) {sql}", params)
        return [line for (line,) in cursor.fetchall()]


def snippet(headline):
    """Turn ``ts_headline``'s output (of the HTML-escaped body) into safe HTML with <mark>s.

    The body was escaped before ``ts_headline`` saw it, so its output holds no markup; the
    check below only guards that promise, and falls back to showing nothing marked.
    """
    if any(char in headline for char in "<>\"'"):
        logger.error("a search snippet held markup; shown without highlights")
        headline = headline.replace(START, "").replace(STOP, "")
        return mark_safe(headline.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                         .replace('"', "&quot;").replace("'", "&#x27;"))
    return mark_safe(headline.replace(START, "<mark>").replace(STOP, "</mark>"))


def vector_sql(column):
    """The indexed expression over ``column``, with the config as the ``%(config)s`` parameter.

    psycopg2 binds parameters on the client, so the server sees ``'english'::regconfig``, a
    constant: the planner matches it to the index's expression.
    """
    return f"to_tsvector(%(config)s::regconfig, {column})"


# The body as HTML text, without the marker characters (so that they mark only matches).
_ESCAPED_BODY = ("replace(replace(replace(replace(replace(translate(m.body, E'\\x02\\x03', ''), "
                 "'&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '\"', '&quot;'), '''', '&#x27;')")
# A short message is shown whole (ts_headline would start it at the first match); a long one as
# its best two fragments.
WHOLE_BELOW = 300  # characters
_MARKS = f'StartSel="{START}", StopSel="{STOP}"'
_HEADLINE_OPTIONS = (f"CASE WHEN length(m.body) < {WHOLE_BELOW} THEN '{_MARKS}, HighlightAll=true' "
                     f"ELSE '{_MARKS}, MaxFragments=2, MinWords=10, MaxWords=25, "
                     f"FragmentDelimiter=\" \u2026 \"' END")


def _query(user, text, page):
    """The search's SQL and parameters: the page's ids first, then their rows and snippets."""
    User = get_user_model()
    members = Room.members.through._meta.db_table
    sql = f"""
        WITH hits AS (
            SELECT m.id FROM {Message._meta.db_table} m
            WHERE {vector_sql("m.body")} @@ websearch_to_tsquery(%(config)s::regconfig, %(text)s)
              AND NOT m.deleted
              AND m.room_id IN (SELECT id FROM {Room._meta.db_table} WHERE NOT private
                                UNION ALL
                                SELECT room_id FROM {members} WHERE user_id = %(user)s)
            ORDER BY m.id DESC
            LIMIT %(limit)s OFFSET %(offset)s
        )
        SELECT r.slug, r.name, m.seq, u.{User.USERNAME_FIELD}, m.created,
               ts_headline(%(config)s::regconfig, {_ESCAPED_BODY},
                           websearch_to_tsquery(%(config)s::regconfig, %(text)s),
                           {_HEADLINE_OPTIONS})
        FROM hits
        JOIN {Message._meta.db_table} m ON m.id = hits.id
        JOIN {Room._meta.db_table} r ON r.id = m.room_id
        JOIN {User._meta.db_table} u ON u.id = m.user_id
        ORDER BY m.id DESC"""
    params = {"config": settings.CHAT_SEARCH_CONFIG, "text": text, "user": user.pk,
              "limit": PAGE_SIZE + 1, "offset": (page - 1) * PAGE_SIZE}
    return sql, params


def _set_timeout(cursor):
    # SET LOCAL: the limit ends with this transaction, and the connection goes back unchanged.
    milliseconds = max(1, int(settings.CHAT_SEARCH_TIMEOUT * 1000))
    cursor.execute(f"SET LOCAL statement_timeout = {milliseconds}")


def _kind(cursor, text):
    """Say what ``text`` asks: "empty" (no lexeme: only stop words or punctuation),
    "unindexable" (only exclusions, which the index can't serve: every message would be read),
    or "words".
    """
    cursor.execute("SELECT numnode(q) = 0, querytree(q) = 'T' "
                   "FROM websearch_to_tsquery(%s::regconfig, %s) q",
                   [settings.CHAT_SEARCH_CONFIG, text])
    empty, unindexable = cursor.fetchone()
    return "empty" if empty else "unindexable" if unindexable else "words"


_index_checked = False


def _check_index_once(cursor):
    """Warn once per process when the index was built with another config than the setting's."""
    global _index_checked
    if _index_checked:
        return
    cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [INDEX_NAME])
    row = cursor.fetchone()
    _index_checked = True
    expected = f"to_tsvector('{settings.CHAT_SEARCH_CONFIG}'::regconfig"
    if row is None or expected not in row[0]:
        logger.warning("CHAT_SEARCH_CONFIG=%s but index %s is %s: searches can't use it and "
                       "read every message; rebuild the index with that config",
                       settings.CHAT_SEARCH_CONFIG, INDEX_NAME, row[0] if row else "missing")
