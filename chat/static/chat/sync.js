// One room over the connection (PROTOCOL.md): joins and resumes with `since`, fills holes in
// the seqs with `history` within a bounded window (seqs.js), pages back on request, starts
// afresh when the server's seq went down, and hands own messages to the outbox (outbox.js).

import { Outbox } from "./outbox.js";
import { SeqWindow } from "./seqs.js";

export const LIMITS = {
  window: 500, // messages kept (and holes filled) while the reader is at the bottom
  keepMost: 2000, // messages kept wherever the reader is
  gapPage: 100, // the protocol's largest history page
  olderPage: 50,
};
const FATAL_JOIN = new Set(["forbidden", "unknown_room"]);
const GAP_RETRY = 1000; // ms before asking again for a hole whose page was refused (rate_limited)
const RESTARTED = "The server's history was reset: these are its latest messages.";
const NOT_HERE = "you are not in this room";
const LOST = "not saved: no connection to the server";

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
  // view: show(messages, how), pending(ref, body), confirm(ref), failed(ref, detail, canRetry),
  //   retrying(ref), removed(seq), presence(names), presenceChange(joined, left), typing(user),
  //   notice(body, key), joined(), older(more, earlier), gaps(holes), trim(window, keepMost)
  //   -> the oldest seq kept, or null; cleared(), refused(detail), joinFailed(),
  //   edited(change), deleted(seq, inRange), changeDone(seq), changeFailed(seq, detail)
  // change: the room's change seq the page was rendered at (0: unknown, every change is asked).
  constructor({ room, me, seq, shown, more, send, view, limits = LIMITS, change = 0 }) {
    this.room = room;
    this.me = me;
    this.send = send; // frame -> bool
    this.view = view;
    this.limits = limits;
    this.seqs = new SeqWindow({ top: seq, shown, more, window: limits.window });
    this.outbox = new Outbox({ transmit: (ref, body) => this.transmit(ref, body), view });
    this.requests = new Map(); // history ref -> {answered(page), failed()}
    this.joinRef = null;
    this.joinSince = seq;
    this.joined = false;
    this.refusal = null; // why the room is closed to us: we don't join it again
    this.inFlight = { gap: false, older: false, expand: false };
    this.markedShown = "";
    this.change = change; // the room's change seq this page has applied
    this.changes = new Map(); // ref of an edit or delete sent -> seq
  }

  // The socket is open: join, resuming after the newest seq this page knows.
  opened() {
    this.disconnected();
    if (this.refusal !== null) return;
    this.joinRef = newRef();
    this.joinSince = this.seqs.top;
    this.send({ type: "join", room: this.room, since: this.joinSince, changes_since: this.change,
      ref: this.joinRef });
  }

  // A new HTTP stream joined the room for us (another worker answered), resuming after
  // `since`, the seq our request held: what was asked on the old stream will not be answered.
  restreamed(since) {
    this.disconnected();
    if (since !== undefined) this.joinSince = since;
  }

  // The socket is gone: whatever was asked on it will not be answered.
  disconnected() {
    this.joined = false;
    this.requests.clear();
    this.inFlight = { gap: false, older: false, expand: false };
    this.outbox.pause();
    for (const seq of this.changes.values()) this.view.changeFailed(seq, LOST);
    this.changes.clear();
  }

  handle(frame) {
    if (frame.room !== undefined && frame.room !== this.room) return;
    switch (frame.type) {
      case "joined":
        return this.onJoined(frame);
      case "left": // with a reason, the server took us out (e.g. removed from a private room)
        return frame.reason !== undefined && this.refuse(frame.detail || NOT_HERE);
      case "message":
        this.take([frame], "live");
        this.seqs.cover(frame.seq, frame.seq);
        return this.changed();
      case "history": {
        const request = this.requests.get(frame.ref);
        this.requests.delete(frame.ref);
        return request && request.answered(frame);
      }
      case "message_edited":
        return this.applyChange(frame);
      case "message_deleted":
        return this.applyChange(frame);
      case "presence":
        return this.view.presenceChange(frame.joined || [], frame.left || []);
      case "typing":
        return this.view.typing(frame.user);
      case "notice":
        return this.view.notice(frame.body, this.seqs.top + 0.5);
      case "error":
        return this.onError(frame);
    }
  }

  onJoined(frame) {
    const restarted = frame.seq < this.seqs.top;
    if (restarted) this.restart(frame.seq);
    this.joined = true;
    this.view.presence(frame.presence || [], frame.presence_count);
    const messages = frame.messages || [];
    this.take(messages, "resume");
    // Without `more`, joined holds everything after `since`; with it, from its first message on.
    const from = frame.more && messages.length ? messages[0].seq : this.joinSince + 1;
    this.seqs.cover(from, frame.seq);
    for (const change of frame.changes || []) this.applyChange(change);
    this.placeholders(frame.deleted);
    if (frame.change !== undefined) this.change = Math.max(this.change, frame.change);
    if (frame.changes_more) this.reload(frame.seq); // too many to apply: read the room again
    this.view.joined();
    this.changed();
    this.outbox.resume();
    if (restarted) this.loadOlder();
  }

  // The database behind the server was recreated: what this page shows belongs to another
  // history, and its seqs would hide the new messages. Start again from the server's seq.
  restart(seq) {
    this.requests.clear();
    this.inFlight = { gap: false, older: false, expand: false };
    this.seqs.restart(seq);
    this.joinSince = seq;
    this.change = 0;
    this.view.cleared();
    this.markedShown = "";
    this.view.notice(RESTARTED, seq + 0.5);
    this.view.older(this.seqs.olderMore, seq);
  }

  // More changes were made while away than a join carries: show the room's newest messages
  // as they are now, and older ones from the top edge, as after a restart but without notice.
  reload(seq) {
    this.requests.clear();
    this.inFlight = { gap: false, older: false, expand: false };
    this.seqs.restart(seq);
    this.view.cleared();
    this.markedShown = "";
    this.view.older(this.seqs.olderMore, seq);
    this.loadOlder();
  }

  // An edit or a deletion (live, or from joined's changes); ours is confirmed by its ref.
  applyChange(change) {
    if (this.changes.has(change.ref)) {
      this.changes.delete(change.ref);
      this.view.changeDone(change.seq);
    }
    if (change.type === "message_deleted") this.view.deleted(change.seq, this.accounts(change.seq));
    else this.view.edited(change);
    if (typeof change.change === "number") this.change = Math.max(this.change, change.change);
  }

  // Placeholders for deleted seqs the page accounts for (joined and history list them).
  placeholders(seqs, lo = this.seqs.floor) {
    for (const seq of seqs || []) if (this.accounts(seq, lo)) this.view.deleted(seq, true);
  }

  accounts(seq, lo = this.seqs.floor) {
    return seq >= lo && seq <= this.seqs.top
      && !this.seqs.holes.some((h) => h.lo <= seq && seq <= h.hi);
  }

  edit(seq, body) {
    this.change_("edit", seq, { body });
  }

  remove(seq) {
    this.change_("delete", seq, {});
  }

  change_(type, seq, fields) {
    const ref = newRef();
    if (!this.joined || !this.send({ type, room: this.room, seq, ref, ...fields })) {
      this.view.changeFailed(seq, LOST);
      return;
    }
    this.changes.set(ref, seq);
  }

  // The room is closed to us (not a member, no such room, removed): say why and stay out.
  refuse(detail) {
    this.refusal = detail;
    this.joined = false;
    this.outbox.abandon(NOT_HERE);
    this.view.refused(detail);
  }

  onError(frame) {
    const ref = frame.ref;
    if (ref !== undefined && ref === this.joinRef) {
      if (FATAL_JOIN.has(frame.code)) this.refuse(frame.detail);
      else this.view.joinFailed(); // e.g. the database was busy: again, through the backoff
    } else if (this.changes.has(ref)) {
      const seq = this.changes.get(ref);
      this.changes.delete(ref);
      this.view.changeFailed(seq, frame.detail);
    } else if (this.outbox.has(ref)) {
      this.outbox.refused(ref, frame.code, frame.detail);
    } else if (this.requests.has(ref)) {
      const request = this.requests.get(ref);
      this.requests.delete(ref); // asked again on the next change, scroll or reconnect
      request.failed();
    }
  }

  // Messages from any source: confirm own pending ones, drop what is shown, show the rest.
  take(messages, how) {
    const older = how === "older";
    const fresh = [];
    for (const m of messages) {
      if (m.user === this.me) this.outbox.confirmed(m.ref);
      if (this.seqs.admit(m.seq, older)) fresh.push(m);
      else if (m.edited) this.view.edited(m); // shown already, perhaps with an older body
    }
    if (fresh.length) this.view.show(fresh, how);
  }

  // After new seqs: fill holes inside the window, keep the window bounded, mark the rest.
  changed() {
    this.fillGaps();
    this.trim();
    const marked = this.seqs.marked();
    const shown = marked.map((h) => `${h.lo}-${h.hi}`).join();
    if (shown !== this.markedShown) this.view.gaps(marked);
    this.markedShown = shown;
  }

  // Drop the oldest messages from the screen (the view decides how many, from the reader's
  // place); older ones come back through the top edge.
  trim() {
    const floor = this.view.trim(this.limits.window, this.limits.keepMost);
    if (floor === null) return;
    this.seqs.pruned(floor);
    this.view.older(true, floor - 1);
  }

  // A hole inside the window: ask for it, newest part first, a page at a time.
  fillGaps() {
    if (!this.joined || this.inFlight.gap) return;
    const ask = this.seqs.nextFill(this.limits.gapPage);
    if (ask) this.fill("gap", ask, "gap");
  }

  // The reader asked for the messages of a marked hole (the one whose lowest seq is `lo`).
  expand(lo) {
    const hole = this.seqs.marked().find((h) => h.lo === lo);
    if (!hole || !this.joined || this.inFlight.expand) return;
    const limit = Math.min(this.limits.olderPage, hole.hi - hole.lo + 1);
    this.fill("expand", { lo: hole.lo, before: hole.hi + 1, limit }, "expand");
  }

  fill(kind, { lo, before, limit }, how) {
    this.request(kind, { before, limit }, (page) => {
      this.take(page.messages, how);
      // The page holds every shown message from its first one (or, without `more`, from the
      // hole's start) up to `before`; the seqs in between that it lacks are deleted ones.
      const from = page.more && page.messages.length ? page.messages[0].seq : lo;
      this.seqs.cover(from, before - 1);
      this.placeholders((page.deleted || []).filter((seq) => seq < before), from);
      this.changed();
    });
  }

  // Scrolled back to the top: one more page of older messages, until `more` says stop.
  loadOlder() {
    if (!this.joined || this.inFlight.older || !this.seqs.olderMore) return;
    this.request("older", { before: this.seqs.floor, limit: this.limits.olderPage }, (page) => {
      this.take(page.messages, "older");
      const floor = this.seqs.floor;
      this.seqs.older(page.messages, page.more);
      // Without `more` the page reaches down to seq 1: its deleted seqs are on screen too.
      const lo = page.more && page.messages.length ? page.messages[0].seq : 1;
      this.placeholders((page.deleted || []).filter((seq) => seq < floor), lo);
      this.view.older(page.more, this.seqs.floor - 1);
    });
  }

  request(kind, fields, onPage) {
    const ref = newRef();
    this.inFlight[kind] = true;
    const done = () => {
      this.inFlight[kind] = false;
    };
    this.requests.set(ref, {
      answered(page) {
        done();
        onPage(page);
      },
      failed: () => {
        done();
        // A hole asked for on our own is asked again; the reader asks again for the others.
        if (kind === "gap") setTimeout(() => this.fillGaps(), GAP_RETRY);
      },
    });
    this.send({ type: "history", room: this.room, ref, ...fields });
  }

  // A new own message: pending until its broadcast (same ref) comes back.
  submit(body) {
    if (this.refusal === null) this.outbox.add(newRef(), body);
  }

  retry(ref) {
    this.outbox.retry(ref);
  }

  transmit(ref, body) {
    if (!this.joined) return false; // sent (again) after the next `joined`
    return this.send({ type: "send", room: this.room, body, ref });
  }

  typing() {
    if (this.joined) this.send({ type: "typing", room: this.room });
  }
}
