// Items: search a domain's catalogue; an item's details and its most similar items.
"use strict";
(() => {
  const { el, get, clear } = UI;
  const PAGE = 24;
  let offset = 0;

  function params() {
    const f = document.getElementById("search");
    return { domain: f.domain.value, q: f.q.value.trim(), category: f.category.value.trim() };
  }

  async function search(append) {
    UI.clearErrors();
    const results = document.getElementById("results");
    if (!append) { offset = 0; clear(results); }
    try {
      const page = await get("/v1/items?" + UI.query({ ...params(), offset, limit: PAGE }));
      UI.remember(page.items);
      for (const it of page.items) {
        const open = el("button", { type: "button", onclick: () => detail(it.item_id) }, "Details and similar");
        results.append(UI.card(it, { actions: open }));
      }
      offset += page.items.length;
      document.getElementById("count").textContent = `${page.total} items match; showing ${offset}`;
      document.getElementById("more").hidden = offset >= page.total;
    } catch (err) {
      UI.showError(err);
    }
  }

  async function detail(itemId) {
    const box = document.getElementById("detail");
    clear(box);
    box.hidden = false;
    try {
      const [item] = await UI.summaries([itemId]);
      const full = await get(UI.itemUrl(itemId));
      const similar = await get(UI.itemUrl(itemId, "/similar?n=8"));
      const close = el("button", { type: "button", onclick: () => { box.hidden = true; } }, "Close");
      box.append(el("h2", { tabindex: "-1", id: "detail-title" }, item.title || itemId), close,
        el("div", { class: "detail" }, UI.card(item),
          el("dl", { class: "facts" },
            el("dt", {}, "description"), el("dd", {}, full.description || "—"),
            el("dt", {}, "origin"), el("dd", {}, full.origin === "api" ? "registered through the API" : "model bundle"),
            el("dt", {}, "embedded from"), el("dd", {}, (full.modalities || []).join(", ") || "its interactions"))),
        el("h3", {}, "Most similar items (same domain, by item vector)"));
      const grid = el("div", { class: "grid" }, await UI.rankedCards(similar.items));
      box.append(grid);
      document.getElementById("detail-title").focus();
    } catch (err) {
      UI.showError(err);
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const url = new URLSearchParams(location.search);
    const f = document.getElementById("search");
    try {
      await UI.fillDomains(f.domain, url.get("domain"));
    } catch (err) {
      UI.showError(err);
      return;
    }
    f.q.value = url.get("q") || "";
    f.category.value = url.get("category") || "";
    f.addEventListener("submit", (e) => { e.preventDefault(); search(false); });
    document.getElementById("more").addEventListener("click", () => search(true));
    document.addEventListener("keychange", () => search(false));
    await search(false);
    if (url.get("item")) detail(url.get("item"));
  });
})();
