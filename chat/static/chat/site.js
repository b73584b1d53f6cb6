// Every page's link to the user's own channel (docs/protocol.md, "Read markers and unread
// counts"): `unread` events keep the room lists' counts live when another tab or device reads
// a room. On the room page main.js hands its events here (its connection is the page's one);
// on every other page this module opens a Transport of its own, joined to no room.

import { Transport } from "./transport.js";

const USER_EVENTS = new Set(["unread"]);

function socketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function cookie(name) {
  const found = document.cookie.split("; ").find((pair) => pair.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
}

// A room's unread count, wherever the page lists it.
function showUnread(frame) {
  for (const badge of document.querySelectorAll("[data-unread-room]")) {
    if (badge.dataset.unreadRoom !== frame.room) continue;
    badge.textContent = `${frame.count}${frame.more ? "+" : ""}`;
    badge.hidden = frame.count === 0;
  }
}

// Handle an event of the user's channel; false for any other event (the caller's).
export function userEvent(frame) {
  if (!USER_EVENTS.has(frame.type)) return false;
  if (frame.type === "unread") showUnread(frame);
  return true;
}

// A page without a room: a connection for the user's channel only. It asks `whoami` on each
// open, so that the socket carries a frame (a silent one counts as blocked: transport.js).
function listen(channel) {
  const transport = new Transport({
    wsUrl: socketUrl(channel.dataset.ws),
    httpPath: channel.dataset.http || "/http/",
    csrf: () => cookie("csrftoken") || channel.dataset.csrf || "",
    rooms: () => ({}),
  }, {
    open: () => transport.send({ type: "whoami" }),
    restream() {},
    via() {},
    frame(frame) {
      if (frame.type !== "whoami") userEvent(frame);
      else {
        transport.healthy();
        channel.dataset.state = "online"; // for the curious (and the tests)
      }
    },
    state() {},
    gaveUp() {}, // the counts stay as rendered; the next page load tries again
    unauthorized() {},
  });
  transport.start();
}

const channel = document.getElementById("user-channel");
if (channel && !document.getElementById("room")) listen(channel);
