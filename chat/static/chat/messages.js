// The message log: confirmed messages in seq order, markers for the stretches not loaded
// ("N earlier messages"), own pending ones below them. Everything a user wrote goes in with
// textContent, never as HTML. Each item of the list has a key to sort by: a message its seq,
// a marker or a notice a seq plus or minus a half.

import { highlightMentions, part } from "./dom.js";
import { Editing } from "./edits.js";

const NEAR = 120; // px from an edge that counts as "at" it

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dated = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const count = new Intl.NumberFormat();

function sameDay(a, b) {
  return a.toDateString() === b.toDateString();
}

// Show a <time> in local time: the hour today, the date otherwise; the full date on hover.
function setTime(el, iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return;
  el.dateTime = iso;
  el.textContent = sameDay(when, new Date()) ? clock.format(when) : dated.format(when);
  el.title = dated.format(when);
}

export function earlier(n) {
  return `${count.format(n)} earlier message${n === 1 ? "" : "s"}`;
}

function keyOf(el) {
  return Number(el.dataset.seq ?? el.dataset.key);
}

export const DELETED = "Message deleted";

export class MessageList {
  // onNearTop(): the reader reached the top (or clicked "Load older messages");
  // onNearEnd(): the reader is back at the bottom; onExpand(lo): "Load older messages" on the
  // marker of the stretch that starts at seq lo; onRetry(ref): "retry" on a message not sent;
  // onEdit(seq, body) and onDelete(seq): the reader saved an edit of, or deleted, message seq.
  // staff: every message gets Edit and Delete; editWindow: seconds own messages get them.
  constructor(root, { me, onNearTop, onNearEnd, onExpand, onRetry, onEdit, onDelete,
    staff = false, editWindow = 900 }) {
    this.me = me;
    this.directPath = root.dataset.direct || "/direct/";
    this.log = root.querySelector(".log");
    this.list = root.querySelector(".messages");
    this.editing = new Editing(this.list, { staff, editWindow, onEdit, onDelete });
    this.outbox = root.querySelector(".outbox");
    this.empty = root.querySelector(".empty");
    this.olderButton = root.querySelector(".older");
    this.earlierCount = root.querySelector(".history-edge .earlier");
    this.beginning = root.querySelector(".beginning");
    this.count = 0; // messages in the list
    this.hint = null; // the last one inserted: the next of a sorted batch goes right after it
    this.log.addEventListener("scroll", () => {
      if (this.nearTop()) onNearTop();
      if (this.nearEnd()) onNearEnd();
    });
    this.olderButton.addEventListener("click", () => onNearTop());
    this.list.addEventListener("click", (event) => {
      const button = event.target.closest(".gap button");
      if (button) onExpand(Number(button.closest(".gap").dataset.lo));
    });
    this.outbox.addEventListener("click", (event) => {
      const button = event.target.closest("button.retry");
      if (button) onRetry(button.closest("li").dataset.ref);
    });
  }

  // The messages the server rendered into the page: their seqs, times shown in local time.
  adopt() {
    const seqs = [];
    for (const li of this.list.querySelectorAll("li[data-seq]")) {
      seqs.push(Number(li.dataset.seq));
      const time = li.querySelector("time");
      if (time) setTime(time, time.dateTime);
      if (time) this.editing.addActions(li, li.classList.contains("mine"), time.dateTime);
      const body = li.querySelector(".body");
      if (body) highlightMentions(body, this.me);
    }
    this.count = seqs.length;
    this.scrollToEnd();
    this.toUnreadLine();
    return seqs;
  }

  // Entering with unread messages above the screen: start at the "New messages" line (the
  // server put it above the first one), so that they are read, not skipped.
  toUnreadLine() {
    const line = this.list.querySelector(".unread-line");
    if (!line) return;
    const above = line.getBoundingClientRect().top - this.log.getBoundingClientRect().top;
    if (above < 0) this.log.scrollTop += above - 8;
  }

  nearTop() {
    return this.log.scrollTop < NEAR;
  }

  nearEnd() {
    const log = this.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR;
  }

  scrollToEnd() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  render(m) {
    const li = document.createElement("li");
    li.className = m.user === this.me ? "msg mine" : "msg";
    li.dataset.seq = m.seq;
    li.dataset.id = m.id;
    const time = document.createElement("time");
    setTime(time, m.ts);
    const body = part("span", m.body, "body");
    highlightMentions(body, this.me);
    li.append(this.author(m.user), " ", time, " ", body);
    if (m.edited) this.editing.markEdited(li, m.edited, m.change);
    this.editing.addActions(li, m.user === this.me, m.ts);
    return li;
  }

  // The author's name; another's links to a direct conversation with them (like presence.js).
  author(name) {
    const strong = document.createElement("strong");
    if (name === this.me) {
      strong.textContent = name;
      return strong;
    }
    const link = part("a", name);
    link.href = `${this.directPath}${encodeURIComponent(name)}/`;
    link.title = `Direct message with ${name}`;
    strong.append(link);
    return strong;
  }

  byseq(seq) {
    return this.list.querySelector(`li.msg[data-seq="${Number(seq)}"]`);
  }

  // Edit and delete (edits.js) for the page, which talks to this list only.
  changeDone(seq) {
    this.editing.changeDone(seq);
  }

  changeFailed(seq, detail) {
    this.editing.changeFailed(seq, detail);
  }

  edited(change) {
    this.editing.edited(change);
    const body = this.byseq(change.seq)?.querySelector(".body");
    if (body) highlightMentions(body, this.me); // the new body came in as text
  }

