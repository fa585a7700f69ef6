// Playground: an anonymous user's inline history, built by clicking items; every domain's
// recommendations are asked again after each change (POST /v1/recommend, nothing stored).
// Or a visitor with no history started from a query (a text, or a picture where the model
// has an image encoder: GET /v1/model query_modalities).
"use strict";
(() => {
  const { el, get, clear } = UI;
  const N = 6;
  const history = [];
  let asked = 0;

  async function search(e) {
    if (e) e.preventDefault();
    UI.clearErrors();
    const f = document.getElementById("search");
    const picker = document.getElementById("picker");
    clear(picker);
    try {
      const page = await get("/v1/items?" + UI.query({ domain: f.domain.value, q: f.q.value.trim(), limit: 12 }));
      UI.remember(page.items);
      for (const it of page.items) {
        const add = el("button", { type: "button", class: "add", onclick: () => add_(it.item_id) }, "Add to history");
        picker.append(UI.card(it, { actions: add }));
      }
    } catch (err) {
      UI.showError(err);
    }
  }

  function add_(itemId) {
    if (!history.includes(itemId)) history.push(itemId);
    refresh();
  }

  async function refresh() {
    const list = document.getElementById("history");
    clear(list);
    const items = await UI.summaries(history);
    items.forEach((it, i) => {
      const remove = el("button", { type: "button", "aria-label": `Remove ${it.title || it.item_id}`,
        onclick: () => { history.splice(i, 1); refresh(); } }, "×");
      list.append(el("li", {}, `${it.title || it.item_id} (${it.domain})`, " ", remove));
    });
    document.getElementById("history-count").textContent = history.length;
    await recommend();
  }

  async function recommend() {
    const ticket = ++asked;  // answers of an older history are dropped
    UI.clearErrors();
    try {
      const model = await UI.model();
      const domains = [...new Set((await UI.summaries(history)).map((it) => it.domain))];
      const columns = [];
      for (const d of model.domains) {
        const { data } = await UI.api("/v1/recommend", { method: "POST", json: { domain: d, history, n: N } });
        columns.push(await UI.recColumn(d, data, domains));
      }
      if (ticket !== asked) return;
      const recs = document.getElementById("recs");
      recs.replaceChildren(...columns);
      recs.setAttribute("data-history", history.join(","));
    } catch (err) {
      UI.showError(err);
    }
  }

  function dataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("the picture could not be read"));
      reader.readAsDataURL(file);
    });
  }

  async function fromQuery(e) {
    e.preventDefault();
    const form = e.target;
    const ticket = ++asked;  // a later history change or query wins
    UI.clearErrors();
    const query = {};
    const text = form.text.value.trim();
    if (text) query.text = text;
    const file = form.picture.files[0];
    try {
      if (file) query.image_base64 = await dataUrl(file);
      if (!query.text && !query.image_base64) throw new Error("type a text or choose a picture");
      const model = await UI.model();
      const columns = [];
      for (const d of model.domains) {
        const { data } = await UI.api("/v1/recommend", { method: "POST", json: { domain: d, query, n: N } });
        columns.push(await UI.recColumn(d, data, []));
      }
      if (ticket !== asked) return;
      const recs = document.getElementById("recs");
      recs.replaceChildren(...columns);
      recs.removeAttribute("data-history");
      recs.setAttribute("data-query", [text, file ? file.name : ""].filter(Boolean).join(" + "));
    } catch (err) {
      UI.showError(err);
    }
  }

  async function setUpQuery() {
    const model = await UI.model();
    const mods = model.query_modalities || [];
    const form = document.getElementById("query-form");
    const note = document.getElementById("query-note");
    if (!mods.length) {
      form.hidden = true;
      note.textContent = "This model has no content part to match a query in.";
      return;
    }
    document.getElementById("query-picture-field").hidden = !mods.includes("image");
    form.text.disabled = !mods.includes("text");
    note.textContent = `The model matches ${mods.join(" and ")} queries (content match + popularity, no history).`;
    form.addEventListener("submit", fromQuery);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const f = document.getElementById("search");
    try {
      await UI.fillDomains(f.domain);
      await setUpQuery();
    } catch (err) {
      UI.showError(err);
      return;
    }
    f.addEventListener("submit", search);
    f.domain.addEventListener("change", search);
    document.getElementById("clear").addEventListener("click", () => { history.length = 0; refresh(); });
    await search();
    await refresh();
  });
})();
