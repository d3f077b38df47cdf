// Shared by the answering page and the catalogue page. Plain JS, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function annotator() {
  return $("annotator").value.trim();
}

async function api(method, url, body) {
  const opts = { method, headers: {} };
  if (method === "POST") {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body || {});
  }
  const resp = await fetch(url, opts);
  let data = null;
  if (resp.status !== 204) {
    try {
      data = await resp.json();
    } catch (e) {
      data = { error: `unexpected reply (${resp.status})` };
    }
  }
  return { status: resp.status, ok: resp.ok, data };
}

// A thumbnail of an IMAGE from the API, or, when the server says it cannot be shown, why.
function photoThumb(img) {
  if (img.problem) {
    const el = document.createElement("span");
    el.className = "photo-problem";
    el.textContent = img.problem;
    el.title = `${img.path}: ${img.problem}`;
    return el;
  }
  const el = document.createElement("img");
  el.src = img.url;
  el.alt = img.path;
  el.title = img.path;
  el.loading = "lazy";
  return el;
}

// The annotator's name is remembered by this browser, for both pages.
function rememberAnnotator() {
  const who = $("annotator");
  who.value = localStorage.getItem("aas-annotator") || "";
  who.addEventListener("change", () => localStorage.setItem("aas-annotator", annotator()));
  who.addEventListener("keydown", (e) => {
    if (e.key === "Enter") who.blur();
  });
}

// With --learn: which embedding the catalogue uses, how well it separates the held-out
// answers, and what the last retraining found.
function learningText(l) {
  if (!l) return "";
  const what = l.source === "learned" ? "learned from the answers" : l.source || "the first one";
  const auc = l.auc === null || l.auc === undefined ? "" : `, held-out AUC ${l.auc.toFixed(3)}`;
  let text = `Embedding: ${what}${auc}. `;
  if (l.running) text += "Learning from the answers now…";
  else text += `Next learning in ${l.next_in} answer${l.next_in === 1 ? "" : "s"}.`;
  const last = l.attempts.length ? l.attempts[l.attempts.length - 1] : null;
  if (last) text += ` Last time: ${last.message}.`;
  if (l.error) text += ` ${l.error}.`;
  return text;
}

// ---- the photo viewer: one photo large, in the page ------------------------------------------
// A modal <dialog> (the browser keeps focus inside it and gives Esc): the photo with its path
// and identity; ← → step through the photos it was opened among. Esc, a click beside the photo
// or Close closes it, and focus goes back to the thumbnail it was opened from.
let viewer = null;

const viewerOpen = () => viewer !== null && viewer.dialog.open;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  e.append(...children);
  return e;
}

function buildViewer() {
  const v = {};
  v.title = el("h2", { id: "viewer-title" });
  v.path = el("div", { className: "viewer-path", id: "viewer-path" });
  v.pick = el("input", { type: "checkbox", id: "viewer-pick" });
  v.pickLabel = el("label", { className: "viewer-pick" }, v.pick, " selected to split out");
  v.file = el("a", { target: "_blank", rel: "noopener", textContent: "Open the file" });
  v.close = el("button", { type: "button", className: "viewer-close" }, "Close ");
  v.close.append(el("kbd", { textContent: "Esc" }));
  v.prev = el("button", { type: "button", className: "viewer-step", textContent: "‹" });
  v.next = el("button", { type: "button", className: "viewer-step", textContent: "›" });
  v.prev.setAttribute("aria-label", "previous photo (←)");
  v.next.setAttribute("aria-label", "next photo (→)");
  v.img = el("img", { id: "viewer-img", alt: "" });
  v.problem = el("div", { className: "photo-problem viewer-problem", hidden: true });
  v.stage = el("div", { className: "viewer-stage" }, v.prev, v.img, v.problem, v.next);
  const head = el("div", { className: "viewer-head" },
    el("div", { className: "viewer-what" }, v.title, v.path), v.pickLabel, v.file, v.close);
  v.dialog = el("dialog", { className: "viewer", id: "viewer" }, head, v.stage);
  v.dialog.setAttribute("aria-labelledby", "viewer-title");
  v.dialog.setAttribute("aria-describedby", "viewer-path");
  document.body.append(v.dialog);

  v.close.addEventListener("click", () => v.dialog.close());
  v.prev.addEventListener("click", () => stepViewer(-1));
  v.next.addEventListener("click", () => stepViewer(1));
  // a click on the dialog itself or the stage around the photo is a click beside it
  v.dialog.addEventListener("click", (e) => {
    if (e.target === v.dialog || e.target === v.stage) v.dialog.close();
  });
  // on the document, not the dialog: the keys work wherever the focus is (a step button
  // disabled at the last photo lets it go to the page's body)
  document.addEventListener("keydown", (e) => {
    if (!viewerOpen() || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      stepViewer(e.key === "ArrowLeft" ? -1 : 1);
    } else if (e.key === "Escape") {
      e.preventDefault();
      v.dialog.close();
    }
  });
  v.pick.addEventListener("change", () => {
    if (v.opts.pick) v.opts.pick(v.items[v.at], v.pick.checked);
  });
  v.img.addEventListener("load", fitViewerPhoto);
  v.img.addEventListener("error", () => {
    if (!v.img.getAttribute("src")) return; // the viewer closed
    v.img.hidden = true;
    v.problem.hidden = false;
    v.problem.textContent = "This photo could not be loaded (the server may have stopped).";
  });
  window.addEventListener("resize", () => viewerOpen() && fitViewerPhoto());
  v.dialog.addEventListener("close", () => {
    v.img.removeAttribute("src"); // a large photo is not kept in memory
    if (v.opts.opener && v.opts.opener.isConnected) v.opts.opener.focus();
  });
  return v;
}

