// The message log: confirmed messages in seq order, own pending ones below them. Everything a
// user wrote goes in with textContent, never as HTML.

const NEAR = 120; // px from an edge that counts as "at" it

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dated = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

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

function part(tag, text, className) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  el.textContent = text;
  return el;
}

export class MessageList {
  // onNearTop(): the reader reached the top (or clicked "Load older messages").
  constructor(root, { me, onNearTop }) {
    this.me = me;
    this.log = root.querySelector(".log");
    this.list = root.querySelector(".messages");
    this.outbox = root.querySelector(".outbox");
    this.empty = root.querySelector(".empty");
    this.olderButton = root.querySelector(".older");
    this.beginning = root.querySelector(".beginning");
    this.onNearTop = onNearTop;
    this.log.addEventListener("scroll", () => {
      if (this.nearTop()) onNearTop();
    });
    this.olderButton.addEventListener("click", () => onNearTop());
  }

  // The messages the server rendered into the page: their seqs, times shown in local time.
  adopt() {
    const seqs = [];
    for (const li of this.list.querySelectorAll("li[data-seq]")) {
      seqs.push(Number(li.dataset.seq));
      const time = li.querySelector("time");
      if (time) setTime(time, time.dateTime);
    }
    this.scrollToEnd();
    return seqs;
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
    li.append(part("strong", m.user), " ", time, " ", part("span", m.body, "body"));
    return li;
  }

  // Insert messages (none shown before) at their seq; `older` ones keep the reader's place.
  show(messages, how) {
    const log = this.log;
    const stick = how !== "older" && this.nearEnd();
    const height = log.scrollHeight;
    const top = log.scrollTop;
    for (const m of messages) this.insert(this.render(m), m.seq);
    this.empty.hidden = true;
    if (how === "older") log.scrollTop = top + (log.scrollHeight - height);
    else if (stick) this.scrollToEnd();
  }

  insert(li, seq) {
    const first = this.list.firstElementChild;
    if (first && Number(first.dataset.seq) > seq) {
      this.list.insertBefore(li, first); // an older page: before everything
      return;
    }
    let next = null; // walk back from the end: live messages belong there
    for (let el = this.list.lastElementChild; el; el = el.previousElementSibling) {
      if (el.dataset.seq !== undefined && Number(el.dataset.seq) < seq) break;
      next = el;
    }
    this.list.insertBefore(li, next);
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

  confirm(ref) {
    this.outbox.querySelector(`li[data-ref="${CSS.escape(ref)}"]`)?.remove();
  }

  failed(ref, detail) {
    const li = this.outbox.querySelector(`li[data-ref="${CSS.escape(ref)}"]`);
    if (!li) return;
    li.classList.replace("pending", "failed");
    li.querySelector(".state").textContent = `not sent: ${detail}`;
  }

  removed(seq) {
    this.list.querySelector(`li[data-seq="${Number(seq)}"]`)?.remove();
  }

  notice(body) {
    const stick = this.nearEnd();
    this.list.append(part("li", body, "msg notice"));
    if (stick) this.scrollToEnd();
  }

  // The last older page came: offer more, or say this is where the conversation begins.
  older(more) {
    this.olderButton.hidden = !more;
    this.beginning.hidden = more;
  }
}
