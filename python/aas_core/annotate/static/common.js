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
