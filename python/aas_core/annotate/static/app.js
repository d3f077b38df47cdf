// aas annotate: answer "same / different" for proposed pairs. Plain JS, no libraries.
// Every answer is stored by the server before it replies; the page only shows what is stored.
"use strict";

const main = $("pair");
let current = null; // the pair on screen (from /api/next)
let state = "loading"; // loading | ready | busy | done | error
let lastConflict = null;
const LABELS = { same: "Same", different: "Different", cant_tell: "Can’t tell", skip: "Skip" };
const said = (answer) => (LABELS[answer] || answer).toLowerCase();

function setState(s) {
  state = s;
  main.dataset.state = s;
  const answering = s === "ready";
  for (const id of ["btn-same", "btn-different", "btn-cant-tell", "btn-skip", "btn-new"])
    $(id).disabled = !answering;
  $("btn-undo").disabled = s === "busy" || s === "loading";
}

// ---- progress and conflicts ---------------------------------------------------------------

function showProgress(p) {
  const done = p.answered + p.cant_tell + p.skipped;
  const pct = p.pairs ? Math.round((100 * done) / p.pairs) : 0;
  $("progress-fill").style.width = `${pct}%`;
  $("progress").setAttribute("aria-valuenow", String(pct));
  $("counts").textContent =
    `${done} / ${p.pairs} pairs · ${p.same} same · ${p.different} different · ` +
    `${p.cant_tell} can’t tell · ${p.skipped} skipped · ${p.remaining} left`;
  const btn = $("conflicts-button");
  btn.hidden = p.conflicts === 0;
  btn.textContent = `⚠ ${p.conflicts} conflict${p.conflicts === 1 ? "" : "s"}`;
  if (!$("annotator").placeholder && p.annotator) $("annotator").placeholder = p.annotator;
  $("catalogue-link").hidden = !p.catalogue;
  if (p.conflicts === 0) hideBanner();
  // what the answers show about the embedding (aas catalogue), e.g. that it does not
  // separate the animals, and what helps
  $("regime").hidden = !p.warning;
  $("regime").textContent = p.warning ? `⚠ ${capital(p.warning)}.` : "";
  $("learning").hidden = !p.learning;
  $("learning").textContent = learningText(p.learning);
  return p;
}

const capital = (t) => t.charAt(0).toUpperCase() + t.slice(1);

// After an answer: what it did to the catalogue, shown once the server has worked it out
// (answering never waits for it).
async function showEffect(answerId, saidText) {
  const r = await api("GET", `/api/effect/${answerId}`);
  if (!r.ok || !r.data.change || $("status").dataset.answer !== String(answerId)) return;
  status(`${saidText} → ${r.data.change.message}.`);
}

async function refreshProgress() {
  const r = await api("GET", "/api/progress");
  if (r.ok) return showProgress(r.data);
  return null;
}

function pairText(ans) {
  return `#${ans.a.index} and #${ans.b.index}`;
}

function showConflictBanner(c) {
  lastConflict = c;
  const reasons = c.because.map((b) => `${pairText(b)}: ${b.answer}`).join("; ");
  $("banner-text").textContent =
    `⚠ Your answer “${c.answer}” for ${pairText(c)} contradicts earlier answers, ` +
    `which imply “${c.implied}” (${reasons}).`;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
  lastConflict = null;
}

// ---- the pair on screen -------------------------------------------------------------------

function showImage(side, img) {
  const el = $(`img-${side}`);
  const missing = $(`missing-${side}`);
  resetZoom(side);
  $(`missing-path-${side}`).textContent = img.path;
  const caption = $(`caption-${side}`);
  caption.textContent = "";
  const b = document.createElement("b");
  b.textContent = `#${img.index}`;
  caption.append(b, ` ${img.path}`);
  caption.title = img.path;
  $(`missing-why-${side}`).textContent = img.problem || "";
  el.onerror = () => {
    el.hidden = true;
    missing.hidden = false;
    $(`missing-why-${side}`).textContent = "the browser could not read it as an image";
  };
  if (!img.problem) {
    el.hidden = false;
    missing.hidden = true;
    el.src = img.url;
  } else {
    el.removeAttribute("src");
    el.hidden = true;
    missing.hidden = false;
  }
}

