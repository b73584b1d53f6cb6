// The message box: Enter sends, Shift+Enter starts a new line, typing is signalled at most
// every 2 seconds. The body goes out exactly as typed.

const TYPING_EVERY = 2000; // ms between two typing signals

export class Composer {
  // onSend(body), onTyping()
  constructor(form, { onSend, onTyping }) {
    this.form = form;
    this.field = form.elements.body;
    this.onSend = onSend;
    this.onTyping = onTyping;
    this.lastTyping = 0;
    // The page shows this hint only to the script: without it, Enter starts a new line.
    const hint = form.querySelector("#composer-hint");
    hint.hidden = false;
    this.field.setAttribute("aria-describedby", hint.id);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.field.addEventListener("keydown", (event) => {
      // isComposing: Enter that ends an IME composition is not a send.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.field.addEventListener("input", () => {
      const now = Date.now();
      if (this.field.value.trim() && now - this.lastTyping >= TYPING_EVERY) {
        this.lastTyping = now;
        this.onTyping();
      }
    });
  }

  enable() {
    this.form.querySelector("fieldset").disabled = false;
  }

  disable() {
    this.form.querySelector("fieldset").disabled = true;
  }

  submit() {
    const body = this.field.value;
    if (!body.trim()) return; // the protocol refuses bodies of only white space
    this.onSend(body);
    this.field.value = "";
    this.lastTyping = 0; // the next keystroke is a new bout of typing
    this.field.focus();
  }
}
