// The room page: reads the data- attributes the template wrote and wires the connection, the
// room's sync state and the views together. Each module does one thing:
//   transport.js   WebSocket, or HTTP when it fails  connection.js  the socket and its reconnects
//   longpoll.js    the HTTP long-poll transport     sync.js      the protocol for one room
//   seqs.js        which seqs the page accounts for  outbox.js    own messages until confirmed
//   messages.js    the message log                   composer.js  the message box
//   presence.js    who is here and who is typing     status.js    connection state, alerts, title
//   site.js        the user's own channel (unread counts of other rooms, mentions)

import { Composer } from "./composer.js";
import { MessageList } from "./messages.js";
import { People } from "./presence.js";
import { Alert, Status, UnreadTitle } from "./status.js";
import { cookie, socketUrl, userEvent } from "./site.js";
import { RoomSync } from "./sync.js";
import { Transport } from "./transport.js";

function start(root) {
  const me = root.dataset.user;
  const list = root.querySelector(".messages");
  const status = new Status(root.querySelector(".status"));
  const unread = new UnreadTitle();
  const announcer = root.querySelector("#announcer");
  const people = new People(root, me);
  const messages = new MessageList(root, {
    me,
    onNearTop: () => sync.loadOlder(),
    onNearEnd: () => {
      sync.changed();
      reads.check();
    },
    onExpand: (lo) => sync.expand(lo),
    onRetry: (ref) => sync.retry(ref),
    onEdit: (seq, body) => sync.edit(seq, body),
    onDelete: (seq) => sync.remove(seq),
    // Optional attributes: without them the server still refuses what the reader may not do.
    staff: root.dataset.staff === "1",
    editWindow: Number(root.dataset.editWindow || 900),
  });
  const alert = new Alert(root.querySelector(".alert"), () => connection.resume());

  const view = {
    show(batch, how) {
      messages.show(batch, how);
      if (how === "older" || how === "expand") return;
      queueMicrotask(() => reads.check()); // after the sync has counted the new seqs
      const theirs = batch.filter((m) => m.user !== me);
      for (const m of theirs) people.stopped(m.user);
      unread.add(theirs.length);
      if (theirs.length === 1) announcer.textContent = `${theirs[0].user}: ${theirs[0].body}`;
      else if (theirs.length > 1) announcer.textContent = `${theirs.length} new messages`;
    },
    pending: (ref, body) => messages.pending(ref, body),
    confirm: (ref) => messages.confirm(ref),
    failed: (ref, detail, canRetry) => messages.failed(ref, detail, canRetry),
    retrying: (ref) => messages.retrying(ref),
    removed: (seq) => messages.removed(seq),
    edited: (change) => messages.edited(change),
    deleted: (seq, inRange) => messages.deleted(seq, inRange),
    changeDone: (seq) => messages.changeDone(seq),
    changeFailed: (seq, detail) => messages.changeFailed(seq, detail),
    notice(body, key) {
      messages.notice(body, key);
      announcer.textContent = body;
    },
    gaps: (holes) => messages.gaps(holes),
    trim: (window, keepMost) => messages.trim(window, keepMost),
    cleared: () => messages.cleared(),
    presence(names, count) {
      people.set(names, count);
      people.stale(false);
    },
    presenceChange: (joined, left) => people.change(joined, left),
    typing: (user) => people.typing(user),
    joined() {
      connection.healthy();
      status.set("online");
      reads.reset();
      reads.check(); // joined at the bottom: what is on screen is read
      if (messages.nearTop()) sync.loadOlder(); // a short log: fill the screen
    },
    older(more, earlier) {
      messages.older(more, earlier);
      if (more && messages.nearTop()) sync.loadOlder();
    },
    refused(detail) {
      connection.stop();
      composer.disable();
      people.stale(true);
      status.set("offline");
      alert.show(detail, { reconnect: false });
    },
    joinFailed: () => connection.drop(),
  };

  const shown = messages.adopt();
  const sync = new RoomSync({
    room: list.dataset.room,
    me,
    seq: Number(list.dataset.seq),
    shown,
    more: list.dataset.more === "1",
    change: Number(list.dataset.change || 0), // the page's change seq, if the server wrote it
    send: (frame) => connection.send(frame),
    view,
  });
  messages.older(sync.seqs.olderMore, sync.seqs.floor - 1);
  const reads = new ReadReporter(sync, messages);

  const connection = new Transport({
    wsUrl: socketUrl(root.dataset.ws),
    httpPath: root.dataset.http || "/http/",
    // The cookie first: a sign-in in another tab rotates the token the page was rendered with.
    csrf: () => cookie("csrftoken") || root.dataset.csrf || "",
    // What a new HTTP stream needs to resume the page on any worker.
    rooms: () => (sync.joined ? { [sync.room]: sync.seqs.top } : {}),
  }, {
    open: () => sync.opened(),
    restream: (rooms) => sync.restreamed(rooms[sync.room]),
    via: (kind) => status.via(kind),
    // The user's own channel first: its events name other rooms too (site.js).
    frame: (frame) => userEvent(frame) || sync.handle(frame),
    state(state) {
      sync.disconnected();
      people.stale(true);
      status.set(state);
    },
    gaveUp(text) {
      // A close code that retrying can't fix (docs/protocol.md, section 1): ask the user.
      sync.disconnected();
      people.stale(true);
      status.set("offline");
      alert.show(text, { reconnect: true });
    },
    unauthorized() {
      // Signed out (or the session expired): log in, then come back to this room.
      status.set("offline", "Signed out");
      const here = location.pathname + location.search;
      location.assign(`${root.dataset.login}?next=${encodeURIComponent(here)}`);
    },
  });

  const composer = new Composer(root.querySelector(".composer"), {
    onSend: (body) => sync.submit(body),
    onTyping: () => sync.typing(),
  });
  composer.enable();
  connection.start();
}

const READ_EVERY = 1000; // ms: at most one `read` a second (it shares join's budget)

// Tells the server how far the reader has seen the room: the newest seq, once it is on screen
// (the log at its bottom, the tab visible). Never the same seq twice; again after a reconnect.
class ReadReporter {
  constructor(sync, messages) {
    this.sync = sync;
    this.messages = messages;
    this.sent = 0; // the newest seq reported on this connection
    this.last = 0; // when (performance.now())
    this.timer = null;
    document.addEventListener("visibilitychange", () => this.check());
  }

  reset() {
    this.sent = 0;
  }

  check() {
    const seq = this.sync.seqs.top;
    if (!this.sync.joined || document.hidden || seq <= this.sent || !this.messages.nearEnd()) return;
    const wait = this.last + READ_EVERY - performance.now();
    if (wait > 0) {
      if (!this.timer) this.timer = setTimeout(() => { this.timer = null; this.check(); }, wait);
      return;
    }
    if (this.sync.send({ type: "read", room: this.sync.room, seq })) {
      this.sent = seq;
      this.last = performance.now();
    }
  }
}

const root = document.getElementById("room");
if (root) start(root);
