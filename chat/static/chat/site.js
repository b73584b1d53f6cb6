// Every page's link to the user's own channel (docs/protocol.md, "Read markers and unread
// counts" and "Mentions"): `unread` events keep the room lists' counts live when another tab
// or device reads a room, and the header's badge of unseen mentions; `mention` events add to
// the badge and, when the user asked for it and the page is hidden, show a notification. On
// the room page main.js hands its events here (its connection is the page's one); on every
// other page this module opens a Transport of its own, joined to no room.

import { Transport } from "./transport.js";

const USER_EVENTS = new Set(["unread", "mention"]);

export function socketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export function cookie(name) {
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

// The header's badge: how many mentions of the user are unseen, linking to the newest.
function showMentions(count, link) {
  const badge = document.querySelector(".user-channel .mentions");
  if (!badge) return;
  badge.querySelector(".mentions-count").textContent = String(count);
  badge.hidden = count <= 0;
  if (link) badge.href = link;
}

function mentionCount() {
  const shown = document.querySelector(".user-channel .mentions-count");
  return shown ? Number(shown.textContent) || 0 : 0;
}

function mentioned(frame) {
  const link = `/rooms/${encodeURIComponent(frame.room)}/#m${Number(frame.seq)}`;
  showMentions(mentionCount() + 1, link);
  // Only when the user said yes, and only when they can't see the page anyway.
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  const note = new Notification(`${frame.by} mentioned you`, { body: frame.body, tag: `mention-${frame.id}` });
  note.onclick = () => {
    window.focus();
    location.assign(link);
  };
}

// Handle an event of the user's channel; false for any other event (the caller's).
export function userEvent(frame) {
  if (!USER_EVENTS.has(frame.type)) return false;
  if (frame.type === "unread") {
    showUnread(frame);
    if (typeof frame.mentions === "number") showMentions(frame.mentions);
  } else {
    mentioned(frame);
  }
  return true;
}

// "Notify me of mentions": offered while the browser has not been asked, never asked unasked.
function offerNotifications() {
  const button = document.querySelector(".user-channel .notify");
  if (!button || !("Notification" in window) || Notification.permission !== "default") return;
  button.hidden = false;
  button.addEventListener("click", () => {
    Notification.requestPermission().then(() => {
      button.hidden = Notification.permission !== "default";
    });
  });
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
if (channel) offerNotifications();
if (channel && !document.getElementById("room")) listen(channel);
