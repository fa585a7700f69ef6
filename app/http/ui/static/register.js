// Register: POST /v1/items (multipart, with the key), then the new item and its neighbours.
"use strict";
(() => {
  const { el, get, clear } = UI;

  async function submit(e) {
    e.preventDefault();
    UI.clearErrors();
    const form = e.target;
    const result = document.getElementById("result");
    clear(result);
    const data = new FormData(form);
    if (!form.image.files.length) data.delete("image");
    for (const k of ["title", "categories", "description"]) if (!String(data.get(k) || "").trim()) data.delete(k);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const { status, data: item } = await UI.api("/v1/items", { method: "POST", form: data });
      const [summary] = await UI.summaries([item.item_id]);
      const similar = await get(UI.itemUrl(item.item_id, "/similar?n=8"));
      const link = `/ui/items?${UI.query({ domain: item.domain, q: item.item_id, item: item.item_id })}`;
      result.append(
        el("h2", { id: "registered" }, status === 201 ? "Registered (201 Created)" : "Already registered with this content (200)"),
        el("p", {}, `Embedded from: ${item.modalities.join(", ") || "nothing (generic new-item vector)"}. `,
          el("a", { href: link }, "See it in the Items view")),
        UI.card(summary),
        el("h3", {}, "Nearest items"),
        el("div", { class: "grid" }, await UI.rankedCards(similar.items)));
    } catch (err) {
      UI.showError(err);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const form = document.getElementById("register");
    try {
      await UI.fillDomains(form.domain);
    } catch (err) {
      UI.showError(err);
    }
    form.addEventListener("submit", submit);
  });
})();
