// The WebSocket to /ws/ and nothing else: opens it, reconnects with exponential backoff and
// jitter, notices a dead link with application pings, and stops after the close codes that
// say "don't retry as is" (docs/protocol.md, section 1): 4401 and the ones in REFUSED. A server
// that restarts says when to come back (a `reconnect` event before its 1001): that delay wins.
// A socket that carries no frame at all (it fails to open, is closed at once, or opens and stays
// silent) is reported to `failed`: the page may be behind a proxy that lets no WebSocket through
// (transport.js decides whether to fall back to HTTP).

const FIRST_DELAY = 500; // ms: the first retry waits 250-500 ms
const MAX_DELAY = 10000; // ms: the backoff stops growing here
const PING_EVERY = 20000; // ms: a ping without any frame back by the next tick means a dead link
export const SILENT_MS = 4000; // ms an open socket may take to answer the join before it counts as dead

export const UNAUTHORIZED = 4401;
export const GOING_AWAY = 1001;
// What the page says after each: retrying would meet the same answer, so it waits for the user.
// Any other code (1001, 1006, 1011, 1012, 1013, ...) and network errors are retried.
// A socket closed with one of these before any frame was refused by our server, not by the path
// to it: 4401, the REFUSED codes, and the server's own trouble (an HTTP request would meet it too).
const SERVER_TROUBLE = new Set([1011, 1013]);
export const REFUSED = {
  1002: "The connection was closed for a protocol error (1002).",
  1003: "The connection was closed for a protocol error (1003).",
  1007: "The connection was closed for a protocol error (1007).",
  1008: "The server refused this connection (policy).",
  4429: "Too many open connections for this account: close some tabs.",
};

export class Connection {
  // handlers: open(), frame(object), state(name, delayMs), unauthorized(), gaveUp(text), and
  // optional heard() (a socket's first frame), failed(code) (a socket closed without a frame)
  // and draining() (the server said it is restarting: a `reconnect` event, then 1001)
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.attempt = 0; // failed tries since the last healthy connection
    this.timer = null; // the pending retry
    this.stopped = false;
    this.opened = false; // ever: "connecting" before, "reconnecting" after
    this.awaitingPong = false;
    this.hint = null; // ms the server asked us to wait before coming back (its `reconnect`)
    this.heard = false; // the current socket has carried a frame
    this.silence = null; // the timer that gives up on an open socket that never answers
    window.addEventListener("online", () => this.retryNow());
    window.addEventListener("offline", () => this.drop());
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.retryNow();
    });
    setInterval(() => this.keepAlive(), PING_EVERY);
  }

  start() {
    this.open();
  }

  // Send one frame; false when there is no open socket (the caller keeps what must arrive).
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // The room is joined: the next failure starts the backoff from the beginning again.
  healthy() {
    this.attempt = 0;
  }

  // Connect again after giving up (the user pressed "Reconnect").
  resume() {
    this.stopped = false;
    this.attempt = 0;
    this.open();
  }

  // Stop (the room refused us): no more retries.
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.silence);
    this.timer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  }

  open() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped) return;
    this.handlers.state(this.opened ? "reconnecting" : "connecting", 0);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.awaitingPong = false;
    this.hint = null;
    this.heard = false;
    ws.onopen = () => {
      this.opened = true;
      // Some proxies let the upgrade through and then pass nothing: the join's answer is late.
      this.silence = setTimeout(() => this.ws === ws && this.drop(), SILENT_MS);
      this.handlers.open();
    };
    ws.onmessage = (event) => {
      this.awaitingPong = false; // any frame proves the link is alive
      if (!this.heard) {
        this.heard = true;
        clearTimeout(this.silence);
        this.handlers.heard?.();
      }
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && frame.type === "reconnect") {
        // The server drains its sockets in batches: coming back at its time spreads the storm.
        const after = Number(frame.after);
        if (Number.isFinite(after) && after >= 0) this.hint = Math.min(after, 300) * 1000;
        return;
      }
      this.handlers.frame(frame);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.closed(event.code);
    };
  }

  closed(code) {
    this.ws = null;
    clearTimeout(this.silence);
    if (code === UNAUTHORIZED) {
      this.stopped = true;
      this.handlers.unauthorized();
      return;
    }
    if (code in REFUSED) {
      this.stopped = true;
      this.handlers.gaveUp(REFUSED[code]);
      return;
    }
    // Told first: the handler may stop us (and switch to HTTP) before the retry is scheduled.
    if (!this.heard && !SERVER_TROUBLE.has(code)) this.handlers.failed?.(code);
    if (this.stopped) return;
    if (code === GOING_AWAY && this.hint !== null) {
      this.handlers.draining?.();
      this.scheduleRetry(this.hint + Math.random() * FIRST_DELAY); // our own jitter on top
    } else {
      this.scheduleRetry();
    }
    this.hint = null;
  }

  // Exponential backoff with "equal jitter": half the ceiling fixed, half random, so that a
  // server restart does not bring every client back in the same instant.
  // A 503 from the server's admission is not visible to a page (the browser reports 1006): the
  // backoff handles it.
  scheduleRetry(hinted) {
    const ceiling = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** this.attempt);
    const delay = hinted ?? ceiling / 2 + (Math.random() * ceiling) / 2;
    this.attempt += 1;
    this.handlers.state("reconnecting", delay);
    this.timer = setTimeout(() => this.open(), delay);
  }

  // The network came back or the tab became visible: don't sit out the rest of the backoff.
  retryNow() {
    if (this.timer !== null && !this.stopped) this.open();
  }

  // Give up on the current socket (offline, or silent) and go through the backoff.
  drop() {
    if (!this.ws || this.stopped) return;
    const ws = this.ws;
    this.ws = null;
    ws.onclose = null;
    ws.close();
    this.closed(1006);
  }

  keepAlive() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (this.awaitingPong) {
      this.drop(); // nothing came back for a whole interval
      return;
    }
    this.awaitingPong = true;
    this.send({ type: "ping" });
  }
}
