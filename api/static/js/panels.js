// The side panels: the caller's threads, most recent first (open one to continue it), and the catalog's
// search (pin or exclude an adapter for the next turn).

import { request } from "./api.js";
import { el } from "./turns.js";

export class History {
  constructor(list, more, onOpen) {
    this.list = list;
    this.more = more;
    this.onOpen = onOpen;
    this.next = 0;
    more.addEventListener("click", () => this.load(this.next));
  }

  async load(offset = 0) {
    const page = await request("GET", `/threads?limit=20&offset=${offset}`);
    if (offset === 0) this.list.replaceChildren();
    for (const thread of page.threads) {
      const when = new Date(thread.updated_at).toLocaleString();
      this.list.append(el("li", {}, el("button", { type: "button", class: "thread", "data-thread-id": thread.id,
        onclick: () => this.onOpen(thread.id) },
        thread.cover_url ? el("img", { src: thread.cover_url, alt: "", width: "48", height: "48" }) : el("span", { class: "no-cover" }),
        el("span", { class: "thread-text" },
          el("span", { class: "thread-title", text: thread.title || "(no turns yet)" }),
          el("span", { class: "muted", text: `${thread.turns} turn(s), ${thread.images} image(s), ${when}` })))));
    }
    if (!this.list.children.length) this.list.append(el("li", { class: "muted", text: "No threads yet." }));
    this.next = page.next_offset;
    this.more.hidden = page.next_offset === null;
  }
}

export class Catalog {
  constructor(form, input, results, edits, onError) {
    this.results = results;
    this.edits = edits;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await this.search(input.value.trim());
      } catch (error) {
        onError(error);
      }
    });
  }

  async search(query) {
    if (!query) return;
    const hits = await request("GET", `/adapters/search?q=${encodeURIComponent(query)}&k=20`);
    this.results.replaceChildren(...hits.map((hit) => el("li", { class: "hit", "data-ref": hit.ref },
      el("span", { class: "hit-name", text: hit.name }),
      el("span", { class: "muted", text: [hit.base_model, hit.tags.slice(0, 4).join(", ")].filter(Boolean).join(" · ") }),
      hit.trigger_words.length ? el("span", { class: "muted", text: `Trigger: ${hit.trigger_words.join(", ")}` }) : null,
      el("span", { class: "hit-actions" }, ...this.edits.buttons(hit.ref, hit.name)))));
    if (!hits.length) this.results.append(el("li", { class: "muted", text: "Nothing found." }));
  }
}
