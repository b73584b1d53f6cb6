// The room page: reads the data- attributes the template wrote and wires the connection, the
// room's sync state and the views together. Each module does one thing:
//   connection.js  the socket and its reconnects     sync.js      the protocol for one room
//   messages.js    the message log                   composer.js  the message box
//   presence.js    who is here and who is typing     status.js    connection state, title

import { Composer } from "./composer.js";
import { Connection } from "./connection.js";
import { MessageList } from "./messages.js";
import { People } from "./presence.js";
import { Status, UnreadTitle } from "./status.js";
import { RoomSync } from "./sync.js";

function socketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function start(root) {
  const me = root.dataset.user;
  const list = root.querySelector(".messages");
  const status = new Status(root.querySelector(".status"));
  const unread = new UnreadTitle();
  const announcer = root.querySelector("#announcer");
  const people = new People(root, me);
  const messages = new MessageList(root, { me, onNearTop: () => sync.loadOlder() });

  const view = {
    show(batch, how) {
      messages.show(batch, how);
      if (how === "older") return;
      const theirs = batch.filter((m) => m.user !== me);
      for (const m of theirs) people.stopped(m.user);
      unread.add(theirs.length);
      if (theirs.length === 1) announcer.textContent = `${theirs[0].user}: ${theirs[0].body}`;
      else if (theirs.length > 1) announcer.textContent = `${theirs.length} new messages`;
    },
    pending: (ref, body) => messages.pending(ref, body),
    confirm: (ref) => messages.confirm(ref),
    failed: (ref, detail) => messages.failed(ref, detail),
    removed: (seq) => messages.removed(seq),
    notice(body) {
      messages.notice(body);
      announcer.textContent = body;
    },
    presence(names) {
      people.set(names);
      people.stale(false);
    },
    presenceChange: (joined, left) => people.change(joined, left),
    typing: (user) => people.typing(user),
    joined() {
      connection.healthy();
      status.set("online");
      if (messages.nearTop()) sync.loadOlder(); // a short log: fill the screen
    },
    older(more) {
      messages.older(more);
      if (more && messages.nearTop()) sync.loadOlder();
    },
    refused(detail) {
      connection.stop();
      status.set("offline", detail);
    },
    joinFailed: () => connection.drop(),
  };

  const sync = new RoomSync({
    room: list.dataset.room,
    me,
    seq: Number(list.dataset.seq),
    shown: messages.adopt(),
    more: list.dataset.more === "1",
    send: (frame) => connection.send(frame),
    view,
  });

  const connection = new Connection(socketUrl(root.dataset.ws), {
    open: () => sync.opened(),
    frame: (frame) => sync.handle(frame),
    state(state) {
      sync.reset();
      people.stale(true);
      status.set(state);
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

const root = document.getElementById("room");
if (root) start(root);
