// The page's one link to the server, whichever transport carries it: the WebSocket first, and
// the HTTP long-poll (longpoll.js) when the WebSocket can't get through. Both have the same
// interface and handlers, so the page neither knows nor cares which one is active; switching is
// a reconnect (the page joins again with `since`, and resends what is unconfirmed, same refs).
//
// A WebSocket fails here when it carries no frame at all: it does not open, is closed at once,
// or opens and stays silent (connection.js). Such a failure counts only when the server answers
// plain HTTP meanwhile (a server that is down fails both ways), and not for RESTART_GRACE after
// the server said it is restarting (a draining worker still answers HTTP, but refuses
// handshakes): a restart must not push anyone to HTTP. Before the WebSocket ever worked on this page one such failure is enough;
// after, it takes FAILURES_AFTER_WORKED in a row. On HTTP, a probe socket is tried every
// PROBE_EVERY ms (and when the network comes back); once it answers a ping, the page returns.

import { Connection, SILENT_MS } from "./connection.js";
import { LongPoll } from "./longpoll.js";

const FAILURES_AFTER_WORKED = 3;
const PROBE_EVERY = 30000; // ms between probe sockets while on HTTP
const PROBE_DEADLINE = SILENT_MS; // ms a probe has to open and answer its ping
const CHECK_TIMEOUT = SILENT_MS; // ms the HTTP check may take
const RESTART_GRACE = 60000; // ms after a `reconnect` hint during which failures don't count

export class Transport {
  // wsUrl, httpPath; csrf() and rooms() as LongPoll's. handlers: Connection's, and
  // restream(rooms) (LongPoll's), via(kind): the active transport is now "ws" or "http".
  constructor({ wsUrl, httpPath, csrf, rooms }, handlers) {
    this.wsUrl = wsUrl;
    this.httpPath = httpPath;
    this.handlers = handlers;
    this.ws = new Connection(wsUrl, {
      ...this.relay(() => this.ws),
      heard: () => this.heard(),
      failed: () => this.failed(),
      draining: () => {
        this.restartingUntil = performance.now() + RESTART_GRACE;
      },
    });
    this.http = new LongPoll(httpPath, { csrf, rooms }, this.relay(() => this.http));
    this.active = this.ws;
    this.worked = false; // a WebSocket carried a frame on this page
    this.streak = 0; // failures counted since a socket last carried a frame
    this.heardCount = 0; // sockets that carried a frame: a check older than the last is void
    this.restartingUntil = 0; // failures before this time are the server's restart
    this.halted = false; // stopped, or waiting for the user ("Reconnect")
    this.probing = null; // the probe socket
    window.addEventListener("online", () => this.probe());
    setInterval(() => this.probe(), PROBE_EVERY);
  }

  // The page's handlers, for events of `transport()` while it is the active one.
  relay(transport) {
    const live = (fn) => (...args) => transport() === this.active && fn(...args);
    const { open, frame, state, unauthorized, gaveUp, restream } = this.handlers;
    return {
      open: live(open),
      frame: live(frame),
      state: live(state),
      restream: live(restream),
      unauthorized: live(() => {
        this.halted = true;
        unauthorized();
      }),
      gaveUp: live((text) => {
        this.halted = true;
        gaveUp(text);
      }),
    };
  }

  start() {
    this.handlers.via("ws");
    this.active.start();
  }

  send(frame) {
    return this.active.send(frame);
  }

  healthy() {
    this.active.healthy();
  }

  resume() {
    this.halted = false;
    this.active.resume();
  }

  stop() {
    this.halted = true;
    this.active.stop();
    this.endProbe();
  }

  drop() {
    this.active.drop();
  }

  heard() {
    this.worked = true;
    this.streak = 0;
    this.restartingUntil = 0;
    this.heardCount += 1;
  }

  // A WebSocket carried nothing: count it if the server answers HTTP, and maybe switch.
  failed() {
    if (performance.now() < this.restartingUntil) return;
    const heardCount = this.heardCount;
    this.serverAnswers().then((answers) => {
      if (!answers || heardCount !== this.heardCount || this.active !== this.ws || this.halted) return;
      this.streak += 1;
      if (this.streak >= (this.worked ? FAILURES_AFTER_WORKED : 1)) this.use(this.http);
    });
  }

  // Whether our server answers a plain GET of the HTTP endpoint (405 says it is there).
  serverAnswers() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), CHECK_TIMEOUT);
    return fetch(this.httpPath, { credentials: "same-origin", cache: "no-store", signal: controller.signal })
      .then((response) => response.status === 405, () => false)
      .finally(() => clearTimeout(timer));
  }

  use(transport) {
    if (this.active === transport) return;
    this.active.stop();
    this.active = transport;
    this.streak = 0;
    this.handlers.via(transport === this.http ? "http" : "ws");
    transport.resume();
  }

  // On HTTP: open a socket, ping, and come back to the WebSocket if the pong comes in time.
  probe() {
    if (this.active !== this.http || this.halted || this.probing) return;
    const socket = new WebSocket(this.wsUrl);
    this.probing = socket;
    const done = (works) => {
      if (this.probing !== socket) return;
      this.endProbe();
      if (works && this.active === this.http && !this.halted) this.use(this.ws);
    };
    socket.timer = setTimeout(() => done(false), PROBE_DEADLINE);
    socket.onopen = () => socket.send(JSON.stringify({ type: "ping" }));
    socket.onmessage = () => done(true); // any frame: the pong, or a notice on its way
    socket.onclose = () => done(false);
  }

  endProbe() {
    const socket = this.probing;
    if (!socket) return;
    this.probing = null;
    clearTimeout(socket.timer);
    socket.onopen = socket.onmessage = socket.onclose = null;
    socket.close(1000);
  }
}
