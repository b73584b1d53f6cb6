// The HTTP long-poll transport (docs/protocol.md, section 7): the WebSocket's frames and events
// carried by POST requests, for networks that let no WebSocket through. It has Connection's
// interface, so the page does not know which one it talks to.
//
// One request at a time: a poll waits for events; frames to send go in a new request, which
// supersedes a waiting poll, and only the newest request's response is applied. `ack` says
// which response arrived, so one lost to the network comes again; `rooms` lets whichever worker
// a request reaches resume the page when the stream it knew is gone (no sticky sessions).

import { GOING_AWAY, REFUSED, UNAUTHORIZED } from "./connection.js";

const FIRST_DELAY = 500; // ms: the first retry waits 250-500 ms, as the WebSocket's
const MAX_DELAY = 10000; // ms: the backoff stops growing here
// The server's limits until its first answer tells them (`limits`, docs/protocol.md section 7).
const DEFAULT_LIMITS = { poll_timeout: 25, frames: 20, request_rate: 10, request_burst: 20 };
const LATE = 10000; // ms past the poll timeout after which a response is not coming
// ms a superseded poll gets to return. On its own worker it returns at once; one still waiting
// went to another worker (the request that superseded it started a new stream there): it would
// hold one of the browser's few connections to this host for the rest of its 25 s.
const SUPERSEDED_GRACE = 2000;
// The share of the server's request rate and burst per stream (CHAT_HTTP_REQUEST_RATE and
// _BURST, told in `limits`) that requests keep to: a busy room's polls batch, never get a 429.
const PACE = 0.8;
const REFUSED_HTTP = {
  400: "The connection was closed for a protocol error (400).",
  403: "The server refused this connection (403).",
  413: "The connection was closed for a protocol error (413).",
};

// The client id of section 7: random per page, 32 characters of [0-9a-f].
function clientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function isEmpty(rooms) {
  return Object.keys(rooms).length === 0;
}

export class LongPoll {
  // path: the endpoint; csrf(): the CSRF token; rooms(): {room: newest seq held} for the rooms
  // the page has joined here. handlers: Connection's, and restream(rooms): a new stream
  // joined `rooms` for the page (its `joined` events follow, ref null).
  constructor(path, { csrf, rooms }, handlers) {
    this.path = path;
    this.csrf = csrf;
    this.rooms = rooms;
    this.handlers = handlers;
    this.client = clientId();
    this.stream = null;
    this.ack = 0;
    this.queue = []; // frames not sent yet
    this.current = null; // the newest request: {body, controller, timer}
    this.timer = null; // the pending retry or new stream
    this.retry = null; // what that timer will do
    this.pacing = null; // a flush held back by the request budget
    this.keepTo(DEFAULT_LIMITS);
    this.tokens = this.burst;
    this.filled = performance.now();
    this.stopped = true;
    this.started = false; // ever: "connecting" before, "reconnecting" after
    this.attempt = 0;
    this.hint = null; // ms the server asked us to wait before coming back (its `reconnect`)
    this.recovering = false; // a request failed: the page has forgotten its rooms
    this.epoch = 0; // bumped when the stream is abandoned: stops handing out its events
    this.flushing = false;
    window.addEventListener("online", () => this.retryNow());
    window.addEventListener("offline", () => this.current?.controller.abort());
  }

  start() {
    this.stopped = false;
    this.open();
  }

  // Keep to the server's limits: its poll timeout, frames per request, and request rate.
  keepTo(limits) {
    const number = (value, fallback) => (Number.isFinite(value) && value > 0 ? value : fallback);
    const given = { ...DEFAULT_LIMITS, ...limits };
    this.requestTimeout = number(given.poll_timeout, DEFAULT_LIMITS.poll_timeout) * 1000 + LATE;
    this.maxFrames = Math.floor(number(given.frames, DEFAULT_LIMITS.frames));
    this.rate = number(given.request_rate, DEFAULT_LIMITS.request_rate) * PACE;
    this.burst = Math.max(1, Math.floor(number(given.request_burst, DEFAULT_LIMITS.request_burst) * PACE));
  }

  // Queue one frame; it goes in the next request. False when stopped.
  send(frame) {
    if (this.stopped) return false;
    this.queue.push(frame);
    this.kick();
    return true;
  }

  healthy() {
    this.attempt = 0;
  }

  resume() {
    this.attempt = 0;
    this.start();
  }

  stop() {
    this.stopped = true;
    this.abandon();
  }

  // Give up on this stream (the join failed, say) and start a new one through the backoff.
  drop() {
    if (this.stopped) return;
    this.abandon();
    this.closed(1006);
  }

  abandon() {
    this.epoch += 1;
    clearTimeout(this.timer);
    clearTimeout(this.pacing);
    this.timer = null;
    this.pacing = null;
    const request = this.current;
    this.current = null;
    request?.controller.abort();
  }

  // A new stream: the page joins again, and its join goes in the stream's first request.
  open() {
    this.abandon();
    if (this.stopped) return;
    this.stream = null;
    this.ack = 0;
    this.queue = [];
    this.hint = null;
    this.recovering = false;
    this.handlers.state(this.started ? "reconnecting" : "connecting", 0);
    this.started = true;
    this.handlers.open();
    this.kick();
  }

  // Frames sent in one go (join and history, say) share a request.
  kick() {
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(() => {
      this.flushing = false;
      this.flush();
    });
  }