  // Message `seq` is deleted: a placeholder takes its place (`inRange`: also where nothing
  // was shown, a seq the page accounts for).
  deleted(seq, inRange) {
    const li = this.byseq(seq);
    if (!li && (!inRange || this.list.querySelector(`li.deleted[data-key="${Number(seq)}"]`))) return;
    const placeholder = part("li", DELETED, "deleted");
    placeholder.dataset.key = seq;
    if (li) {
      li.replaceWith(placeholder);
      this.count -= 1;
    } else {
      this.insert(placeholder);
    }
  }

  // Insert messages (none shown before) at their seq. Older pages keep the reader's place;
  // live ones follow the conversation when the reader is at the bottom; a marker's page opens
  // below the marker, where the reader clicked.
  show(messages, how) {
    const log = this.log;
    const stick = (how === "live" || how === "resume" || how === "gap") && this.nearEnd();
    const height = log.scrollHeight;
    const top = log.scrollTop;
    for (const m of messages) this.insert(this.render(m));
    this.count += messages.length;
    this.empty.hidden = true;
    if (how === "older") log.scrollTop = top + (log.scrollHeight - height);
    else if (stick) this.scrollToEnd();
  }

  insert(li) {
    const key = keyOf(li);
    const list = this.list;
    const hint = this.hint?.parentNode === list ? this.hint : null;
    this.hint = li;
    const after = hint?.nextElementSibling;
    if (hint && keyOf(hint) < key && (!after || keyOf(after) > key)) {
      list.insertBefore(li, after);
      return;
    }
    const first = list.firstElementChild;
    if (first && keyOf(first) > key) {
      list.insertBefore(li, first); // an older page: before everything
      return;
    }
    let next = null; // walk back from the end: live messages belong there
    for (let el = list.lastElementChild; el && keyOf(el) > key; el = el.previousElementSibling) next = el;
    list.insertBefore(li, next);
  }

  // Bound the list: down to `window` messages when the reader is at the bottom, else to
  // `keepMost` while keeping the reader's place. Return the oldest seq kept, or null.
  trim(window, keepMost) {
    const atEnd = this.nearEnd();
    let drop = this.count - (atEnd ? window : keepMost);
    if (drop <= 0) return null;
    const gone = [];
    let el = this.list.firstElementChild;
    for (; el && (drop > 0 || el.dataset.seq === undefined); el = el.nextElementSibling) {
      if (el.dataset.seq !== undefined) drop -= 1;
      gone.push(el);
    }
    if (!el) return null;
    const before = el.getBoundingClientRect().top;
    for (const old of gone) old.remove();
    this.count -= gone.filter((old) => old.dataset.seq !== undefined).length;
    if (atEnd) this.scrollToEnd();
    else this.log.scrollTop += el.getBoundingClientRect().top - before;
    return Number(el.dataset.seq);
  }

  // The stretches not loaded ({lo, hi}): one marker each, placed just above seq hi + 1.
  gaps(holes) {
    const wanted = new Map(holes.map((h) => [String(h.lo), h]));
    for (const li of this.list.querySelectorAll("li.gap")) {
      const hole = wanted.get(li.dataset.lo);
      if (hole) {
        li.querySelector(".earlier").textContent = earlier(hole.hi - hole.lo + 1);
        wanted.delete(li.dataset.lo);
      } else {
        li.remove();
      }
    }
    for (const hole of wanted.values()) {
      const li = document.createElement("li");
      li.className = "gap";
      li.dataset.lo = hole.lo;
      li.dataset.key = hole.lo - 0.5;
      const button = part("button", "Load older messages");
      button.type = "button";
      li.append(part("span", earlier(hole.hi - hole.lo + 1), "earlier"), " ", button);
      this.insert(li);
    }
  }

  // Everything goes (the server's history was reset).
  cleared() {
    this.list.replaceChildren();
    this.count = 0;
    this.empty.hidden = false;
  }

  pending(ref, body) {
    const li = document.createElement("li");
    li.className = "msg mine pending";
    li.dataset.ref = ref;
    li.append(part("strong", this.me), " ", part("span", "sending…", "state"), " ",
      part("span", body, "body"));
    this.outbox.append(li);
    this.empty.hidden = true;
    this.scrollToEnd();
  }

  sending(ref) {
    return this.outbox.querySelector(`li[data-ref="${CSS.escape(ref)}"]`);
  }

  confirm(ref) {
    this.sending(ref)?.remove();
  }

  // Not sent: why, and (for a passing failure) a retry button; the reason shows on hover.
  failed(ref, detail, canRetry) {
    const li = this.sending(ref);
    if (!li) return;
    li.classList.replace("pending", "failed");
    const state = li.querySelector(".state");
    if (canRetry) {
      const button = part("button", "retry", "link retry");
      button.type = "button";
      state.replaceChildren("not sent: ", button);
      state.title = detail;
    } else {
      state.textContent = `not sent: ${detail}`;
    }
  }

  retrying(ref) {
    const li = this.sending(ref);
    if (!li) return;
    li.classList.replace("failed", "pending");
    const state = li.querySelector(".state");
    state.textContent = "sending…";
    state.removeAttribute("title");
  }

  removed(seq) {
    this.deleted(seq, false);
  }

  // A line from the server or the page, kept at `key` among the messages.
  notice(body, key) {
    const stick = this.nearEnd();
    const li = part("li", body, "notice");
    li.dataset.key = key;
    this.insert(li);
    if (stick) this.scrollToEnd();
  }

  // The top edge: "N earlier messages" and a button to load them, or the beginning.
  older(more, earlierCount) {
    this.olderButton.hidden = !more;
    this.earlierCount.hidden = !more || earlierCount <= 0;
    this.earlierCount.textContent = earlier(earlierCount);
    this.beginning.hidden = more;
  }
}
