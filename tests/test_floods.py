"""Frame floods from one socket never stall the others on its worker (issue 11, item 3).

A flooder on a raw socket sends masked frames as fast as loopback takes them for a bounded
time, ignoring the server's close frame as an attacker would; meanwhile another user pings
over JSON. The pings stay fast, the flooder gets the documented close code and is cut off
within a second, and the blocking monitor reports nothing. Once with the default limits, and once with the limits raised out of
reach, so that the reader's regular yield alone has to keep the worker responsive.
"""
import base64
import os
import socket
import struct
import time
from dataclasses import dataclass

import gevent
import pytest
from django.conf import settings

from chat.monitor import REPORT_PREFIX
from tests.live import connect, receive, send

FLOOD_SECONDS = 3.0
PING_BUDGET = 0.1  # seconds: issue 11 asks for another user's ping under 100 ms
PING_EVERY = 0.05
READ_TIMEOUT = 10.0
SEND_TIMEOUT = 2.0
CONTINUATION, TEXT, CLOSE, PONG = 0x0, 0x1, 0x8, 0xA
LIMITS = ("CHAT_CONTROL_FRAMES_PER_SECOND", "CHAT_MAX_FRAGMENTS")
OUT_OF_REACH = {"CHAT_CONTROL_FRAMES_PER_SECOND": 10**9, "CHAT_MAX_FRAGMENTS": 10**9}


def masked(opcode, payload=b"", fin=True):
    """One masked client frame of up to 125 bytes (RFC 6455 section 5.2), key 0: data as is."""
    return struct.pack("!BB", fin << 7 | opcode, 0x80 | len(payload)) + b"\0\0\0\0" + payload


FLOODS = {
    # name: (sent once, sent over and over, the close frame it must get)
    "pongs": (b"", masked(PONG) * 10_000, (1008, b"too many control frames")),
    "empty continuations": (masked(TEXT, b"[", fin=False), masked(CONTINUATION, fin=False) * 10_000,
                            (1009, b"message in too many fragments")),
}


class Flooder:
    """A raw authenticated socket that sends one chunk of frames over and over."""

    def __init__(self, server, session_key):
        # Sends time out sooner than reads: the flood must end near its time even if stalled.
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=SEND_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Cookie: sessionid={session_key}\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.sent = 0
        self.close_frame = None
        self.closed_after = None  # seconds from the first byte of the flood to the close frame
        self.lasted = None  # seconds from the first byte to the end of TCP

    def flood(self, prologue, chunk, seconds):
        """Send ``prologue``, then ``chunk`` until ``seconds`` passed or the server hung up."""
        started = time.perf_counter()
        reader = gevent.spawn(self._read_close, started)
        try:
            self.sock.sendall(prologue)
            while time.perf_counter() - started < seconds:
                self.sock.sendall(chunk)
                self.sent += len(chunk)
                gevent.sleep(0)  # a send that never waits would starve this process's pinger
        except OSError:
            pass  # reset or timed out after the server's close: its close frame says why
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        reader.join(timeout=READ_TIMEOUT)  # until the server ends TCP, or in vain
        reader.kill()
        self.sock.close()

    def _read_close(self, started):
        """Read the server's frames until its close frame; keep it and when it came."""
        while self.close_frame is None:
            if len(self.buffer) >= 2 and len(self.buffer) >= 2 + (self.buffer[1] & 0x7F):
                first, length = self.buffer[0], self.buffer[1] & 0x7F
                assert length < 126, "the server sent the flooder a long frame"
                payload, self.buffer = self.buffer[2:2 + length], self.buffer[2 + length:]
                if first & 0x0F == CLOSE:
                    self.closed_after = time.perf_counter() - started
                    self.close_frame = struct.unpack("!H", payload[:2])[0], payload[2:]
                continue
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue  # the server may say nothing for a while; flood() ends the wait
            except OSError:
                return
            if not data:
                return
            self.buffer += data


class Pinger:
    """Ping over JSON in a loop; keep every round trip (a reply that never came counts as inf)."""

    def __init__(self, ws):
        self.ws = ws
        self.rtts = []
        self.running = True
        self._greenlet = gevent.spawn(self._run)

    def _run(self):
        count = 0
        while self.running:
            count += 1
            started = time.perf_counter()
            send(self.ws, type="ping", ref=f"p{count}")
            try:
                reply = receive(self.ws, timeout=READ_TIMEOUT)
            except Exception:
                self.rtts.append(float("inf"))
                return
            assert reply == {"type": "pong", "ref": f"p{count}"}
            self.rtts.append(time.perf_counter() - started)
            gevent.sleep(PING_EVERY)

    def stop(self):
        """End after the ping in flight; return the round trips, sorted."""
        self.running = False
        self._greenlet.join(timeout=READ_TIMEOUT + 1)
        self._greenlet.kill()
        return sorted(self.rtts)


