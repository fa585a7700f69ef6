// Evaluation: the bundle's test metrics per slice and degree bucket, training, plots.
"use strict";
(() => {
  const { el, get, facts } = UI;
  const METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"];
  const pct = (v) => (typeof v === "number" ? (100 * v).toFixed(2) : "—");
  const SLICE_WORDS = {
    all: "all test users", old_users: "users seen in training", new_users: "users new at test time",
    old_items: "targets among trained items", new_items: "targets among new items",
    cold_items: "new items only (ranked among new items)", cold_items_vs_all: "new items ranked among all",
    cd_cold_users: "users with history only in other domains", old_users_old_items: "seen users, trained items",
  };

  function table(caption, rows, slices, baselines, domain) {
    const rankers = baselines ? Object.keys(baselines).filter((r) => baselines[r][domain]) : [];
    const head = el("tr", {}, el("th", { scope: "col" }, "slice"), el("th", { scope: "col" }, "users"),
      METRICS.map((m) => el("th", { scope: "col" }, `${m} %`)),
      rankers.map((r) => el("th", { scope: "col" }, `${r} ndcg@20 %`)));
    const body = slices.map((s) => el("tr", {},
      el("th", { scope: "row", title: SLICE_WORDS[s] || "" }, SLICE_WORDS[s] ? `${s} (${SLICE_WORDS[s]})` : s),
      el("td", {}, rows[s].n_users ?? "—"),
      METRICS.map((m) => el("td", {}, pct(rows[s][m]))),
      rankers.map((r) => el("td", {}, pct(((baselines[r][domain] || {})[s] || {})["ndcg@20"])))));
    return el("table", {}, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, body));
  }

  async function plot(name) {
    const img = el("img", { alt: `plot ${name}`, class: "plot" });
    const r = await fetch(`/v1/model/evaluation/plots/${encodeURIComponent(name)}`,
      { headers: UI.key() ? { "X-API-Key": UI.key() } : {} });
    if (r.ok) img.src = URL.createObjectURL(await r.blob());
    return el("figure", {}, img, el("figcaption", {}, name.replace(/_/g, " ")));
  }

  async function show() {
    UI.clearErrors();
    try {
      const rep = await get("/v1/model/evaluation");
      const m = rep.metrics;
      facts(document.getElementById("summary"), [
        ["model version", rep.model_version],
        ["best epoch", `${m.best_epoch ?? "—"} of ${m.epochs_run ?? "—"}`],
        ["best validation ndcg@20", pct(m["best_val_ndcg@20"]) + " %"],
        ["seconds per epoch", m.seconds_per_epoch ? m.seconds_per_epoch.toFixed(2) : null],
        ["trained on", m.device],
      ]);
      const box = document.getElementById("domains");
      box.replaceChildren();
      const test = m.test || {};
      if (!Object.keys(test).length) box.append(el("p", { class: "note" }, "This bundle stores no test metrics."));
      for (const [d, rows] of Object.entries(test)) {
        const slices = Object.keys(rows).filter((s) => !s.startsWith("deg_"));
        const degrees = Object.keys(rows).filter((s) => s.startsWith("deg_"));
        const sec = el("section", { "data-domain": d }, el("h2", {}, `${d}: test metrics`),
          table(`${d}: per slice (MICRec${rep.baselines ? " and baselines" : ""})`, rows, slices, rep.baselines, d));
        if (degrees.length) sec.append(table(`${d}: per degree bucket (training interactions of the target item)`, rows, degrees, rep.baselines, d));
        box.append(sec);
      }
      const plots = document.getElementById("plots");
      plots.replaceChildren(...(await Promise.all(rep.plots.map(plot))));
      if (rep.history.length) {
        const keys = Object.keys(rep.history[0]).filter((k) => k === "epoch" || k === "total" || k.startsWith("val_ndcg@20"));
        plots.append(el("details", {}, el("summary", {}, "Training history (per epoch)"),
          el("table", {}, el("thead", {}, el("tr", {}, keys.map((k) => el("th", { scope: "col" }, k)))),
            el("tbody", {}, rep.history.map((r) => el("tr", {}, keys.map((k) => el("td", {},
              typeof r[k] === "number" && k !== "epoch" ? r[k].toFixed(4) : r[k] ?? "—"))))))));
      }
    } catch (err) {
      UI.showError(err);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.addEventListener("keychange", show);
    show();
  });
})();