function showViewerPhoto() {
  const v = viewer;
  const item = v.items[v.at];
  const n = v.items.length;
  const total = v.opts.total || n; // the page may show only the first photos of many
  const of = total > n ? `${n} shown (${total} in all)` : String(n);
  v.title.textContent = `${item.label || ""}${n > 1 ? ` · photo ${v.at + 1} of ${of}` : ""}`;
  v.path.textContent = item.path;
  v.dialog.dataset.index = String(item.index);
  v.prev.disabled = v.at === 0;
  v.next.disabled = v.at === n - 1;
  v.prev.hidden = v.next.hidden = n < 2;
  v.pickLabel.hidden = !v.opts.pick;
  if (v.opts.pick) v.pick.checked = v.opts.picked(item);
  v.file.hidden = !!item.problem;
  v.img.hidden = !!item.problem;
  v.problem.hidden = !item.problem;
  if (item.problem) {
    v.img.removeAttribute("src");
    v.problem.textContent = `This photo cannot be shown: ${item.problem}`;
  } else {
    v.img.style.width = v.img.style.height = "0"; // until it is loaded and fitted
    v.img.src = item.url;
    v.img.alt = item.path;
    v.file.href = item.url;
  }
}

// The photo as large as the stage allows beside the step buttons, a small one enlarged too
// (CSS alone caps the size but never enlarges; object-fit would make the margin part of the
// photo, so that a click there would not count as beside it).
function fitViewerPhoto() {
  const { img, stage, prev } = viewer;
  if (!img.naturalWidth) return;
  const pad = parseFloat(getComputedStyle(stage).paddingLeft) || 0;
  const gap = parseFloat(getComputedStyle(stage).columnGap) || 0;
  const buttons = prev.hidden ? 0 : 2 * (prev.offsetWidth + gap);
  const w = stage.clientWidth - 2 * pad - buttons;
  const h = stage.clientHeight - 2 * pad;
  const scale = Math.max(0, Math.min(w / img.naturalWidth, h / img.naturalHeight));
  img.style.width = `${Math.floor(img.naturalWidth * scale)}px`;
  img.style.height = `${Math.floor(img.naturalHeight * scale)}px`;
}

function stepViewer(by) {
  const at = viewer.at + by;
  if (at < 0 || at >= viewer.items.length) return;
  viewer.at = at;
  showViewerPhoto();
  const f = document.activeElement;
  if (!viewer.dialog.contains(f) || f.disabled) viewer.close.focus();
}

// Opens the viewer on items[at]; items are IMAGEs from the API, each with a "label" (its
// identity). opts: opener (the element to focus again), total (how many photos there are,
// where items are only the first of them), and on the catalogue page
// picked(item) -> bool and pick(item, on) for the selection of photos to split out.
function openViewer(items, at, opts) {
  if (viewer === null) viewer = buildViewer();
  viewer.items = items;
  viewer.at = at;
  viewer.opts = opts || {};
  showViewerPhoto();
  if (!viewer.dialog.open) viewer.dialog.showModal();
  viewer.close.focus();
}

// A thumbnail that opens the viewer on a plain click (Ctrl-, Shift- or middle-click: the
// photo in a new tab, as a link does). A photo the page cannot show is its problem, in words.
function enlargeable(img, open) {
  const pic = photoThumb(img);
  if (img.problem) return pic;
  const a = el("a", { className: "enlarge", href: img.url, title: `${img.path} (click: enlarge)` });
  a.setAttribute("aria-label", `enlarge ${img.path}`);
  a.addEventListener("click", (e) => {
    if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    open(a);
  });
  a.append(pic);
  return a;
}
