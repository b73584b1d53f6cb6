"""Watch the gevent hub: log every stall longer than the threshold, with its stack.

This is the gevent counterpart of Tornado's ``set_blocking_log_threshold``: gevent's monitor
thread notices when no greenlet switch happened for ``max_blocking_time`` seconds and emits
``EventLoopBlocked``; we log it (the stall was at least that long, not exactly).
"""
import logging

import gevent
from gevent import events

from chat import metrics

logger = logging.getLogger(__name__)

#: Prefix of every blocking report in the log; tests and operators grep for it.
REPORT_PREFIX = "gevent hub blocked"


def start(max_blocking_time):
    """Start the monitor thread of this process's hub and log its blocking reports."""
    gevent.config.monitor_thread = True
    gevent.config.max_blocking_time = max_blocking_time
    gevent.config.print_blocking_reports = False  # logged below, once, through logging
    if _log_blocking_report not in events.subscribers:
        events.subscribers.append(_log_blocking_report)
    gevent.get_hub().start_periodic_monitoring_thread()
    logger.info("blocking monitor on: reporting hub stalls over %s s", max_blocking_time)


def _log_blocking_report(event):
    # Runs in the monitor's native thread, where the counter's lock (gevent's) must not be
    # taken: count on the blocked hub itself, once it runs again.
    if isinstance(event, events.EventLoopBlocked):
        if event.hub is not None:
            event.hub.loop.run_callback_threadsafe(metrics.HUB_BLOCKS.inc)
        logger.warning("%s for more than %s s:\n%s", REPORT_PREFIX, event.blocking_time,
                       "\n".join(event.info))


def warm_up():
    """Do the slow first-request work now, before the monitor and the first client.

    Importing the URLconf (with the admin), compiling the common templates and importing the
    broker's client take hundreds of milliseconds of CPU that would otherwise stall the first
    sockets.
    """
    from django.template.loader import get_template
    from django.urls import get_resolver

    from chat import runtime

    get_resolver().url_patterns
    for name in ("registration/login.html", "chat/home.html"):
        get_template(name)
    runtime.hub()  # imports and connects the broker now: a bad CHAT_BROKER fails at start
