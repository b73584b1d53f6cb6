// What the page tells about itself: the connection state, and unread messages in the title
// while the tab is hidden.

const LABELS = {
  connecting: "Connecting…",
  online: "Online",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

export class Status {
  constructor(el) {
    this.el = el;
    this.text = el.querySelector(".status-text");
  }

  // state: connecting | online | reconnecting | offline; detail replaces the label.
  set(state, detail) {
    this.el.dataset.state = state;
    this.text.textContent = detail || LABELS[state];
  }

  get state() {
    return this.el.dataset.state;
  }
}

export class UnreadTitle {
  constructor() {
    this.base = document.title;
    this.count = 0;
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.clear();
    });
  }

  add(n) {
    if (!document.hidden || n <= 0) return;
    this.count += n;
    document.title = `(${this.count}) ${this.base}`;
  }

  clear() {
    this.count = 0;
    document.title = this.base;
  }
}
