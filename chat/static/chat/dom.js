// Small DOM helpers shared by the views.

// An element `tag` holding `text` (as text, never HTML), with `className` when given.
export function part(tag, text, className) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  el.textContent = text;
  return el;
}

// `@username` as chat/mentions.py finds it: Django's username characters but "@", not right
// after a letter, digit or "@" (so an e-mail address mentions nobody); trailing . + - dropped.
const MENTION = /(?<![\p{L}\p{N}_@])@([\p{L}\p{N}_.+-]{1,150})/gu;

// Mark the mentions in a body's text: its text nodes split around <mark>s, never any HTML.
export function highlightMentions(span, me) {
  const text = span.textContent;
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(MENTION)) {
    const name = match[1].replace(/[.+-]+$/u, "");
    if (!name) continue;
    const end = match.index + 1 + name.length;
    parts.push(text.slice(at, match.index), part("mark", text.slice(match.index, end),
      name === me ? "mention me" : "mention"));
    at = end;
  }
  if (parts.length) span.replaceChildren(...parts, text.slice(at));
}
