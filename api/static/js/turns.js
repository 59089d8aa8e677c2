// One turn of the conversation on the page: the prompt, its progress as the run's events arrive, the
// images in a grid, and chips for the adapters it picked.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const fmt = (weight) => (weight === null || weight === undefined ? "default" : Number(weight).toFixed(2).replace(/\.?0+$/, ""));

// A progress event as a line of text (null: not shown as a line).
export function describe(event, data) {
  switch (event) {
    case "run":
      return "Run started";
    case "plan": {
      const head = data.follow_up ? "Refining the plan" : "Planning";
      const edit = data.edit ? ` (${data.edit.mask ? "inpainting" : "image-to-image"} at strength ${data.edit.strength})` : "";
      return `${head}: ${data.tasks.join("; ") || "the whole prompt"}${edit}`;
    }
    case "candidates":
      return "Retrieved candidates: " + Object.entries(data.counts).map(([task, n]) => `${task} ${n}`).join(", ");
    case "picks": {
      const picks = Object.entries(data.adapters || {}).flatMap(([task, items]) =>
        items.map((p) => `${p.name} ×${fmt(p.weight)} for “${task}” (${p.reason})`));
      return `Picked (${data.planner}): ${picks.join("; ") || "no adapters, the base model alone"}`;
    }
    case "mixes":
      return `Composing ${data.distinct} distinct mix(es) for ${data.images} image(s)`;
    case "inspection":
      return `Inspection (${data.stage}): ${data.findings.join("; ")}`;
    case "retry":
      return `Retrying (attempt ${data.attempt + 1})` + (data.dropped?.length ? `, dropping adapter(s) ${data.dropped.join(", ")}` : "");
    case "images":
      return `Made ${data.paths.length} image(s), ${data.nfe} model evaluations`;
    default:
      return null;
  }
}

export class Turn {
  constructor(container, prompt, { onOpenImage, chips }) {
    this.onOpenImage = onOpenImage;
    this.chips = chips;
    this.events = el("ol", { class: "events", "aria-live": "polite" });
    this.sampling = el("progress", { max: "1", value: "0", "aria-label": "Sampling steps", hidden: true });
    this.samplingText = el("span", { class: "sampling-text" });
    this.grid = el("ul", { class: "grid", "aria-label": "Images" });
    this.answer = el("p", { class: "answer" });
    this.chipBox = el("div", { class: "chips", role: "group", "aria-label": "Adapters picked" });
    this.timing = el("p", { class: "timing" });
    this.error = el("p", { class: "error", role: "alert", hidden: true });
    this.node = el("article", { class: "turn", "aria-label": `Turn: ${prompt}` },
      el("p", { class: "you" }, el("span", { class: "who", text: "You" }), el("span", { class: "prompt", text: prompt })),
      el("details", { class: "progress", open: true }, el("summary", { text: "Progress" }), this.events,
        el("p", { class: "sampling" }, this.sampling, this.samplingText)),
      this.error, this.grid, this.answer, this.chipBox, this.timing);
    container.append(this.node);
  }

  // Follow a run's events; resolves with the final result (the done event's data).
  async follow(events, started) {
    let result = null;
    for await (const { event, data } of events) {
      if (this.firstEventMs === undefined) this.mark("firstEventMs", started);
      if (event === "plan") this.mark("planMs", started);
      if (event === "progress") {
        this.showStep(data.step, data.steps);
        continue;
      }
      if (event === "done") {
        result = data;
        break;
      }
      if (event === "error") throw new Error(data.error?.message || "the run failed");
      const line = describe(event, data);
      if (line) this.events.append(el("li", { class: `event event-${event}`, text: line }));
    }
    if (!result) throw new Error("the connection closed before the run finished");
    await this.showResult(result);
    this.mark("imagesMs", started);
    this.timing.textContent = `First event after ${(this.firstEventMs / 1000).toFixed(2)} s, last image after ${(this.imagesMs / 1000).toFixed(2)} s`;
    return result;
  }

  mark(name, started) {
    this[name] = Math.round(performance.now() - started);
    this.node.dataset[name] = String(this[name]);
  }

  showStep(step, steps) {
    this.sampling.hidden = false;
    this.sampling.max = steps;
    this.sampling.value = step;
    this.samplingText.textContent = `Sampling step ${step}/${steps}`;
    if (!this.events.querySelector(".event-progress")) {
      this.events.append(el("li", { class: "event event-progress", text: "Sampling started" }));
    }
  }

  fail(message) {
    this.error.textContent = message;
    this.error.hidden = false;
    this.node.dataset.status = "failed";
  }

  // The run's images, answer and picked adapters; resolves when every image has loaded.
  async showResult(run) {
    this.node.dataset.runId = run.run_id || run.id;
    this.node.dataset.status = "done";
    const images = run.images.map((image, i) => {
      const img = el("img", { src: image.url, alt: `Image ${i + 1}, seed ${image.seed}`, width: "160", height: "160" });
      this.grid.append(el("li", {}, el("button", {
        type: "button", class: "thumb", "data-image-id": image.id, title: "Open: parameters, adapters, download",
        onclick: () => this.onOpenImage(image.id),
      }, img)));
      return img.decode().catch(() => null);
    });
    if (run.answer) this.answer.textContent = run.answer.split("\n")[0];
    this.chips.render(this.chipBox, run.picks || {});
    await Promise.all(images);
  }
}