function showPair(p) {
  current = p;
  main.dataset.pairId = String(p.pair_id);
  main.dataset.kind = p.kind || "";
  $("btn-new").hidden = p.kind !== "link"; // a new photo against a known individual
  $("done").hidden = true;
  showImage("a", p.a);
  showImage("b", p.b);
  setState("ready");
  loadContext(p.pair_id);
}

// Beside each image: its file, camera folder and date, and the other images of the
// identity it is in now (what a person compares against in a catalogue).
async function loadContext(pairId) {
  for (const side of ["a", "b"]) $(`context-${side}`).textContent = "";
  const r = await api("GET", `/api/context/${pairId}`);
  if (!r.ok || !current || current.pair_id !== pairId) return;
  for (const side of ["a", "b"]) {
    const c = r.data[side];
    const box = $(`context-${side}`);
    const facts = [c.image.file];
    if (c.image.camera) facts.push(`camera ${c.image.camera}`);
    if (c.image.date) facts.push(c.image.date);
    const line = document.createElement("div");
    line.className = "facts";
    line.textContent = facts.join(" · ");
    box.append(line);
    if (c.identity) {
      const who = document.createElement("div");
      who.className = "facts";
      const more = c.identity.size - 1;
      const joined = c.identity.verified
        ? `, ${c.identity.verified} joined by answers`
        : c.identity.size > 1
          ? ", grouped by the clustering only"
          : "";
      who.textContent =
        `now in ${c.identity.name} (${c.identity.size} image${c.identity.size === 1 ? "" : "s"}` +
        `${joined})` +
        (more ? ":" : "");
      box.append(who);
      const strip = document.createElement("div");
      strip.className = "strip";
      const items = c.others.map((img) => ({ ...img, label: `in ${c.identity.name}` }));
      c.others.forEach((img, k) => {
        strip.append(enlargeable(img, (a) => openViewer(items, k, { opener: a })));
      });
      box.append(strip);
    }
  }
}

function showDone(progress) {
  current = null;
  main.dataset.pairId = "";
  $("btn-new").hidden = true;
  $("done").hidden = false;
  let text = progress
    ? `All ${progress.pairs} proposed pairs have an answer (${progress.cant_tell} can’t tell, ` +
      `${progress.skipped} skipped).`
    : "All proposed pairs have an answer.";
  if (progress && progress.message) text += ` ${progress.message}`;
  else if (progress && !progress.propose)
    text += " Queue more with: aas propose X.npy --store <this store>.";
  $("done-text").textContent = text;
  setState("done");
}

async function loadNext() {
  setState("busy");
  try {
    const r = await api("GET", "/api/next");
    if (r.status === 204) {
      showDone(await refreshProgress());
      return;
    }
    if (!r.ok) throw new Error(r.data.error);
    showPair(r.data);
    await refreshProgress();
  } catch (e) {
    status(`Could not load the next pair: ${e.message}`, true);
    setState(current ? "ready" : "error");
  }
}

// ---- answering and undo ---------------------------------------------------------------------

// Stores an answer to the pair on screen (POST url with body), then shows the next pair;
// ``saved(pair)`` words the status line.
async function submit(url, body, saved) {
  if (state !== "ready" || !current) return;
  setState("busy");
  const pair = current;
  try {
    const r = await api("POST", url, { pair_id: pair.pair_id, annotator: annotator(), ...body });
    if (r.status === 409) {
      status(
        `Pair ${pairText(pair)} was already answered “${said(r.data.current.answer)}” ` +
          "(in another tab?); that answer is kept. Showing the next pair."
      );
    } else if (!r.ok) {
      status(`Not saved: ${r.data.error}`, true);
      setState("ready");
      return;
    } else {
      showProgress(r.data.progress);
      if (r.data.conflict) showConflictBanner(r.data.conflict);
      const text = saved(pair);
      status(`${text}.`);
      $("status").dataset.answer = String(r.data.answer.answer_id);
      const stored = r.data.unchanged === false || r.data.answers > 0;
      if (r.data.progress.catalogue && stored) showEffect(r.data.answer.answer_id, text);
    }
  } catch (e) {
    status(`Not saved (the server did not answer: ${e.message}). Try again.`, true);
    setState("ready");
    return;
  }
  await loadNext();
}