@dataclass
class FloodRun:
    flooder: Flooder
    rtts: list  # the other user's ping round trips, sorted
    log: str  # what the server logged meanwhile
    attempts: int = 1


def flood_while_pinging(server, make_users, flood):
    """Flood from one user while another pings; again once if a ping or the monitor said stall.

    A loaded machine (2 cores shared by several test runs) now and then stalls a process for
    0.1 s by itself, flood or not; a flood that stalls the hub does it every time, for seconds.
    """
    run = _flood_once(server, make_users, flood)
    if run.rtts[-1] >= PING_BUDGET or REPORT_PREFIX in run.log:
        run = _flood_once(server, make_users, flood)
        run.attempts = 2
    return run


def _flood_once(server, make_users, flood):
    (_, flooder_key), (_, watcher_key) = make_users(2, prefix="flood")
    watcher = connect(server, watcher_key)
    send(watcher, type="ping", ref="warm")
    assert receive(watcher) == {"type": "pong", "ref": "warm"}
    log_from = len(server.log())
    flooder = Flooder(server, flooder_key)
    pinger = Pinger(watcher)
    prologue, chunk, _ = FLOODS[flood]
    started = time.perf_counter()
    flooder.flood(prologue, chunk, FLOOD_SECONDS)
    flooder.lasted = time.perf_counter() - started
    # Ping for the whole flood time though the server may have cut the flooder off sooner,
    # and one monitor period more: a stall at the end would be reported by then.
    gevent.sleep(max(0.3, FLOOD_SECONDS + 0.3 - flooder.lasted))
    rtts = pinger.stop()
    send(watcher, type="ping", ref="after")
    assert receive(watcher) == {"type": "pong", "ref": "after"}
    watcher.close()
    return FloodRun(flooder, rtts, server.log()[log_from:])


def check_pings(run):
    """Every ping of the other user was fast, enough of them, and the hub never blocked."""
    rtts = run.rtts
    assert rtts[-1] < PING_BUDGET, f"a ping took {rtts[-1] * 1000:.0f} ms during the flood"
    assert len(rtts) >= 20, f"only {len(rtts)} pings answered in {FLOOD_SECONDS} s"
    assert REPORT_PREFIX not in run.log, "the hub blocked during the flood:\n" + run.log


def summary(run):
    rtts, retried = run.rtts, " (measured twice)" if run.attempts > 1 else ""
    return f"{rtts[len(rtts) // 2] * 1000:.1f} / {rtts[-1] * 1000:.1f}{retried}"


@pytest.fixture(scope="module")
def flood_server(start_server):
    """One worker, so the flooder and the pinging user share its hub; stalls over 0.1 s reported."""
    return start_server(CHAT_MAX_BLOCKING_TIME=0.1)


@pytest.fixture(scope="module")
def unlimited_server(start_server):
    """One worker whose control-frame rate and fragment count are out of any flood's reach."""
    missing = [name for name in LIMITS if not hasattr(settings, name)]
    if missing:
        pytest.skip(f"project/settings.py does not read {', '.join(missing)} from the environment")
    return start_server(CHAT_MAX_BLOCKING_TIME=0.1, **OUT_OF_REACH)


@pytest.mark.parametrize("flood", FLOODS)
def test_flooder_is_closed_with_the_documented_code_and_other_pings_stay_fast(
        flood_server, make_users, measurements, flood):
    run = flood_while_pinging(flood_server, make_users, flood)

    flooder = run.flooder
    assert flooder.close_frame == FLOODS[flood][2]
    assert flooder.closed_after < 1.0, f"closed after {flooder.closed_after:.2f} s of flooding"
    # Nor does the server go on reading what a flooder it closed still sends (gigabytes).
    assert flooder.lasted < 1.0, f"TCP ended {flooder.lasted:.2f} s after the flood began"
    check_pings(run)
    measurements[f"{flood} flood: ping ms median / worst"] = summary(run)
    measurements[f"{flood} flood: flooder closed after ms"] = round(flooder.closed_after * 1000, 1)
    measurements[f"{flood} flood: MB sent, seconds until TCP ended"] = (
        f"{flooder.sent / 1e6:.1f}, {flooder.lasted:.2f}")


@pytest.mark.parametrize("flood", FLOODS)
def test_reader_yields_keep_other_pings_fast_when_no_limit_stops_the_flood(
        unlimited_server, make_users, measurements, flood):
    run = flood_while_pinging(unlimited_server, make_users, flood)

    assert run.flooder.close_frame is None, "a limit closed the flooder: the yields went untested"
    assert run.flooder.sent > 1_000_000, f"only {run.flooder.sent} bytes sent: not a flood"
    check_pings(run)
    measurements[f"{flood} flood, no limit: ping ms median / worst"] = summary(run)
    measurements[f"{flood} flood, no limit: MB sent in {FLOOD_SECONDS:.0f} s"] = round(
        run.flooder.sent / 1e6, 1)
