// Shared by every console page: the API client (with the key from sessionStorage), safe
// DOM building (text is only ever set with textContent), item cards and pictures.
"use strict";

const KEY_STORE = "micrec.apiKey";
const UI = (window.UI = {});

UI.key = () => sessionStorage.getItem(KEY_STORE) || "";

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}
UI.ApiError = ApiError;

function headers() {
  const h = {};
  const key = UI.key();
  if (key) h["X-API-Key"] = key;
  return h;
}

// fetch + JSON; a non-2xx answer throws ApiError with the API's own "detail".
UI.api = async function (path, { method = "GET", json, form } = {}) {
  const h = headers();
  let body;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  const r = await fetch(path, { method, headers: h, body });
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = text;
  }
  if (!r.ok) throw new ApiError(r.status, (data && data.detail) || r.statusText);
  return { status: r.status, data };
};
UI.get = async (path) => (await UI.api(path)).data;

UI.query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== undefined && v !== null && v !== "") q.append(k, v);
  }
  return q.toString();
};

// el("p", {class: "x", onclick: f}, "text", child): never parses HTML.
UI.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
};
const el = UI.el;

UI.clear = (node) => node.replaceChildren();

UI.showError = function (err, target) {
  const box = target || document.getElementById("errors");
  const msg = err instanceof ApiError ? `The API answered ${err.status}: ${err.detail}` : String(err);
  box.append(el("p", { class: "error" }, msg));
};
UI.clearErrors = () => UI.clear(document.getElementById("errors"));

// --- model facts ------------------------------------------------------------------
let modelInfo;
UI.model = async function () {
  if (!modelInfo) modelInfo = UI.get("/v1/model");
  return modelInfo;
};

UI.fillDomains = async function (select, chosen) {
  const model = await UI.model();
  UI.clear(select);
  for (const d of model.domains) select.append(el("option", { value: d, selected: d === chosen }, d));
};

// --- items ------------------------------------------------------------------------
const summaries = new Map();

// Summaries of ids (any domains), fetched 100 at a time and remembered.
UI.summaries = async function (ids) {
  const missing = [...new Set(ids)].filter((id) => !summaries.has(id));
  for (let i = 0; i < missing.length; i += 100) {
    const page = await UI.get("/v1/items?" + UI.query({ ids: missing.slice(i, i + 100) }));
    page.items.forEach((it) => summaries.set(it.item_id, it));
  }
  return ids.map((id) => summaries.get(id) || { item_id: id, title: "", categories: [], missing: true });
};
UI.remember = (items) => items.forEach((it) => summaries.set(it.item_id, it));

UI.itemUrl = (id, tail = "") => `/v1/items/${encodeURIComponent(id)}${tail}`;

// The picture is fetched with the key (reads may require one) and shown from a blob URL.
UI.picture = function (item) {
  const label = item.title || item.item_id;
  if (!item.image) {
    return el("div", { class: "picture placeholder", role: "img", "aria-label": `${label}: no picture` },
      (label || "?").trim().charAt(0).toUpperCase() || "?");
  }
  const img = el("img", { class: "picture", alt: label, width: 96, height: 96 });
  fetch(UI.itemUrl(item.item_id, "/image"), { headers: headers() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`picture ${r.status}`))))
    .then((b) => { img.src = URL.createObjectURL(b); })
    .catch(() => img.replaceWith(UI.picture({ ...item, image: false })));
  return img;
};

// One item: picture, title, id, categories, degree; extra = {score, source, actions}.
UI.card = function (item, extra = {}) {
  const title = item.title || "(no title)";
  const lines = [
    UI.picture(item),
    el("h3", { class: "title" }, title),
    el("p", { class: "id" }, `${item.item_id} · ${item.domain || "?"}`),
  ];
  if (item.categories && item.categories.length) lines.push(el("p", { class: "cats" }, item.categories.join(" · ")));
  if (item.missing) lines.push(el("p", { class: "meta" }, "not in the catalogue"));
  else lines.push(el("p", { class: "meta" }, item.origin === "api"
    ? `registered · ${item.interactions} API interactions`
    : `degree ${item.degree} · ${item.interactions} API interactions`));
  if (extra.source) {
    lines.push(el("p", { class: "why" },
      el("span", { class: `tag src-${extra.source}` }, extra.source),
      ` score ${Number(extra.score).toFixed(3)}`));
  }
  if (extra.actions) lines.push(el("p", { class: "actions" }, extra.actions));
  return el("article", { class: "card", "data-item": item.item_id }, lines);
};

// Cards for recommended/similar items ({item_id, score, source}), details fetched.
UI.rankedCards = async function (ranked) {
  const items = await UI.summaries(ranked.map((r) => r.item_id));
  return items.map((it, i) => UI.card(it, ranked[i]));
};

// What user_embedding means, in words, for one domain's answer.
UI.explain = function (domain, answer, historyDomains) {
  const used = answer.history ? answer.history.items_used : 0;
  if (answer.user_embedding === "inductive") return `from their ${domain} history (${used} items in all domains)`;
  if (answer.user_embedding === "cross_domain") {
    const from = historyDomains.filter((d) => d !== domain);
    return `cross-domain: no ${domain} history, served from ${from.join(", ") || "other domains"}`;
  }
  if (answer.user_embedding === "query") return "from the query: content match + popularity (no history)";
  return "no usable history: fallback chain (popular, latest)";
};

UI.recColumn = async function (domain, answer, historyDomains) {
  const col = el("section", { class: "column", "data-domain": domain },
    el("h3", {}, domain),
    el("p", { class: `embedding emb-${answer.user_embedding}` }, UI.explain(domain, answer, historyDomains)));
  const list = el("ol", { class: "ranked" });
  for (const card of await UI.rankedCards(answer.items)) list.append(el("li", {}, card));
  col.append(list);
  for (const w of answer.warnings || []) col.append(el("p", { class: "note" }, w));
  return col;
};

UI.facts = function (dl, pairs) {
  UI.clear(dl);
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "—" : v));
};

// --- the key form -------------------------------------------------------------------
function keyNote() {
  const note = document.getElementById("key-note");
  note.textContent = UI.key() ? "key set for this tab" : "no key";
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (value) sessionStorage.setItem(KEY_STORE, value);
    input.value = "";
    keyNote();
    document.dispatchEvent(new Event("keychange"));
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    keyNote();
    document.dispatchEvent(new Event("keychange"));
  });
  keyNote();
});
