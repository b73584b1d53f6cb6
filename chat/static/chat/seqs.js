// Which seqs of one room the page accounts for (PROTOCOL.md: each room has a gapless seq).
// Pure bookkeeping, no DOM and no socket:
//   top      the newest seq known: the page resumes with `since: top`
//   floor    the oldest seq on screen; older messages are paged in from the top edge
//   holes    ranges of seqs in between that no answer has covered yet. A hole inside the window
//            (the newest `window` seqs) is filled with `history`; one beyond it is "marked": the
//            page shows "N earlier messages" there and fills it only when asked.
//   seen     the seqs on screen, so that nothing is shown twice. It holds what the DOM holds:
//            pruning the oldest messages prunes it too.

export class SeqWindow {
  // top: the room's seq the page was rendered at; shown: the seqs it rendered; more: older
  // messages than those exist; window: how many of the newest seqs to fill on our own.
  constructor({ top, shown, more, window }) {
    this.window = window;
    this.top = top;
    this.seen = new Set(shown);
    this.floor = shown.length ? shown.reduce((a, b) => Math.min(a, b)) : top + 1;
    this.olderMore = more;
    this.holes = []; // {lo, hi, marked}, oldest first, never overlapping
  }

  // The server's seq went down: its database was recreated. Forget everything.
  restart(top) {
    this.top = top;
    this.seen.clear();
    this.floor = top + 1;
    this.olderMore = top > 0;
    this.holes = [];
  }

  // Whether a message is new to the screen; if it is, it counts as shown from now on. Older
  // pages bring seqs below the floor; everything else belongs at or above it (a resend's reply
  // may repeat a seq that was pruned long ago: it stays out).
  admit(seq, older) {
    if (this.seen.has(seq) || (older ? seq >= this.floor : seq < this.floor)) return false;
    this.seen.add(seq);
    return true;
  }

  // Seqs lo..hi are accounted for (shown, or known to be deleted). Above the top, the seqs
  // skipped between the old top and lo become a hole.
  cover(lo, hi) {
    if (hi < lo) return;
    const holes = [];
    for (const h of this.holes) {
      if (h.hi < lo || h.lo > hi) {
        holes.push(h);
        continue;
      }
      if (h.lo < lo) holes.push({ ...h, hi: lo - 1 });
      if (h.hi > hi) holes.push({ ...h, lo: hi + 1 });
    }
    if (hi > this.top) {
      if (lo > this.top + 1) holes.push({ lo: this.top + 1, hi: lo - 1, marked: false });
      this.top = hi;
    }
    this.holes = holes;
  }

  // The next `history` to ask for a hole inside the window, newest part first:
  // {lo, before, limit}, or null. Holes that lie beyond the window are marked on the way.
  nextFill(page) {
    const edge = this.top - this.window; // this seq and those below are beyond the window
    for (const h of this.holes) if (!h.marked && h.hi <= edge) h.marked = true;
    for (let i = this.holes.length - 1; i >= 0; i--) {
      const h = this.holes[i];
      if (h.marked) continue;
      const lo = Math.max(h.lo, edge + 1);
      return { lo: h.lo, before: h.hi + 1, limit: Math.min(page, h.hi - lo + 1) };
    }
    return null;
  }

  marked() {
    return this.holes.filter((h) => h.marked);
  }

  // An older page came (sorted, all below the floor): the floor moves down to its first seq.
  older(messages, more) {
    if (messages.length) this.floor = messages[0].seq;
    this.olderMore = more;
  }

  // The oldest messages left the screen: `floor` is the oldest one still on it.
  pruned(floor) {
    this.floor = floor;
    this.olderMore = true;
    this.holes = this.holes.filter((h) => h.lo > floor);
    for (const seq of this.seen) if (seq < floor) this.seen.delete(seq);
  }
}
