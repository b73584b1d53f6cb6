"""Load-test a chat server: sign users in, open sockets, send at a fixed rate, check every seq.

    python manage.py create_load_users --count 200 --rooms 4     # on the server, once
    python loadtest.py --url http://127.0.0.1:8000 --users 1000 --rooms 4 --senders 20 \
        --rate 100 --duration 30 --ramp 10 --json out.json --plot out.png

``--rate`` may list steps (``--rate 20,50,100``): each lasts ``--duration`` seconds, with
``--pause`` seconds between them for the last deliveries to arrive. See README.md, "Load testing".
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from chatload import login, report, server  # noqa: E402
from chatload.run import LoadProcess, Share, Target, plan  # noqa: E402

logger = logging.getLogger("loadtest")


def arguments(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default %(default)s)")
    p.add_argument("--users", type=int, default=100, help="sockets, one virtual user each")
    p.add_argument("--rooms", type=int, default=1, help="rooms <prefix>-1..<prefix>-R, users spread evenly")
    p.add_argument("--senders", type=int, default=10, help="users who send (each with its own account)")
    p.add_argument("--rate", default="10", help="messages/s of all senders together; a comma list runs steps")
    p.add_argument("--duration", type=float, default=10, help="seconds of sending per step")
    p.add_argument("--pause", type=float, default=1, help="seconds between steps (default 1)")
    p.add_argument("--ramp", type=float, default=5, help="seconds over which the sockets open")
    p.add_argument("--size", type=int, default=64, help="message body size in bytes (default 64)")
    p.add_argument("--accounts", type=int, help="accounts to sign in (default: senders, at least 50)")
    p.add_argument("--prefix", default="load", help="account and room prefix of create_load_users")
    p.add_argument("--password", default="chat-load-test", help="the accounts' password")
    p.add_argument("--sessions", default=os.path.join("var", "loadtest-sessions.json"),
                   help="file that keeps session cookies between runs ('' to keep none)")
    p.add_argument("--no-login", action="store_true", help="no accounts: the username goes in the URL")
    p.add_argument("--ws-path", default="/ws/", help="the WebSocket path (default %(default)s)")
    p.add_argument("--transport", choices=("ws", "http"), default="ws",
                   help="ws: a WebSocket per user; http: the HTTP long-poll (docs/protocol.md, section 7)")
    p.add_argument("--http-path", default="/http/", help="the HTTP transport's path (default %(default)s)")
    p.add_argument("--dialect", choices=("chat", "socketio"), default="chat", help=argparse.SUPPRESS)
    p.add_argument("--procs", type=int, default=1, help="load processes (one per core)")
    p.add_argument("--server-pid", type=int, help="gunicorn master's PID, for server memory and CPU")
    p.add_argument("--max-p99", type=float, help="a step fails over this p99 in ms (stops the steps)")
    p.add_argument("--min-delivery", type=float, help="a step fails under this delivered share (e.g. 0.95)")
    p.add_argument("--drain", type=float, default=10, help="seconds to wait for the last deliveries")
    p.add_argument("--connect-concurrency", type=int, default=100, help="handshakes in flight per process")
    p.add_argument("--open-timeout", type=float, default=60, help="seconds for a socket to join")
    p.add_argument("--json", help="write the result as JSON here")
    p.add_argument("--plot", help="write a PNG of throughput and latency over time here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--tally", help="save the raw figures here (JSON), to --merge with other machines'")
    p.add_argument("--merge", nargs="+", metavar="TALLY",
                   help="only report: merge tallies saved with --tally by runs on several machines")
    p.add_argument("--epoch-at", type=float, help="start sending at this Unix time (runs on several machines)")
    p.add_argument("--send-after-open", action="store_true",
                   help="start sending only once every socket has joined, however long that takes")
    p.add_argument("--reconnect", action="store_true",
                   help="after a close, come back (after the server's reconnect hint, or with backoff), "
                        "rejoin with since = the last seq seen, resend unacknowledged sends with their ref")
    p.add_argument("--ready-file", help="write this file once every socket has joined (or failed)")
    for hidden in ("--child", "--epoch", "--cookies-file", "--result"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.rates = [float(r) for r in args.rate.split(",")]
    args.accounts = args.accounts or max(args.senders, min(args.users, 50))
    if args.senders > min(args.users, args.accounts):
        p.error("--senders must not exceed --users or --accounts: each sender has its own account")
    if args.users < 1 or args.rooms < 1 or args.procs < 1:
        p.error("--users, --rooms and --procs must be at least 1")
    if args.transport == "http" and (args.no_login or args.dialect != "chat"):
        p.error("--transport http speaks this project's protocol with a login: not with --no-login or --dialect")
    if args.send_after_open and args.procs > 1:
        p.error("--send-after-open works with one process (--procs 1) only")
    return args


def share(args, index=0):
    accounts = [f"{args.prefix}{n}" for n in range(1, args.accounts + 1)]
    rooms = [f"{args.prefix}-{n}" for n in range(1, args.rooms + 1)]
    return Share(args.users, rooms, args.senders, accounts, index, args.procs)


def target(args):
    result = Target.from_url(args.url, args.ws_path, args.dialect, args.transport, args.http_path)
    result.user_in_query = args.no_login
    return result


class Start:
    """When the first send is due; ``fixed`` is set once that can no longer move."""

    def __init__(self, epoch):
        self.epoch, self.fixed = epoch, Event()


def run_process(args, cookies, start, index, limit, progress=None):
    """Run one process's share of the load and return its tally."""
    process = LoadProcess(target(args), share(args, index), cookies, start.epoch, args)
    if progress:
        progress.process = process
    process.open_all()
    if args.ready_file:
        with open(args.ready_file if args.procs == 1 else f"{args.ready_file}.{index}", "w") as f:
            json.dump({"opened": len(process.users), "at": time.time()}, f)
    if args.send_after_open:
        start.epoch = max(start.epoch, time.time() + 1)
        process.epoch = start.epoch
        for user in process.users:
            user.epoch = start.epoch
    elif time.time() > start.epoch:
        logger.warning("process %d: sockets opened after the first send was due: raise --ramp", index)
    start.fixed.set()
    steps = plan(start.epoch, args.rates, args.duration, args.pause, args.senders)
    process.send_all(steps, limit)
    process.drain(args.drain)
    tally = process.stop()
    times = os.times()
    tally.cpu = times.user + times.system
    return tally


