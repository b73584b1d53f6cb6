// What the page tells about itself: the connection state (and whether it runs on the HTTP
// fallback), why it stopped (with a button to connect again when that may help), and unread
// messages in the title while the tab is hidden.

const LABELS = {
  connecting: "Connecting…",
  online: "Online",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};
const FALLBACK = "Online (HTTP fallback)";
const FALLBACK_WHY = "WebSockets don't get through on this network: messages come over HTTP.";

export class Status {
  constructor(el) {
    this.el = el;
    this.text = el.querySelector(".status-text");
    this.detail = null;
  }

  // state: connecting | online | reconnecting | offline; detail replaces the label.
  set(state, detail) {
    this.el.dataset.state = state;
    this.detail = detail || null;
    this.render();
  }

  // kind: "ws" or "http", the transport the page is on.
  via(kind) {
    this.el.dataset.transport = kind;
    this.render();
  }

  render() {
    const fallback = this.el.dataset.transport === "http";
    const label = fallback && this.state === "online" ? FALLBACK : LABELS[this.state];
    this.text.textContent = this.detail || label;
    if (fallback) this.el.title = FALLBACK_WHY;
    else this.el.removeAttribute("title");
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
