// What the page tells about itself: the connection state, why it stopped (with a button to
// connect again when that may help), and unread messages in the title while the tab is hidden.

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

// A line under the room's title that stays until it is dealt with.
export class Alert {
  // onReconnect(): the "Reconnect" button was pressed
  constructor(el, onReconnect) {
    this.el = el;
    this.text = el.querySelector(".alert-text");
    this.button = el.querySelector(".reconnect");
    this.button.addEventListener("click", () => {
      this.hide();
      onReconnect();
    });
  }

  show(text, { reconnect }) {
    this.text.textContent = text;
    this.button.hidden = !reconnect;
    this.el.hidden = false;
  }

  hide() {
    this.el.hidden = true;
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
