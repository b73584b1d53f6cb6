// One room over the connection (PROTOCOL.md): joins and resumes with `since`, keeps track of
// which seqs are accounted for, fills gaps and pages back with `history`, and delivers each
// own message exactly once (a `ref` per message, resent as is until its broadcast comes back).

const GAP_PAGE = 100; // the protocol's largest history page
const OLDER_PAGE = 50;
const RETRY_SEND = 1500; // ms before resending a message refused for a passing reason
const PASSING = new Set(["rate_limited", "server_error", "not_joined"]);
const FATAL_JOIN = new Set(["forbidden", "unknown_room"]);

// A v4 UUID: crypto.randomUUID where the page is a secure context, else getRandomValues.
export function newRef() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class RoomSync {
  // view: show(messages, how), pending(ref, body), confirm(ref), failed(ref, detail),
  //   removed(seq), presence(names), presenceChange(joined, left), typing(user), notice(body),
  //   joined(), older(more), refused(detail), joinFailed()
  constructor({ room, me, seq, shown, more, send, view }) {
    this.room = room;
    this.me = me;
    this.send = send; // frame -> bool
    this.view = view;
    this.contiguous = seq; // every seq up to this one is shown, or known to be gone
    this.above = new Set(shown.filter((s) => s > seq)); // seqs above `contiguous` accounted for
    this.seen = new Set(shown); // every seq ever shown: nothing is shown twice
    this.lowest = shown.length ? Math.min(...shown) : null;
    this.olderMore = more; // older messages than `lowest` exist
    this.outbox = new Map(); // ref -> body of own messages not yet confirmed, in send order
    this.requests = new Map(); // history ref -> its answer's handler
    this.joinRef = null;
    this.joined = false;
    this.gapInFlight = false;
    this.olderInFlight = false;
  }

  // The socket is open: join, resuming after the highest contiguous seq.
  opened() {
    this.reset();
    this.joinRef = newRef();
    this.send({ type: "join", room: this.room, since: this.contiguous, ref: this.joinRef });
  }

  // The socket is gone: whatever was asked on it will not be answered.
  reset() {
    this.joined = false;
    this.requests.clear();
    this.gapInFlight = false;
    this.olderInFlight = false;
  }

  handle(frame) {
    if (frame.room !== undefined && frame.room !== this.room) return;
    switch (frame.type) {
      case "joined":
        return this.onJoined(frame);
      case "message":
        this.take([frame], "live");
        return this.fillGaps();
      case "history": {
        const handler = this.requests.get(frame.ref);
        this.requests.delete(frame.ref);
        return handler && handler(frame);
      }
      case "message_deleted":
        return this.view.removed(frame.seq);
      case "presence":
        return this.view.presenceChange(frame.joined || [], frame.left || []);
      case "typing":
        return this.view.typing(frame.user);
      case "notice":
        return this.view.notice(frame.body);
      case "error":
        return this.onError(frame);
    }
  }

  onJoined(frame) {
    this.joined = true;
    this.view.presence(frame.presence || []);
    const since = this.contiguous;
    const messages = frame.messages || [];
    this.take(messages, "resume");
    // Without `more`, joined holds everything after `since`; with it, from its first message on.
    const from = frame.more && messages.length ? messages[0].seq : since + 1;
    this.account(from, frame.seq);
    this.view.joined();
    this.fillGaps();
    for (const ref of this.outbox.keys()) this.transmit(ref);
  }

  onError(frame) {
    const ref = frame.ref;
    if (ref !== undefined && ref === this.joinRef) {
      if (FATAL_JOIN.has(frame.code)) this.view.refused(frame.detail);
      else this.view.joinFailed(); // e.g. the database was busy: again, through the backoff
    } else if (this.outbox.has(ref)) {
      if (PASSING.has(frame.code)) {
        setTimeout(() => this.transmit(ref), RETRY_SEND);
      } else {
        this.outbox.delete(ref);
        this.view.failed(ref, frame.detail);
      }
    } else if (this.requests.has(ref)) {
      this.requests.delete(ref); // a failed page: asked again on the next scroll or reconnect
      this.gapInFlight = this.olderInFlight = false;
    } else if (!PASSING.has(frame.code)) {
      console.warn("chat:", frame.code, frame.detail);
    }
  }

  // Messages from any source: confirm own pending ones, drop what was shown, show the rest.
  take(messages, how) {
    const fresh = [];
    for (const m of messages) {
      if (m.user === this.me && this.outbox.has(m.ref)) {
        this.outbox.delete(m.ref);
        this.view.confirm(m.ref);
      }
      if (this.seen.has(m.seq)) continue;
      this.seen.add(m.seq);
      if (this.lowest === null || m.seq < this.lowest) this.lowest = m.seq;
      if (m.seq > this.contiguous) this.above.add(m.seq);
      fresh.push(m);
    }
    this.advance();
    if (fresh.length) this.view.show(fresh, how);
  }

  // Seqs lo..hi are accounted for (shown, or known to be deleted).
  account(lo, hi) {
    if (lo <= this.contiguous + 1) this.contiguous = Math.max(this.contiguous, hi);
    else for (let s = lo; s <= hi; s++) this.above.add(s);
    this.advance();
  }

  advance() {
    while (this.above.has(this.contiguous + 1)) this.above.delete(++this.contiguous);
    for (const s of this.above) if (s <= this.contiguous) this.above.delete(s);
  }

  // A seq above a hole was seen: ask for the hole, newest part first, a page at a time.
  fillGaps() {
    if (!this.joined || this.gapInFlight || this.above.size === 0) return;
    const floor = this.contiguous;
    const before = Math.min(...this.above);
    const limit = Math.min(GAP_PAGE, before - floor - 1);
    this.gapInFlight = true;
    this.request({ before, limit }, (page) => {
      this.gapInFlight = false;
      this.take(page.messages, "gap");
      // The page holds every shown message from its first one (or, without `more`, from the
      // floor) up to `before`; the seqs in between that it lacks are deleted ones.
      const from = page.more && page.messages.length ? page.messages[0].seq : floor + 1;
      this.account(from, before - 1);
      this.fillGaps();
    });
  }

  // Scrolled back to the top: one more page of older messages, until `more` says stop.
  loadOlder() {
    if (!this.joined || this.olderInFlight || !this.olderMore) return;
    const before = this.lowest ?? this.contiguous + 1;
    this.olderInFlight = true;
    this.request({ before, limit: OLDER_PAGE }, (page) => {
      this.olderInFlight = false;
      this.olderMore = page.more;
      this.take(page.messages, "older");
      this.view.older(page.more);
    });
  }

  request(fields, handler) {
    const ref = newRef();
    this.requests.set(ref, handler);
    this.send({ type: "history", room: this.room, ref, ...fields });
  }

  // A new own message: pending until its broadcast (same ref) comes back.
  submit(body) {
    const ref = newRef();
    this.outbox.set(ref, body);
    this.view.pending(ref, body);
    this.transmit(ref);
  }

  transmit(ref) {
    const body = this.outbox.get(ref);
    if (body === undefined || !this.joined) return; // sent (again) after the next `joined`
    this.send({ type: "send", room: this.room, body, ref });
  }

  typing() {
    if (this.joined) this.send({ type: "typing", room: this.room });
  }
}