def child(args):
    """One of --procs processes: report progress on stdout, the tally into a file."""
    with open(args.cookies_file) as f:
        cookies = json.load(f)
    progress = Progress(None, lambda line: print(json.dumps(line), flush=True))
    ticker = gevent.spawn(progress.loop)
    tally = run_process(args, cookies, Start(float(args.epoch)), int(args.child), [len(args.rates)], progress)
    ticker.kill()
    with open(args.result, "wb") as f:
        pickle.dump(tally, f)


class Progress:
    """Once a second: sockets open, sends and deliveries in the last second, and latency."""

    def __init__(self, process, emit):
        self.process, self.emit = process, emit
        self.seen = self.sent = 0

    def loop(self):
        while True:
            gevent.sleep(1)
            if self.process is not None:
                self.emit(self.line())

    def line(self):
        tally = self.process.tally
        recent = tally.latency[self.seen:]
        sample = recent[::max(1, len(recent) // 5000)]  # percentiles of a sample: cheap when busy
        sent = sum(tally.sent.values())
        line = {"open": len(tally.open_times), "failed": sum(tally.failed.values()),
                "sent": sent - self.sent, "delivered": len(recent), **report.percentiles(sample, (50, 99))}
        self.seen, self.sent = len(tally.latency), sent
        return line


def spawn_children(args, cookies, epoch, workdir):
    with open(os.path.join(workdir, "cookies.json"), "w") as f:
        json.dump(cookies, f)
    children = []
    for index in range(args.procs):
        command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--child", str(index),
                   "--epoch", repr(epoch), "--cookies-file", os.path.join(workdir, "cookies.json"),
                   "--result", os.path.join(workdir, f"{index}.pickle")]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    return children


def follow(children, quiet):
    """Print the children's progress summed once a second; wait for them to finish."""
    latest = {}

    def read(index, child):
        for line in child.stdout:
            latest[index] = json.loads(line)

    readers = [gevent.spawn(read, i, c) for i, c in enumerate(children)]
    while not all(r.ready() for r in readers):
        gevent.sleep(1)
        if latest and not quiet:
            lines = list(latest.values())
            total = {k: sum(line[k] for line in lines) for k in ("open", "failed", "sent", "delivered")}
            p99 = max((line["p99"] or 0) for line in lines)
            logger.info("open %(open)d failed %(failed)d | sent %(sent)d/s delivered %(delivered)d/s", total)
            logger.info("  worst p99 %.1f ms", p99)
    for child in children:
        if child.wait() != 0:
            raise SystemExit(f"a load process failed with exit code {child.returncode}")


def sample_server(args, start, stats):
    """Sample the server at the first send and at each step's end (after its pause)."""
    pid = args.server_pid
    period = args.duration + args.pause
    start.fixed.wait()
    epoch = start.epoch
    gevent.sleep(max(0, epoch - 0.2 - time.time()))
    rss_open, cpu = server.sample(pid)
    stats.update(rss_open_kib=rss_open, cpu_start=cpu)
    stats["step_cpu"] = []
    for k in range(len(args.rates)):
        gevent.sleep(max(0, epoch + (k + 1) * period - time.time()))
        _, now = server.sample(pid)
        stats["step_cpu"].append(now - cpu)
        cpu = now


def raise_file_limit():
    """Allow one file descriptor per socket: the usual soft limit of 1024 is too few."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None):
    args = arguments(argv)
    raise_file_limit()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.child is not None:
        return child(args)
    if args.merge:
        tally = report.merge([report.load_tally(path) for path in args.merge])
        return finish(args, tally, {}, None)
    names = [f"{args.prefix}{n}" for n in range(1, args.accounts + 1)]
    cookies = {} if args.no_login else login.login_all(args.url, names, args.password, args.sessions)
    stats = {}
    if args.server_pid:
        stats["rss_before_kib"], stats["cpu_before"] = server.sample(args.server_pid)
    start = Start(args.epoch_at or time.time() + args.ramp + (3 if args.procs > 1 else 1))
    if args.procs > 1:
        start.fixed.set()
    sampler = gevent.spawn(sample_server, args, start, stats) if args.server_pid else None
    if args.procs == 1:
        progress = Progress(None, lambda line: args.quiet or logger.info(
            "open %(open)d failed %(failed)d | sent %(sent)d/s delivered %(delivered)d/s "
            "p50 %(p50)s p99 %(p99)s ms", line))
        ticker = gevent.spawn(progress.loop)
        limit = [len(args.rates)]
        judge = gevent.spawn(stop_at_failure, args, start, progress, limit)
        tally = run_process(args, cookies, start, 0, limit, progress)
        ticker.kill()
        judge.kill()
    else:
        with tempfile.TemporaryDirectory() as workdir:
            follow(spawn_children(args, cookies, start.epoch, workdir), args.quiet)
            tallies = []
            for index in range(args.procs):
                with open(os.path.join(workdir, f"{index}.pickle"), "rb") as f:
                    tallies.append(pickle.load(f))
        tally = report.merge(tallies)
    finish(args, tally, stats, sampler)


def stop_at_failure(args, start, progress, limit):
    """Stop the steps after the first that fails (one process only: it sees every delivery)."""
    period = args.duration + args.pause
    start.fixed.wait()
    epoch = start.epoch
    for k in range(len(args.rates)):
        # Judge near the end of the pause, before the next step's first send.
        gevent.sleep(max(0, epoch + k * period + args.duration + 0.9 * args.pause - time.time()))
        process = progress.process
        step = report.steps_of(process.tally, args.rates, args.duration, args.pause,
                               max_p99=args.max_p99, min_delivery=args.min_delivery,
                               members=process.members())[k]
        if step["passed"] is False:
            logger.info("step %d (%g/s) failed: no further steps", k + 1, args.rates[k])
            limit[0] = k + 1
            return


def finish(args, tally, stats, sampler):
    server_stats = None
    if sampler is not None:
        sampler.join(timeout=args.duration + args.pause + 2)  # the last step's CPU sample
        sampler.kill()
        opened = len(tally.open_times)
        rss_open = stats.get("rss_open_kib", stats["rss_before_kib"])
        server_stats = {"rss_before_kib": stats["rss_before_kib"], "rss_open_kib": rss_open,
                        "kib_per_socket": round((rss_open - stats["rss_before_kib"]) / opened, 1) if opened else None,
                        "cpu_s": round(server.sample(args.server_pid)[1] - stats["cpu_before"], 2)}
    config = {k: getattr(args, k) for k in ("url", "users", "rooms", "senders", "rates", "duration",
                                            "pause", "ramp", "size", "accounts", "procs", "dialect",
                                            "transport")}
    steps = report.steps_of(tally, args.rates, args.duration, args.pause, stats.get("step_cpu", ()),
                            args.max_p99, args.min_delivery)
    result = report.summary(tally, config, steps, server_stats)
    if args.tally:
        report.dump_tally(tally, args.tally)
    print(report.table(result))
    if args.json:
        report.save_json(result, args.json)
    if args.plot:
        report.plot(tally, args.plot, f"{args.users} sockets, {args.rate} msg/s, {args.url}")
    failed = sum(tally.failed.values())
    return 1 if failed == args.users else 0


if __name__ == "__main__":
    sys.exit(main())
