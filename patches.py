"""Patch the process for cooperative I/O. Import this module before anything else.

Every entry point (``wsgi.py``, ``manage.py``, ``gunicorn.conf.py`` and pytest through
``-p patches``) imports it first, so that ``threading``, ``socket`` and ``psycopg2`` are
cooperative before Django creates its per-thread database connections. Patching after
``django.db`` is imported makes every greenlet share one native thread-local, and queries
then fail with "DatabaseWrapper objects created in a thread can only be used in that same
thread". This is the only module of the project that patches anything; applying it twice is
harmless.
"""
import sys

from gevent import monkey

_applied = False
#: Whether ``django.db`` had been imported when the patches were first applied (it must not).
django_db_was_imported = "django.db" in sys.modules


def apply():
    """Apply every patch once: gevent, psycogreen, then the gevent-websocket mends."""
    global _applied
    if _applied:
        return
    monkey.patch_all()
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    _mend_geventwebsocket()
    _lighten_blocking_reports()
    _applied = True


def is_applied():
    """Tell whether this process runs with cooperative sockets and threads."""
    return _applied and monkey.is_module_patched("socket") and monkey.is_module_patched("threading")


def _mend_geventwebsocket():
    """Swap gevent-websocket 0.10.1's broken and slow parts for those of ``chat.wsmends``.

    0.10.1 (2017, unmaintained) unmasks and validates UTF-8 with per-byte Python loops
    (about 36 ms of hub per 64 KiB text frame), sends close frames without the status code,
    buffers frames of any announced size, accepts unmasked client frames (RFC 6455 section
    5.1) and strips the handlers off its logger. See ``chat/wsmends.py`` for each mend.
    """
    from geventwebsocket import handler, logging as gws_logging, websocket

    from chat import wsmends

    websocket.Header.mask_payload = wsmends.header_mask_payload
    websocket.Header.unmask_payload = wsmends.header_mask_payload
    handler.WebSocket = wsmends.MendedWebSocket
    gws_logging.create_logger = wsmends.create_logger
    handler.create_logger = wsmends.create_logger


def _lighten_blocking_reports():
    """Leave the tree of every greenlet out of gevent's hub-stall reports (chat/monitor.py).

    The report walks all greenlets and their spawn trees (``gevent.util.GreenletTree``, over
    ``gc.get_objects()``) under the GIL: with 10,000 sockets one report was 10 MB of text and
    held the worker for more than half a second, so each stall became a longer one (issue 14,
    the reconnect storm). The blocked stack and the threads' stacks stay.
    """
    from gevent import util

    def greenlets_left_out(lines, greenlet_stacks, limit):
        lines.append("(the greenlet tree is left out: see patches.py)")

    util._format_greenlet_info = greenlets_left_out


apply()
