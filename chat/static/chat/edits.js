// Edit and delete on the message list (docs/protocol.md, "Edit and delete"): the Edit and Delete
// actions, the inline editor (Enter saves, Escape cancels), the "(edited)" mark, and the state
// of a change on its way. The server has the last word on who may change what.

import { part } from "./dom.js";

const EDITED = "(edited)";
const dated = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export class Editing {
  // list: the <ol> of messages; staff: every message gets the actions; editWindow: seconds own
  // messages get them; onEdit(seq, body), onDelete(seq): the reader saved an edit, or deleted.
  constructor(list, { staff = false, editWindow = 900, onEdit, onDelete }) {
    this.list = list;
    this.staff = staff;
    this.editWindow = editWindow;
    this.onEdit = onEdit;
    this.onDelete = onDelete;
    list.addEventListener("click", (event) => this.clickedAction(event.target.closest(".actions button, .editor button")));
    list.addEventListener("keydown", (event) => this.editorKey(event));
  }

  byseq(seq) {
    return this.list.querySelector(`li.msg[data-seq="${Number(seq)}"]`);
  }

  // Edit and Delete for own messages still in the window (the server has the last word), and
  // for every message when the reader is staff.
  addActions(li, mine, ts) {
    const age = (Date.now() - new Date(ts).getTime()) / 1000;
    if (!this.staff && !(mine && age < this.editWindow)) return;
    const actions = part("span", "", "actions");
    for (const [name, label] of [["edit", "Edit"], ["delete", "Delete"]]) {
      const button = part("button", label, `link ${name}`);
      button.type = "button";
      actions.append(button, " ");
    }
    li.querySelector("time").after(" ", actions); // on the first line, the body below
  }

  clickedAction(button) {
    if (!button) return;
    const li = button.closest("li.msg");
    const seq = Number(li.dataset.seq);
    if (button.classList.contains("edit")) this.openEditor(li);
    else if (button.classList.contains("delete")) {
      this.changing(li, "deleting…");
      this.onDelete(seq);
    } else if (button.classList.contains("save")) this.saveEdit(li);
    else if (button.classList.contains("cancel")) this.closeEditor(li);
  }

  editorKey(event) {
    const li = event.target.closest("li.msg.editing");
    if (!li || event.isComposing) return;
    if (event.key === "Escape") {
      event.preventDefault();
      this.closeEditor(li);
    } else if (event.key === "Enter" && !event.shiftKey && event.target.tagName === "TEXTAREA") {
      event.preventDefault();
      this.saveEdit(li);
    }
  }

  openEditor(li) {
    if (li.classList.contains("editing")) return;
    li.classList.add("editing");
    const editor = part("span", "", "editor");
    const field = document.createElement("textarea");
    field.rows = 2;
    field.value = li.querySelector(".body").textContent;
    field.setAttribute("aria-label", "Edit message");
    const save = part("button", "Save", "save");
    const cancel = part("button", "Cancel", "link cancel");
    save.type = cancel.type = "button";
    editor.append(field, " ", save, " ", cancel, " ", part("span", "", "change-state"));
    li.append(editor);
    field.focus();
  }

  saveEdit(li) {
    const field = li.querySelector(".editor textarea");
    const body = field.value;
    if (!body.trim()) return; // the protocol refuses bodies of only white space
    if (body === li.querySelector(".body").textContent) {
      this.closeEditor(li);
      return;
    }
    this.changing(li, "saving…");
    this.onEdit(Number(li.dataset.seq), body);
  }

  closeEditor(li) {
    li.classList.remove("editing");
    li.querySelector(".editor")?.remove();
  }

  changing(li, text) {
    li.classList.add("changing");
    for (const el of li.querySelectorAll(".editor textarea, .editor button, .actions button")) el.disabled = true;
    this.stateOf(li).textContent = text;
  }

  stateOf(li) {
    return li.querySelector(".editor .change-state") || li.querySelector(".change-state")
      || li.appendChild(part("span", "", "change-state"));
  }

  // The server took our edit or deletion of message seq (its event comes separately).
  changeDone(seq) {
    const li = this.byseq(seq);
    if (!li) return;
    this.closeEditor(li);
    this.unchanging(li, "");
  }

  // The server refused it (or the connection went): say why, and let the reader try again.
  changeFailed(seq, detail) {
    const li = this.byseq(seq);
    if (li) this.unchanging(li, detail);
  }

  unchanging(li, text) {
    li.classList.remove("changing");
    for (const el of li.querySelectorAll(".editor textarea, .editor button, .actions button")) el.disabled = false;
    const state = this.stateOf(li);
    state.textContent = text;
    if (!text) state.remove();
  }

  markEdited(li, edited, change) {
    let mark = li.querySelector(".edited");
    if (!mark) {
      mark = part("span", EDITED, "edited");
      li.querySelector("time").after(" ", mark);
    }
    const when = new Date(edited);
    if (!Number.isNaN(when.getTime())) mark.title = `edited ${dated.format(when)}`;
    li.dataset.change = change || 0;
  }

  // Message `seq` now reads `body` (a message_edited event, or a newer copy of the message).
  // Changes come out of order across workers: only a newer one than the shown is applied.
  edited({ seq, body, edited, change }) {
    const li = this.byseq(seq);
    if (!li || Number(li.dataset.change || 0) >= change) return;
    li.querySelector(".body").textContent = body;
    this.markEdited(li, edited, change);
  }
}
