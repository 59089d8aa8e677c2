// Steering adapters by hand: chips for the adapters a turn picked (and buttons in the catalog) add pins,
// exclusions and weights to the next turn's request; the server keeps them for the thread's later turns.

import { el } from "./turns.js";

export class AdapterEdits {
  constructor(pendingBox) {
    this.pendingBox = pendingBox;
    this.clear();
  }

  clear() {
    this.names = new Map();
    this.pinned = new Set();
    this.excluded = new Set();
    this.weights = new Map();
    this.update();
  }

  // What the next run request carries.
  body() {
    return { pin: [...this.pinned], exclude: [...this.excluded], weights: Object.fromEntries(this.weights) };
  }

  toggle(kind, ref, name) {
    this.names.set(ref, name);
    const [mine, other] = kind === "pin" ? [this.pinned, this.excluded] : [this.excluded, this.pinned];
    if (mine.has(ref)) mine.delete(ref);
    else {
      mine.add(ref);
      other.delete(ref);
    }
    this.update();
  }

  setWeight(ref, name, value) {
    this.names.set(ref, name);
    if (Number.isFinite(value)) this.weights.set(ref, value);
    else this.weights.delete(ref);
    this.update();
  }

  buttons(ref, name) {
    return [
      el("button", { type: "button", class: "chip-pin", "aria-pressed": String(this.pinned.has(ref)), "data-ref": ref,
        "aria-label": `Pin ${name}`, text: "Pin", onclick: () => this.toggle("pin", ref, name) }),
      el("button", { type: "button", class: "chip-exclude", "aria-pressed": String(this.excluded.has(ref)), "data-ref": ref,
        "aria-label": `Exclude ${name}`, text: "Exclude", onclick: () => this.toggle("exclude", ref, name) }),
    ];
  }

  // One chip per picked adapter: its name, task and weight, and pin / exclude toggles.
  render(box, picks) {
    box.replaceChildren();
    for (const [task, items] of Object.entries(picks)) {
      for (const pick of items) {
        const weight = el("input", { type: "number", step: "0.05", min: "-4", max: "4", value: String(pick.weight ?? ""),
          "aria-label": `Weight of ${pick.name}`, "data-ref": pick.ref,
          onchange: (e) => this.setWeight(pick.ref, pick.name, e.target.value === "" ? NaN : Number(e.target.value)) });
        box.append(el("div", { class: "chip", "data-ref": pick.ref, title: pick.reason || "" },
          el("span", { class: "chip-name", text: pick.name }),
          el("span", { class: "chip-task", text: task }),
          el("label", { class: "chip-weight" }, "×", weight),
          ...this.buttons(pick.ref, pick.name)));
      }
    }
    if (!box.children.length) box.append(el("p", { class: "muted", text: "No adapters: the base model alone." }));
  }

  // Reflect the pending edits on every chip and in the list above the prompt.
  update() {
    for (const button of document.querySelectorAll("button.chip-pin, button.chip-exclude")) {
      const set = button.classList.contains("chip-pin") ? this.pinned : this.excluded;
      button.setAttribute("aria-pressed", String(set.has(button.dataset.ref)));
    }
    const items = [
      ...[...this.pinned].map((ref) => ["pin", ref, `pin ${this.names.get(ref)}`]),
      ...[...this.excluded].map((ref) => ["exclude", ref, `exclude ${this.names.get(ref)}`]),
      ...[...this.weights].map(([ref, w]) => ["weight", ref, `${this.names.get(ref)} at ×${w}`]),
    ];
    this.pendingBox.replaceChildren();
    if (!items.length) return;
    this.pendingBox.append(el("span", { text: "Next turn: " }));
    for (const [kind, ref, label] of items) {
      this.pendingBox.append(el("span", { class: "pending-item", "data-kind": kind, "data-ref": ref }, label,
        el("button", { type: "button", class: "link", "aria-label": `Undo: ${label}`, text: "undo", onclick: () => {
          if (kind === "weight") this.setWeight(ref, this.names.get(ref), NaN);
          else this.toggle(kind, ref, this.names.get(ref));
        } })));
    }
  }
}
