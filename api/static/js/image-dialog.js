// An image explains itself: its A1111 parameters, seed and NFE, the adapters of its mix (weight, task,
// trigger words, why, catalog page), and buttons to reuse the seed, download the PNG or edit from it.

import { request } from "./api.js";
import { el } from "./turns.js";

export class ImageDialog {
  constructor(dialog, { onReuseSeed, onEdit, onError }) {
    this.dialog = dialog;
    this.onReuseSeed = onReuseSeed;
    this.onEdit = onEdit;
    this.onError = onError;
    this.$ = (selector) => dialog.querySelector(selector);
    this.$(".close").addEventListener("click", () => dialog.close());
    this.$("#reuse-seed").addEventListener("click", () => {
      this.onReuseSeed(this.image.turn_seed);
      dialog.close();
    });
    this.$("#edit-from").addEventListener("click", () => {
      this.onEdit(this.image);
      dialog.close();
    });
  }

  async open(imageId) {
    try {
      this.image = await request("GET", `/images/${encodeURIComponent(imageId)}`);
    } catch (error) {
      this.onError(error);
      return;
    }
    const image = this.image;
    this.dialog.dataset.imageId = image.id;
    Object.assign(this.$("#image-large"), { src: image.url, alt: `The image, seed ${image.seed}` });
    this.$("#image-prompt").textContent = image.prompt;
    this.$("#image-seed").textContent = `${image.seed} (its turn's seed: ${image.turn_seed})`;
    this.$("#image-nfe").textContent = String(image.nfe);
    this.$("#image-edit").textContent = image.edit ? `${image.edit.mode} at strength ${image.edit.strength}` : "none (drawn from the prompt)";
    this.$("#image-parameters").textContent = image.parameters;
    const download = this.$("#download");
    download.href = image.url;
    download.download = `loracle-${image.id}.png`;
    const rows = image.adapters.map((a) => el("tr", { "data-ref": a.ref || "" },
      el("th", { scope: "row" }, a.page ? el("a", { href: a.page, target: "_blank", rel: "noopener noreferrer", text: a.name }) : a.name),
      el("td", { class: "num", text: String(a.weight) }),
      el("td", { text: a.task || "" }),
      el("td", { text: a.trigger_words.join(", ") }),
      el("td", { text: a.reason || "" })));
    this.$("#image-adapters tbody").replaceChildren(...rows);
    this.$("#image-no-adapters").hidden = rows.length > 0;
    if (!this.dialog.open) this.dialog.showModal();
  }
}
