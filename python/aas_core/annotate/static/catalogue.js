// aas catalogue: the identities so far, with names, checks, merges and splits. Plain JS.
"use strict";

let identities = [];
const selected = new Map(); // identity number -> Set of selected image indices

// every change is recorded with the annotator's name
const post = (url, body) => api("POST", url, { ...(body || {}), annotator: annotator() });

function numberOf(text) {
  // "NY-0012", "ny-12", "12" or a name -> the identity's number, or null
  const t = text.trim();
  const m = /^(?:[a-z]+-)?0*(\d+)$/i.exec(t);
  if (m) return Number(m[1]);
  const hit = identities.find((i) => i.name.toLowerCase() === t.toLowerCase());
  return hit ? hit.number : null;
}

const STATUS_CLASS = {
  verified: "status-verified",
  "partly verified": "status-partly",
  proposed: "status-proposed",
};

function evidenceText(ident) {
  if (ident.status === "verified")
    return `verified: all ${ident.size} photos joined by “same” answers`;
  if (ident.status === "partly verified")
    return `partly verified: ${ident.verified} of ${ident.size} photos joined by answers, ` +
      "the rest proposed by the clustering";
  return "proposed by the clustering: no answer has joined these photos yet";
}

function card(ident) {
  const box = document.createElement("section");
  box.className =
    "identity " + (STATUS_CLASS[ident.status] || "") + (ident.checked ? " checked" : "");
  box.dataset.number = String(ident.number);
  box.dataset.status = ident.status;
  const head = document.createElement("div");
  head.className = "identity-head";

  const name = document.createElement("input");
  name.className = "name";
  name.value = ident.named ? ident.name : "";
  name.placeholder = ident.code;
  name.setAttribute("aria-label", `name of ${ident.code}`);
  name.addEventListener("change", () => rename(ident, name.value));
  name.addEventListener("keydown", (e) => {
    if (e.key === "Enter") name.blur();
  });
  const code = document.createElement("span");
  code.className = "code";
  code.textContent = `${ident.code} · ${ident.size} image${ident.size === 1 ? "" : "s"}`;

  const check = document.createElement("label");
  const box2 = document.createElement("input");
  box2.type = "checkbox";
  box2.checked = ident.checked;
  box2.className = "check";
  box2.addEventListener("change", () => mark(ident, box2.checked));
  check.append(box2, " checked");

  const into = document.createElement("input");
  into.className = "into";
  into.placeholder = "NY-…";
  into.setAttribute("aria-label", `merge ${ident.code} into`);
  const mergeBtn = document.createElement("button");
  mergeBtn.type = "button";
  mergeBtn.className = "merge";
  mergeBtn.textContent = "Merge into";
  mergeBtn.addEventListener("click", () => merge(ident, into.value));

  const splitBtn = document.createElement("button");
  splitBtn.type = "button";
  splitBtn.className = "split";
  splitBtn.textContent = "Split selected out";
  splitBtn.hidden = true;
  splitBtn.addEventListener("click", () => split(ident));

  head.append(name, code, check, mergeBtn, into, splitBtn);
  const evidence = document.createElement("div");
  evidence.className = "evidence";
  evidence.textContent = evidenceText(ident);
  const notes = [evidence];
  if (ident.conflict) {
    const c = document.createElement("div");
    c.className = "conflict";
    c.textContent = `⚠ ${ident.conflict}`;
    notes.push(c);
  }
  const sheet = document.createElement("div");
  sheet.className = "sheet";
  // a click enlarges a photo; its box (or the viewer's) selects it to split out
  const label = ident.named ? `${ident.name} (${ident.code})` : ident.code;
  const items = ident.images.map((img) => ({ ...img, label }));
  const picks = new Map(); // image index -> its box
  const pick = (img, on) => {
    const sel = selected.get(ident.number) || new Set();
    if (on) sel.add(img.index);
    else sel.delete(img.index);
    selected.set(ident.number, sel);
    const box = picks.get(img.index);
    box.checked = on;
    box.parentElement.classList.toggle("selected", on);
    splitBtn.hidden = sel.size === 0;
  };
  const picked = (img) => (selected.get(ident.number) || new Set()).has(img.index);
  const viewOpts = (opener) => ({ opener, total: ident.size, pick, picked });
  ident.images.forEach((img, k) => {
    const tile = document.createElement("div");
    tile.className = "thumb";
    tile.dataset.index = String(img.index);
    const pic = enlargeable(img, (a) => openViewer(items, k, viewOpts(a)));
    // the photo, or why it cannot be shown
    if (img.verified) (img.problem ? pic : pic.firstChild).classList.add("verified");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.className = "pick";
    box.title = "select to split out";
    box.setAttribute("aria-label", `select ${img.path} to split out`);
    box.addEventListener("change", () => pick(img, box.checked));
    picks.set(img.index, box);
    tile.append(pic, box);
    // a card drawn again (a filter typed) shows what is still selected
    if (picked(img)) {
      box.checked = true;
      tile.classList.add("selected");
      splitBtn.hidden = false;
    }
    sheet.append(tile);
  });
  if (ident.size > ident.images.length) {
    const more = document.createElement("button");
    more.type = "button";
    more.textContent = `show all ${ident.size}`;
    more.addEventListener("click", async () => {
      const r = await api("GET", `/api/catalogue/${ident.number}`);
      if (r.ok) box.replaceWith(card({ ...ident, images: r.data.images }));
    });
    sheet.append(more);
  }
  box.append(head, ...notes, sheet);
  return box;
}

