// Who is in the room, and who is typing ("X is typing…" for a few seconds after each signal).
// Each other name links to a direct conversation with them (chat/views.py, direct_confirm).

const TYPING_SHOWN = 3000; // ms a typing signal stays on screen
const DIRECT_PATH = "/direct/"; // unless the page names it in data-direct

export class People {
  constructor(root, me) {
    this.me = me;
    this.directPath = root.dataset.direct || DIRECT_PATH;
    this.list = root.querySelector(".presence");
    this.count = root.querySelector(".people .count");
    this.typingLine = root.querySelector(".typing");
    this.online = new Set();
    this.unlisted = 0; // present but not named: a big room lists its first names only
    this.typers = new Map(); // username -> timer that ends their "is typing"
  }

  // count: joined.presence_count, sent when the room has more users than the names listed.
  set(names, count) {
    this.online = new Set(names);
    this.unlisted = Math.max(0, (count ?? names.length) - this.online.size);
    this.render();
  }

  change(joined, left) {
    for (const name of joined) this.online.add(name);
    for (const name of left) {
      if (!this.online.delete(name) && this.unlisted > 0) this.unlisted -= 1;
      this.stopped(name);
    }
    this.render();
  }

  // Greyed out while disconnected: the list may be out of date.
  stale(flag) {
    this.list.classList.toggle("stale", flag);
  }

  render() {
    const names = [...this.online].sort((a, b) => a.localeCompare(b));
    this.list.replaceChildren(...names.map((name) => {
      const li = document.createElement("li");
      if (name === this.me) li.textContent = `${name} (you)`;
      else li.append(this.directLink(name));
      return li;
    }));
    if (this.unlisted > 0) {
      const more = document.createElement("li");
      more.className = "more";
      more.textContent = `and ${this.unlisted} more`;
      this.list.append(more);
    }
    this.count.textContent = `(${names.length + this.unlisted})`;
  }

  // A GET: the server opens the conversation if it exists, else asks before making it.
  directLink(name) {
    const link = document.createElement("a");
    link.href = `${this.directPath}${encodeURIComponent(name)}/`;
    link.textContent = name;
    link.title = `Direct message with ${name}`;
    return link;
  }

  typing(name) {
    clearTimeout(this.typers.get(name));
    this.typers.set(name, setTimeout(() => this.stopped(name), TYPING_SHOWN));
    this.renderTyping();
  }

  // Their message arrived, or they left: they are no longer typing.
  stopped(name) {
    if (!this.typers.has(name)) return;
    clearTimeout(this.typers.get(name));
    this.typers.delete(name);
    this.renderTyping();
  }

  renderTyping() {
    const names = [...this.typers.keys()];
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = "Several people are typing…";
    this.typingLine.textContent = text;
  }
}