function answer(kind) {
  const saved = (pair) => `Saved: ${said(kind)} for ${pairText(pair)}`;
  return submit("/api/answer", { answer: kind }, saved);
}

// A link question: the new photo is none of the known individuals shown. Stored as a
// "different" answer (undo takes it back).
function newIndividual() {
  if (!current || current.kind !== "link") return;
  return submit(
    "/api/new_individual",
    {},
    (pair) =>
      `Saved: #${pair.b.index} is a new individual, none of the known ones shown ` +
      `(stored as “different” for ${pairText(pair)}; U undoes it)`
  );
}

async function undo() {
  if (state === "busy" || state === "loading") return;
  setState("busy");
  try {
    const r = await api("POST", "/api/undo", { annotator: annotator(), page: "annotate" });
    if (r.status === 409) status(capital(r.data.error || "nothing to undo") + ".");
    else if (!r.ok) status(`Undo failed: ${r.data.error}`, true);
    else {
      status(`Undone: “${said(r.data.undone.answer)}” for ${pairText(r.data.undone)}.`);
      showProgress(r.data.progress);
    }
  } catch (e) {
    status(`Undo failed (the server did not answer: ${e.message}).`, true);
  }
  await loadNext();
}

// ---- conflict review ------------------------------------------------------------------------

function thumb(img) {
  const el = photoThumb(img);
  if (img.problem) el.classList.add("thumb-missing");
  return el;
}

function reviewRow(ans, cls) {
  const row = document.createElement("div");
  row.className = `row ${cls}`;
  row.dataset.pairId = String(ans.pair_id);
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = `${pairText(ans)}: answered “${said(ans.answer)}” by ${ans.annotator}`;
  row.append(thumb(ans.a), thumb(ans.b), what);
  for (const kind of ["same", "different", "cant_tell"]) {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.textContent = LABELS[kind];
    btn.dataset.answer = kind;
    if (ans.answer === kind) btn.className = "current";
    btn.addEventListener("click", () => change(ans.pair_id, kind));
    row.append(btn);
  }
  return row;
}

async function openReview() {
  const r = await api("GET", "/api/conflicts");
  if (!r.ok) {
    status(`Could not load the conflicts: ${r.data.error}`, true);
    return;
  }
  const list = $("review-list");
  list.textContent = "";
  if (r.data.conflicts.length === 0) {
    const p = document.createElement("p");
    p.textContent = "No conflicting answers left.";
    list.append(p);
  }
  for (const c of r.data.conflicts) {
    const box = document.createElement("div");
    box.className = "conflict";
    const h = document.createElement("h3");
    h.textContent =
      `“${c.answer}” for ${pairText(c)} contradicts these earlier answers, ` +
      `which imply “${c.implied}”:`;
    box.append(h, reviewRow(c, "conflicting"));
    for (const b of c.because) box.append(reviewRow(b, "because"));
    list.append(box);
  }
  $("review").hidden = false;
}

// Closing by Esc or by the button alike: answers changed in the review change the counts.
async function closeReview() {
  $("review").hidden = true;
  await refreshProgress();
}

async function change(pairId, kind) {
  const r = await api("POST", "/api/answer", {
    pair_id: pairId,
    answer: kind,
    replace: true,
    annotator: annotator(),
  });
  if (!r.ok) {
    status(`Not changed: ${r.data.error}`, true);
    return;
  }
  showProgress(r.data.progress);
  status(`Changed: pair ${pairText(r.data.answer)} is now “${said(kind)}”.`);
  if (r.data.conflict) showConflictBanner(r.data.conflict);
  await openReview();
}