function render() {
  const list = $("list");
  const q = $("filter").value.trim().toLowerCase();
  const onlyOpen = $("unchecked-only").checked;
  const show = $("show").value;
  list.textContent = "";
  for (const ident of identities) {
    if (onlyOpen && ident.checked) continue;
    if (show === "verified" && ident.status !== "verified") continue;
    if (show === "proposed" && ident.status === "verified") continue;
    if (q && !ident.name.toLowerCase().includes(q) && !ident.code.toLowerCase().includes(q))
      continue;
    list.append(card(ident));
  }
  list.dataset.state = "ready";
}

async function load() {
  $("list").dataset.state = "loading"; // "ready" again once drawn anew
  const r = await api("GET", "/api/catalogue");
  if (!r.ok) {
    status(r.data.error || "could not load the catalogue", true);
    $("list").dataset.state = "error";
    return;
  }
  identities = r.data.identities;
  selected.clear();
  const named = identities.filter((i) => i.named).length;
  const checked = identities.filter((i) => i.checked).length;
  const verified = identities.filter((i) => i.status === "verified").length;
  const unsorted = r.data.unsorted;
  $("counts").textContent =
    `${r.data.images} images · ${identities.length} identities (${verified} verified by ` +
    `answers) · ${unsorted.count} unsorted · ${named} named · ${checked} checked`;
  const st = r.data.status;
  $("estimate").textContent = st ? `Where it stands: ${st.message}.` : "";
  $("regime").hidden = !(st && st.warning);
  $("regime").textContent = st && st.warning ? `⚠ ${capital(st.warning)}.` : "";
  const learning = r.data.progress.learning;
  $("learning").hidden = !learning;
  $("learning").textContent = learningText(learning);
  showUnsorted(unsorted);
  if (!$("annotator").placeholder && r.data.progress.annotator)
    $("annotator").placeholder = r.data.progress.annotator;
  render();
}

const capital = (t) => t.charAt(0).toUpperCase() + t.slice(1);

// Photos that are an identity of their own so far: no answer joins them to another, and
// the clustering groups them with none (or the answers showed their cluster mixed animals).
function showUnsorted(unsorted) {
  const head = $("unsorted-head");
  const sheet = $("unsorted");
  sheet.textContent = "";
  head.hidden = sheet.hidden = unsorted.count === 0;
  head.textContent =
    `Unsorted: ${unsorted.count} photo${unsorted.count === 1 ? "" : "s"} on their own` +
    (unsorted.images.length < unsorted.count ? ` (the first ${unsorted.images.length})` : "");
  const items = unsorted.images.map((img) => ({ ...img, label: `${img.code}, unsorted` }));
  unsorted.images.forEach((img, k) => {
    const tile = document.createElement("div");
    tile.className = "thumb";
    tile.dataset.index = String(img.index);
    const pic = enlargeable(img, (a) => openViewer(items, k, { opener: a }));
    pic.title = `${img.code}: ${pic.title}`;
    tile.append(pic);
    sheet.append(tile);
  });
}

async function act(url, body, done) {
  const r = await post(url, body);
  if (!r.ok) {
    status(r.data.error || `failed (${r.status})`, true);
    // 409: this page showed the catalogue as it was; show it as it is now
    if (r.status === 409) await load();
    return false;
  }
  status(r.data.change ? `${done} ${capital(r.data.change.message)}.` : done);
  await load();
  return true;
}

function rename(ident, name) {
  return act("/api/catalogue/rename", { number: ident.number, name }, name.trim()
    ? `${ident.code} is now called “${name.trim()}”.`
    : `${ident.code} has no name now.`);
}

function mark(ident, checked) {
  return act("/api/catalogue/check", { number: ident.number, checked },
    `${ident.code} ${checked ? "marked as checked" : "no longer marked as checked"}.`);
}

function merge(ident, text) {
  const other = numberOf(text);
  if (other === null) {
    status(`“${text}” is not an identity code, number or name.`, true);
    return null;
  }
  return act("/api/catalogue/merge", { a: ident.number, b: other },
    `Merged ${ident.code} and ${text.trim()} (Undo takes it back).`);
}

function split(ident) {
  const images = [...(selected.get(ident.number) || [])];
  return act("/api/catalogue/split", { number: ident.number, images },
    `Split ${images.length} image${images.length === 1 ? "" : "s"} out of ${ident.code} ` +
    "(Undo takes it back).");
}

async function undo() {
  // this page's own edits (merges, splits) by this annotator, never a pair answered meanwhile
  const r = await post("/api/undo", { page: "catalogue" });
  if (!r.ok) {
    status(capital(r.data.error || "nothing to undo") + ".", true);
    return;
  }
  const u = r.data.undone;
  status(`Undone: your last ${u.origin} (${u.undone_answers} answer` +
    `${u.undone_answers === 1 ? "" : "s"}).`);
  await load();
}

$("filter").addEventListener("input", render);
$("unchecked-only").addEventListener("change", render);
$("show").addEventListener("change", render);
$("btn-undo").addEventListener("click", undo);
document.addEventListener("keydown", (e) => {
  if (viewerOpen()) return; // the viewer's keys are its own
  const t = e.target;
  // U undoes unless typed into a field (a box just ticked keeps the focus)
  if (t && ((t.tagName === "INPUT" && t.type !== "checkbox") || t.tagName === "TEXTAREA")) return;
  if (e.key === "u" || e.key === "U") undo();
});
rememberAnnotator();
load();
