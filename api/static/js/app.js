// The studio page: a chat whose turns stream their progress and end in images, with history, a catalog,
// hand edits of the picked adapters, image edits with a painted mask, and the caller's API key.

import { ApiError, apiKey, request, streamRun } from "./api.js";
import { AdapterEdits } from "./chips.js";
import { ImageDialog } from "./image-dialog.js";
import { MaskPainter } from "./mask.js";
import { Catalog, History } from "./panels.js";
import { Turn, el } from "./turns.js";

const $ = (id) => document.getElementById(id);
const state = { threadId: null, busy: false, edit: null, strengthTouched: false };

const edits = new AdapterEdits($("pending"));
const dialog = new ImageDialog($("image-dialog"), {
  onReuseSeed: (seed) => {
    $("seed").value = String(seed);
    say(`The next turn uses seed ${seed}.`);
    $("prompt").focus();
  },
  onEdit: (image) => startEditing(image.url, `image ${image.id.slice(0, 8)}`),
  onError: showError,
});
const history = new History($("thread-list"), $("more-threads"), (id) => openThread(id).catch(showError));
new Catalog($("catalog-search"), $("catalog-q"), $("catalog-results"), edits, showError);
const painter = new MaskPainter($("mask-canvas"), $("mask-cursor"), $("brush"), (coverage) => {
  $("mask-coverage").textContent = coverage
    ? `${Math.round(coverage * 100)}% of the image marked for repainting (inpainting).`
    : "No mask painted: the whole image changes (image-to-image).";
});

function say(text) {
  $("status").textContent = text;
}

function showError(error) {
  if (error instanceof ApiError && error.status === 401) askForKey(error.message);
  else say(error.message || String(error));
}

// --- the API key ---------------------------------------------------------------------------------
function askForKey(message = "") {
  $("key-error").textContent = message;
  $("key-input").value = "";
  if (!$("key-dialog").open) $("key-dialog").showModal();
}

$("show-key").addEventListener("click", () => askForKey(apiKey.get() ? "A key is saved in this browser." : ""));
$("key-dialog").addEventListener("close", () => {
  const choice = $("key-dialog").returnValue;
  if (choice === "save" && $("key-input").value.trim()) apiKey.set($("key-input").value.trim());
  else if (choice === "forget") apiKey.set("");
  else return;
  newThread();
  boot();
});

// --- threads -------------------------------------------------------------------------------------
function setThread(id) {
  state.threadId = id;
  window.history.replaceState(null, "", id ? `#thread=${encodeURIComponent(id)}` : window.location.pathname);
}

function newThread() {
  setThread(null);
  $("turns").replaceChildren();
  $("kept").textContent = "";
  edits.clear();
  stopEditing();
}

function newTurn(prompt) {
  return new Turn($("turns"), prompt, { onOpenImage: (id) => dialog.open(id), chips: edits });
}

function showKept(plan) {
  const kept = plan?.edits;
  const parts = kept ? [
    kept.pinned.length && `pinned ${kept.pinned.join(", ")}`,
    kept.excluded.length && `excluded ${kept.excluded.join(", ")}`,
    kept.excluded_terms.length && `dropped “${kept.excluded_terms.join("”, “")}”`,
  ].filter(Boolean) : [];
  $("kept").textContent = parts.length ? `This thread keeps: ${parts.join("; ")}.` : "";
}

async function openThread(id) {
  const thread = await request("GET", `/threads/${encodeURIComponent(id)}`);
  newThread();
  setThread(thread.id);
  for (const run of thread.runs) {
    const turn = newTurn(run.prompt);
    turn.events.append(el("li", { class: "event", text: `${run.status}; planner ${run.planner || "?"}; ${run.nfe ?? 0} model evaluations` }));
    if (run.error) turn.fail(run.error);
    turn.showResult(run);
  }
  showKept(thread.plan);
  say(`Opened thread ${thread.id} (${thread.runs.length} turn(s)).`);
}

// --- sending a turn ------------------------------------------------------------------------------
async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (state.busy || !prompt) return;
  state.busy = true;
  $("send").disabled = true;
  const started = performance.now();
  const turn = newTurn(prompt);
  turn.node.scrollIntoView({ block: "end" });
  try {
    if (!state.threadId) setThread((await request("POST", "/threads", {})).id);
    const body = { message: prompt, n: Number($("n").value), ...edits.body() };
    if ($("seed").value !== "") body.seed = Number($("seed").value);
    if (state.edit) {
      body.image = state.edit;
      const mask = painter.toDataURL();
      if (mask) body.mask = mask;
      if (state.strengthTouched) body.strength = Number($("strength").value);
    }
    const result = await turn.follow(streamRun(state.threadId, body), started);
    $("prompt").value = "";
    edits.clear();
    stopEditing();
    showKept(result.plan);
    say(`Done: ${result.images.length} image(s).`);
    history.load().catch(() => {});
  } catch (error) {
    turn.fail(error.message || String(error));
    if (error instanceof ApiError && error.status === 401) askForKey(error.message);
  } finally {
    state.busy = false;
    $("send").disabled = false;
  }
}

$("composer").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("composer").requestSubmit();
});
$("new-thread").addEventListener("click", () => {
  newThread();
  say("New thread: the next prompt starts it.");
  $("prompt").focus();
});

// --- editing an image ----------------------------------------------------------------------------
async function startEditing(url, label) {
  const image = $("edit-image");
  image.src = url;
  await image.decode();
  state.edit = url;
  state.strengthTouched = false;
  $("strength-out").textContent = "default";
  painter.reset(image.naturalWidth, image.naturalHeight);
  $("edit-source").textContent = `Editing ${label} (${image.naturalWidth}×${image.naturalHeight}).`;
  $("edit-area").hidden = false;
  $("mask-canvas").focus();
}

function stopEditing() {
  state.edit = null;
  $("edit-area").hidden = true;
  $("edit-file").value = "";
}

$("attach").addEventListener("click", () => {
  $("edit-area").hidden = false;
  $("edit-file").focus();
});
$("edit-file").addEventListener("change", () => {
  const file = $("edit-file").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => startEditing(reader.result, file.name).catch(() => say(`${file.name} is not an image this browser can read.`));
  reader.readAsDataURL(file);
});
$("edit-cancel").addEventListener("click", stopEditing);
$("mask-all").addEventListener("click", () => painter.fill());
$("mask-invert").addEventListener("click", () => painter.invert());
$("mask-clear").addEventListener("click", () => painter.clear());
$("strength").addEventListener("input", () => {
  state.strengthTouched = true;
  $("strength-out").textContent = $("strength").value;
});

// --- panels --------------------------------------------------------------------------------------
for (const [button, panel, onOpen] of [["show-history", "history", () => history.load()], ["show-catalog", "catalog", () => $("catalog-q").focus()]]) {
  $(button).addEventListener("click", () => {
    const open = $(panel).hidden;
    $(panel).hidden = !open;
    $(button).setAttribute("aria-expanded", String(open));
    if (open) Promise.resolve(onOpen()).catch(showError);
  });
}

// --- start ---------------------------------------------------------------------------------------
// The thread the address names (#thread=ID), opened unless it is already the current one.
async function openWanted() {
  const wanted = new URLSearchParams(window.location.hash.slice(1)).get("thread");
  if (wanted && wanted !== state.threadId) await openThread(wanted);
}

async function boot() {
  try {
    await history.load();
    await openWanted();
    document.body.dataset.ready = "true";
  } catch (error) {
    showError(error);
  }
}

window.addEventListener("hashchange", () => openWanted().catch(showError));
boot();
