// Small DOM helpers shared by the views.

// An element `tag` holding `text` (as text, never HTML), with `className` when given.
export function part(tag, text, className) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  el.textContent = text;
  return el;
}
