// Playground: an anonymous user's inline history, built by clicking items; every domain's
// recommendations are asked again after each change (POST /v1/recommend, nothing stored).
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

  document.addEventListener("DOMContentLoaded", async () => {
    const f = document.getElementById("search");
    try {
      await UI.fillDomains(f.domain);
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
