// Overview: model, indexes, readiness, store, reload state and the service's counters.
"use strict";
(() => {
  const { el, get, facts, clear } = UI;
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : null);

  async function readiness() {
    // /readyz answers 503 while loading: its body says why, so read it either way.
    const r = await fetch("/readyz");
    return r.json();
  }

  async function reloadState() {
    try {
      const s = await get("/v1/admin/reload");
      return `${s.status}${s.error ? ": " + s.error : ""} (last started ${when(s.started_at) || "never"})`;
    } catch (err) {
      if (err.status === 401 || err.status === 403) return `needs an admin key (${err.detail})`;
      throw err;
    }
  }

  // /readyz's `bundle` (MICREC_REGISTRY_DIR): the version served, the one promoted, and
  // why the promoted one is not served yet when it could not be loaded.
  function registryState(b) {
    if (!b) return "not serving from a registry";
    if (b.error) return `serving ${b.serving}; promoted ${b.wanted} could not be loaded: ${b.error}`;
    if (b.wanted && b.wanted !== b.serving) return `serving ${b.serving}; loading promoted ${b.wanted}`;
    return `serving ${b.serving} (the promoted version)`;
  }

  async function show() {
    UI.clearErrors();
    try {
      const ready = await readiness();
      facts(document.getElementById("health"), [
        ["status", ready.status],
        ["degraded", (ready.degraded || []).join("; ") || "nothing"],
        ["store", ready.store.ok ? "reachable" : `unavailable: ${ready.store.detail}`],
        ["reload", await reloadState()],
        ["bundle registry", registryState(ready.bundle)],
      ]);
      const model = await UI.model();
      facts(document.getElementById("model"), [
        ["version", model.model_version],
        ["registry version", model.bundle_version || "not served from a registry"],
        ["loaded", when(model.loaded_at)],
        ["domains", model.domains.join(", ")],
        ["serving vector", `${model.dim} dimensions`],
        ["encoders", Object.entries(model.encoders).map(([m, e]) => `${m}: ${e.name} (${e.dim})`).join(", ") || "none"],
        ["registered items", model.registered_items],
      ]);
      const body = document.querySelector("#domains tbody");
      clear(body);
      for (const [d, ix] of Object.entries(model.indexes)) {
        body.append(el("tr", {}, el("th", { scope: "row" }, d), el("td", {}, ix.kind), el("td", {}, ix.size),
          el("td", {}, ix.bundle_items), el("td", {}, ix.registered_items), el("td", {}, ix.nprobe ?? "—")));
      }
      const s = await get("/v1/stats");
      const r = s.replica;
      facts(document.getElementById("replica"), [
        ["store", r.store],
        ["change feed applied up to", r.feed_seq === null ? "loading" : `change #${r.feed_seq}`],
        ["registered items replayed", r.replayed === null ? "loading" : (r.replayed ? "yes" : "not yet (store was down at load)")],
        ["follows other replicas every", r.sync_interval_s ? `${r.sync_interval_s} s` : "never (single process)"],
        ["popularity re-read every", r.popularity_refresh_s ? `${r.popularity_refresh_s} s` : "never"],
      ]);
      const rec = Object.entries(s.recommendations).map(([k, v]) => `${k} ${v}`).join(", ");
      const src = Object.entries(s.items_by_source).map(([k, v]) => `${k} ${v}`).join(", ");
      facts(document.getElementById("counters"), [
        ["requests", `${s.requests} (${Object.entries(s.requests_by_status).map(([k, v]) => `${k} ${v}`).join(", ")})`],
        ["recommendations", rec || "none yet"],
        ["items served by source", src || "none yet"],
        ["answers filled by a fallback", s.fallbacks],
        ["items registered", s.registrations],
        ["model loads", Object.entries(s.reloads).map(([k, v]) => `${k} ${v}`).join(", ") || "none"],
        ["store errors", s.store_errors],
      ]);
      const lat = document.querySelector("#latency tbody");
      clear(lat);
      for (const r of s.latency) {
        lat.append(el("tr", {}, el("th", { scope: "row" }, `${r.method} ${r.route}`), el("td", {}, r.count),
          el("td", {}, r.p50_ms ?? "—"), el("td", {}, r.p95_ms ?? "—"), el("td", {}, r.p99_ms ?? "—")));
      }
    } catch (err) {
      UI.showError(err);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("refresh").addEventListener("click", show);
    document.addEventListener("keychange", show);
    show();
  });
})();
