"""Cost of one metric update (chat/metrics.py) on the hub, and of one scrape.

    python bench/metrics_bench.py            # both modes, each in a fresh process

Prints microseconds per Counter.inc, Gauge.inc/dec and Histogram.observe, in a single
process and in prometheus_client's multiprocess mode (mmap files, as under gunicorn), with
gevent's patches applied as in a worker.
"""
import os
import subprocess
import sys
import tempfile
import timeit

N = 200_000


def measure():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import patches  # noqa: F401  (as in a worker: threading.Lock is gevent's)
    from chat import metrics

    mode = "multiprocess" if metrics.multiprocess_dir() else "single process"
    cases = {
        "Counter.inc()": metrics.JOINS.inc,
        "Counter.inc(n)": lambda: metrics.MESSAGES_DELIVERED.inc(7),
        "Gauge.inc()": metrics.OPEN_SOCKETS.inc,
        "Histogram.observe()": lambda: metrics.BROADCAST_LATENCY.observe(0.003),
    }
    for name, fn in cases.items():
        best = min(timeit.repeat(fn, number=N, repeat=5)) / N
        print(f"{mode:15} {name:20} {best * 1e6:6.2f} us")
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    source = MultiProcessCollector(None) if metrics.multiprocess_dir() else None
    scrape = (lambda: generate_latest(source)) if source else generate_latest
    best = min(timeit.repeat(scrape, number=50, repeat=3)) / 50
    print(f"{mode:15} {'one scrape':20} {best * 1e3:6.2f} ms")


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        measure()
    else:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        subprocess.run([sys.executable, __file__, "--measure"], env=env, check=True)
        with tempfile.TemporaryDirectory(prefix="chat-metrics-bench-") as path:
            subprocess.run([sys.executable, __file__, "--measure"],
                           env={**env, "PROMETHEUS_MULTIPROC_DIR": path}, check=True)
