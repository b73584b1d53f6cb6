"""Time gevent-websocket 0.10.1's unmasking and UTF-8 validation against ``chat.wsmends``.

Run from the repository root: ``.venv/bin/python bench/wsmends_bench.py``. Prints the best
time per call of several timeit runs, in microseconds.
"""
import importlib.util
import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geventwebsocket.utf8validator import Utf8Validator  # noqa: E402

from chat import wsmends  # noqa: E402


def load_original_websocket_module():
    """Load an unpatched copy of geventwebsocket/websocket.py."""
    origin = importlib.util.find_spec("geventwebsocket.websocket").origin
    spec = importlib.util.spec_from_file_location("geventwebsocket._original_websocket", origin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chat_text(size):
    """Return ``size`` bytes of valid UTF-8 chat-like text, mostly ASCII."""
    text = ('{"type":"message","body":"héllo wörld, ça va? 👋 "}' * (size // 40 + 1)).encode()
    return text[:size].decode("utf-8", "ignore").encode().ljust(size, b" ")


def best_microseconds(statement):
    timer = timeit.Timer(statement)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main():
    original = load_original_websocket_module()
    key = os.urandom(4)
    columns = ("operation", "payload", "0.10.1 (us)", "mended (us)", "speedup")
    print("%-18s %8s %14s %12s %9s" % columns)
    for size in (65536, 4096):
        payload = chat_text(size)
        header = original.Header(length=size)
        header.mask = key
        masked = wsmends.mask(payload, key)
        assert bytes(original.Header.mask_payload(header, masked)) == payload
        rows = [
            ("unmask",
             lambda: original.Header.mask_payload(header, masked),
             lambda: wsmends.header_mask_payload(header, masked)),
            ("validate UTF-8",
             lambda: Utf8Validator().validate(payload),
             lambda: payload.decode("utf-8")),
        ]
        for name, before, after in rows:
            t_before, t_after = best_microseconds(before), best_microseconds(after)
            print("%-18s %7dK %14.1f %12.1f %8.0fx"
                  % (name, size // 1024, t_before, t_after, t_before / t_after))


if __name__ == "__main__":
    main()