  flush() {
    if (this.stopped || this.timer !== null || this.pacing !== null) return;
    const waiting = this.current;
    // Frames wait for a request that carries frames (its answer is quick); they supersede a poll.
    if (waiting && !(waiting.body.wait && this.queue.length)) return;
    const wait = this.budget();
    if (wait > 0) {
      this.pacing = setTimeout(() => {
        this.pacing = null;
        this.flush();
      }, wait);
      return;
    }
    const frames = this.queue.splice(0, this.maxFrames);
    if (waiting) {
      clearTimeout(waiting.timer);
      waiting.timer = setTimeout(() => waiting.controller.abort(), SUPERSEDED_GRACE);
    }
    this.request({
      client: this.client,
      stream: this.stream,
      ack: this.ack,
      rooms: this.rooms(),
      frames,
      // Only a poll waits: an answer to frames must not sit behind 25 s of silence (typing).
      wait: frames.length === 0 && this.stream !== null,
    });
  }

  // A token bucket: 0 when a request may go now, else the ms until it may.
  budget() {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.filled) * this.rate) / 1000);
    this.filled = now;
    if (this.tokens < 1) return ((1 - this.tokens) * 1000) / this.rate;
    this.tokens -= 1;
    return 0;
  }

  request(body) {
    const controller = new AbortController();
    const request = { body, controller, timer: setTimeout(() => controller.abort(), this.requestTimeout) };
    this.current = request;
    fetch(this.path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": this.csrf() },
      body: JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: controller.signal,
    })
      .then(async (response) => ({
        status: response.status,
        retryAfter: Number(response.headers.get("Retry-After")),
        data: await response.json().catch(() => null),
      }))
      .catch(() => null) // a network error, or aborted (timed out, offline, superseded)
      .then((result) => this.answered(request, result));
  }

  answered(request, result) {
    clearTimeout(request.timer);
    if (request !== this.current) return; // superseded or abandoned: only the newest counts
    this.current = null;
    const data = result && result.data && typeof result.data === "object" ? result.data : null;
    if (result === null || (result.status === 200 && data === null)) return this.failed(request.body);
    const close = data && data.close && typeof data.close === "object" ? data.close : null;
    if (result.status === 200) return this.apply(request.body, data);
    if (result.status === 401) return this.closed(UNAUTHORIZED);
    if (close && close.code in REFUSED) return this.closed(close.code);
    if (result.status in REFUSED_HTTP) return this.refused(REFUSED_HTTP[result.status]);
    const after = result.retryAfter > 0 ? result.retryAfter * 1000 : null; // 429, 503
    this.failed(request.body, after === null ? null : after + Math.random() * FIRST_DELAY);
  }

  apply(body, data) {
    if (data.superseded) return this.flush(); // a request of ours overtook this one on the way
    const epoch = this.epoch;
    const fresh = data.stream !== this.stream;
    if (data.limits && typeof data.limits === "object") this.keepTo(data.limits);
    this.stream = data.stream;
    this.ack = Number(data.n) || 0;
    if (fresh && !isEmpty(body.rooms)) this.handlers.restream?.(body.rooms);
    for (const event of Array.isArray(data.events) ? data.events : []) {
      this.deliver(event);
      if (this.epoch !== epoch || this.stopped) return; // the page stopped or dropped us
    }
    if (data.close) return this.closed(Number(data.close.code));
    if (this.recovering) {
      this.recovering = false;
      if (isEmpty(this.rooms())) this.handlers.open(); // its join goes in the next request
    }
    this.flush();
  }

  deliver(event) {
    if (!event || typeof event !== "object") return;
    if (event.type === "reconnect") {
      const after = Number(event.after);
      if (Number.isFinite(after) && after >= 0) this.hint = Math.min(after, 300) * 1000;
      return;
    }
    this.handlers.frame(event);
  }

  // No answer (network, timeout, a 5xx): the same request again, with the same ack, after the
  // backoff. Its `rooms` are the ones held when it was made: the page forgets them meanwhile.
  failed(body, hinted) {
    const delay = hinted ?? this.backoff();
    this.recovering = true;
    this.handlers.state("reconnecting", delay);
    this.later(delay, () => this.request(body));
  }

  // The stream ended (docs/protocol.md, section 7: the WebSocket's close codes).
  closed(code) {
    this.abandon();
    if (code === UNAUTHORIZED) {
      this.stopped = true;
      this.handlers.unauthorized();
      return;
    }
    if (code in REFUSED) return this.refused(REFUSED[code]);
    if (this.stopped) return;
    const delay = code === GOING_AWAY && this.hint !== null ? this.hint + Math.random() * FIRST_DELAY : this.backoff();
    this.hint = null;
    this.handlers.state("reconnecting", delay);
    this.later(delay, () => this.open());
  }

  later(delay, action) {
    this.retry = action;
    this.timer = setTimeout(() => this.retryNow(), delay);
  }

  refused(text) {
    this.abandon();
    this.stopped = true;
    this.handlers.gaveUp(text);
  }

  // Exponential backoff with equal jitter, as the WebSocket's.
  backoff() {
    const ceiling = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** this.attempt);
    this.attempt += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  // The retry's time came, or the network came back: don't sit out the rest of the backoff.
  retryNow() {
    if (this.stopped || this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.retry();
  }
}