// ---- zoom: wheel at the cursor, drag to move, double-click to reset ------------------------------

const zoom = { a: { s: 1, x: 0, y: 0 }, b: { s: 1, x: 0, y: 0 } };

function applyZoom(side) {
  const z = zoom[side];
  $(`img-${side}`).style.transform = `translate(${z.x}px, ${z.y}px) scale(${z.s})`;
  $(`frame-${side}`).dataset.zoom = z.s.toFixed(2);
}

function resetZoom(side) {
  zoom[side] = { s: 1, x: 0, y: 0 };
  applyZoom(side);
}

function zoomAt(side, factor, px, py) {
  const z = zoom[side];
  const s = Math.min(12, Math.max(1, z.s * factor));
  // keep the point under (px, py) still
  z.x = px - ((px - z.x) * s) / z.s;
  z.y = py - ((py - z.y) * s) / z.s;
  z.s = s;
  if (s === 1) {
    z.x = 0;
    z.y = 0;
  }
  applyZoom(side);
}

for (const side of ["a", "b"]) {
  const frame = $(`frame-${side}`);
  frame.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault();
      const r = frame.getBoundingClientRect();
      zoomAt(side, e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
    },
    { passive: false }
  );
  frame.addEventListener("dblclick", () => resetZoom(side));
  let drag = null;
  frame.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY };
    frame.setPointerCapture(e.pointerId);
    frame.classList.add("dragging");
  });
  frame.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const z = zoom[side];
    z.x += e.clientX - drag.x;
    z.y += e.clientY - drag.y;
    drag = { x: e.clientX, y: e.clientY };
    applyZoom(side);
  });
  const stop = () => {
    drag = null;
    frame.classList.remove("dragging");
  };
  frame.addEventListener("pointerup", stop);
  frame.addEventListener("pointercancel", stop);
}

function zoomBoth(factor) {
  for (const side of ["a", "b"]) {
    const r = $(`frame-${side}`).getBoundingClientRect();
    zoomAt(side, factor, r.width / 2, r.height / 2);
  }
}

// ---- keys and buttons -----------------------------------------------------------------------

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (viewerOpen()) return; // no answer is given behind the viewer
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
  if (!$("review").hidden) {
    if (e.key === "Escape") closeReview();
    return;
  }
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  const actions = {
    s: () => answer("same"),
    d: () => answer("different"),
    c: () => answer("cant_tell"),
    " ": () => answer("skip"),
    n: newIndividual,
    u: undo,
    Backspace: undo,
    "+": () => zoomBoth(1.25),
    "=": () => zoomBoth(1.25),
    "-": () => zoomBoth(0.8),
    0: () => {
      resetZoom("a");
      resetZoom("b");
    },
  };
  const act = actions[key];
  if (!act) return;
  e.preventDefault(); // Space would scroll, Backspace would navigate back
  if (e.repeat && key !== "+" && key !== "-" && key !== "=") return; // a held key answers once
  act();
});

$("btn-same").addEventListener("click", () => answer("same"));
$("btn-different").addEventListener("click", () => answer("different"));
$("btn-cant-tell").addEventListener("click", () => answer("cant_tell"));
$("btn-skip").addEventListener("click", () => answer("skip"));
$("btn-new").addEventListener("click", newIndividual);
$("btn-undo").addEventListener("click", undo);
$("check-again").addEventListener("click", loadNext);
$("conflicts-button").addEventListener("click", openReview);
$("banner-review").addEventListener("click", openReview);
$("banner-dismiss").addEventListener("click", hideBanner);
$("review-close").addEventListener("click", closeReview);
// buttons keep no focus, so Space never "clicks" the last button pressed
for (const b of document.querySelectorAll("button")) b.addEventListener("click", () => b.blur());
document.addEventListener("keyup", (e) => {
  if (e.key === " " && e.target && e.target.tagName === "BUTTON") e.preventDefault();
});

rememberAnnotator();

loadNext();
