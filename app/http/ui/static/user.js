// User: history per domain and recommendations per domain (needs a key, as the API does).
"use strict";
(() => {
  const { el, get, clear } = UI;

  async function show(e) {
    if (e) e.preventDefault();
    UI.clearErrors();
    const recs = document.getElementById("recs");
    const hist = document.getElementById("history");
    clear(recs);
    clear(hist);
    const userId = document.getElementById("user-id").value.trim();
    const n = document.getElementById("n").value || 6;
    if (!userId) return;
    const path = `/v1/users/${encodeURIComponent(userId)}`;
    try {
      const history = await get(`${path}/history`);
      const model = await UI.model();
      const domains = Object.keys(history.domains).filter((d) => history.domains[d].length);
      if (!history.known_user) hist.append(el("p", { class: "note" }, "No history for this id: recommendations come from the fallback chain."));
      if (history.stored === "unavailable") hist.append(el("p", { class: "note" }, "The store is unavailable: bundle history only."));
      for (const d of domains) {
        const ids = history.domains[d];
        const shown = ids.slice(-24).reverse();
        hist.append(el("h3", {}, `${d}: ${ids.length} items${ids.length > shown.length ? ` (newest ${shown.length} shown)` : ""}`),
          el("div", { class: "grid small" }, (await UI.summaries(shown)).map((it) => UI.card(it))));
      }
      for (const d of model.domains) {
        const answer = await get(`${path}/recommendations?` + UI.query({ domain: d, n }));
        recs.append(await UI.recColumn(d, answer, domains));
      }
    } catch (err) {
      if (err.status === 401) {
        UI.showError(`The API refused to show this user (${err.status}): ${err.detail}. Enter an API key at the top of the page.`);
      } else {
        UI.showError(err);
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("lookup").addEventListener("submit", show);
    document.addEventListener("keychange", () => { if (document.getElementById("user-id").value) show(); });
    const url = new URLSearchParams(location.search);
    if (url.get("user")) { document.getElementById("user-id").value = url.get("user"); show(); }
  });
})();
