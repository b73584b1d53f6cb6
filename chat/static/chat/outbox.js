// Own messages until their broadcast comes back. Each keeps its `ref` for life, so a resend is
// never stored twice (docs/protocol.md: `send` is idempotent per room, user and ref). A message
// goes out again after each reconnect and after a passing error (rate_limited, server_error),
// but at most `maxSends` times: then it shows "not sent: retry" and waits for the user, whose
// retry sends it again with the same ref.

export const MAX_SENDS = 3;
const RETRY_AFTER = 1500; // ms before the resend after a passing error; doubles each time
const PASSING = new Set(["rate_limited", "server_error", "not_joined"]);
const NO_ANSWER = "no answer from the server";

export class Outbox {
  // transmit(ref, body) -> bool: false while not joined (the message waits for `resume`).
  // view: pending(ref, body), confirm(ref), failed(ref, detail, canRetry), retrying(ref)
  constructor({ transmit, view, maxSends = MAX_SENDS, retryAfter = RETRY_AFTER }) {
    this.transmit = transmit;
    this.view = view;
    this.maxSends = maxSends;
    this.retryAfter = retryAfter;
    this.entries = new Map(); // ref -> {body, sends, failed, timer}, in the order written
  }

  has(ref) {
    return ref !== undefined && this.entries.has(ref);
  }

  add(ref, body) {
    this.entries.set(ref, { body, sends: 0, failed: false, timer: null });
    this.view.pending(ref, body);
    this.send(ref);
  }

  send(ref) {
    const entry = this.entries.get(ref);
    if (!entry || entry.failed) return;
    clearTimeout(entry.timer);
    entry.timer = null;
    if (this.transmit(ref, entry.body)) entry.sends += 1;
  }

  // Joined (again): everything unconfirmed goes out, in the order it was written.
  resume() {
    for (const ref of this.entries.keys()) this.send(ref);
  }

  // The socket is gone. A message that went out `maxSends` times without an answer stops
  // here; the others wait for the next `resume` (their retry timers would find no socket).
  pause() {
    for (const [ref, entry] of this.entries) {
      clearTimeout(entry.timer);
      entry.timer = null;
      if (!entry.failed && entry.sends >= this.maxSends) this.giveUp(ref, NO_ANSWER);
    }
  }

  // The broadcast of one of ours came back.
  confirmed(ref) {
    const entry = this.has(ref) && this.entries.get(ref);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.entries.delete(ref);
    this.view.confirm(ref);
  }

  // An `error` answered one of ours: try again later, or give up on it.
  refused(ref, code, detail) {
    const entry = this.entries.get(ref);
    if (!entry || entry.failed) return;
    if (!PASSING.has(code)) {
      this.entries.delete(ref); // e.g. a body the server will never take: retrying can't help
      this.view.failed(ref, detail, false);
    } else if (entry.sends >= this.maxSends) {
      this.giveUp(ref, detail);
    } else {
      clearTimeout(entry.timer);
      entry.timer = setTimeout(() => this.send(ref), this.retryAfter * 2 ** Math.max(0, entry.sends - 1));
    }
  }

  giveUp(ref, detail) {
    const entry = this.entries.get(ref);
    entry.failed = true;
    clearTimeout(entry.timer);
    entry.timer = null;
    this.view.failed(ref, detail, true);
  }

  // The user asked: send it again, same ref, with a fresh allowance of sends.
  retry(ref) {
    const entry = this.entries.get(ref);
    if (!entry || !entry.failed) return;
    entry.failed = false;
    entry.sends = 0;
    this.view.retrying(ref);
    this.send(ref);
  }

  // The room is closed to us: nothing will go out.
  abandon(detail) {
    for (const [ref, entry] of this.entries) {
      clearTimeout(entry.timer);
      this.view.failed(ref, detail, false);
    }
    this.entries.clear();
  }
}
