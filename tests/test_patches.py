"""Patch order is a process-wide fact: checked in fresh interpreters."""
import subprocess
import sys

import patches
from tests.live import BASE_DIR


def run_python(code):
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_patches_run_before_django_db_and_patch_threading():
    out = run_python(
        "import sys, patches, gevent.monkey as m\n"
        "print(patches.django_db_was_imported, 'django.db' in sys.modules,"
        " m.is_module_patched('threading'), m.is_module_patched('socket'), patches.is_applied())")
    assert out == ["False", "False", "True", "True", "True"]


def test_wsgi_imports_patches_before_django():
    out = run_python(
        "import builtins, sys\n"
        "order = []\n"
        "real = builtins.__import__\n"
        "def spy(name, *a, **k):\n"
        "    if name in ('patches', 'django.db') and name not in order: order.append(name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = spy\n"
        "import os; os.environ['DATABASE_URL'] = 'postgres://u@127.0.0.1:1/x'\n"
        "import wsgi\n"
        "print(*order)")
    assert out[:2] == ["patches", "django.db"]


def test_applying_the_patches_twice_is_harmless():
    patches.apply()
    patches.apply()
    assert patches.is_applied()


def test_the_test_run_itself_was_patched_before_django_db():
    assert patches.django_db_was_imported is False
    assert patches.is_applied()


def test_psycopg2_waits_cooperatively():
    from psycopg2 import extensions
    from psycogreen.gevent import gevent_wait_callback

    assert extensions.get_wait_callback() is gevent_wait_callback


def test_gevent_websocket_builds_the_mended_socket():
    from geventwebsocket import handler, websocket

    from chat import wsmends

    assert handler.WebSocket is wsmends.MendedWebSocket
    assert websocket.Header.unmask_payload is wsmends.header_mask_payload


def test_manage_py_check_passes_with_the_project_settings():
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_a_hub_stall_report_leaves_out_the_tree_of_ten_thousand_greenlets():
    out = run_python(
        "import patches, time, gevent, gevent.event\n"
        "from gevent import events\n"
        "sizes = []\n"
        "events.subscribers.append(lambda e: isinstance(e, events.EventLoopBlocked)"
        " and sizes.append(len(''.join(e.info))))\n"
        "gevent.config.monitor_thread = True; gevent.config.max_blocking_time = 0.05\n"
        "gevent.config.print_blocking_reports = False\n"
        "done = gevent.event.Event()\n"
        "parked = [gevent.spawn(done.wait) for _ in range(10000)]\n"
        "gevent.sleep(0.1)\n"
        "gevent.get_hub().start_periodic_monitoring_thread()\n"
        "gevent.sleep(0.3)\n"
        "began = time.time()\n"
        "while time.time() - began < 0.3: pass\n"
        "gevent.sleep(0.5)\n"
        "print(len(sizes), max(sizes))")
    reports, largest = int(out[0]), int(out[1])
    assert reports >= 1
    assert largest < 20_000  # the greenlet tree alone was about 5 MB for 10,000 greenlets
