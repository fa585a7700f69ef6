// Overview: model, indexes, readiness, store, reload state, the online metrics per bundle
// version (table + hourly CTR chart) and the service's counters.
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

  // Online metrics: a table per (version, domain) and an SVG chart of the hourly CTR.
  const pct = (x) => `${(100 * x).toFixed(1)} %`;
  const withCi = (x, ci, f) => `${f(x)} [${f(ci[0])}, ${f(ci[1])}]`;
  const num = (x) => x.toFixed(3);
  const COLOURS = ["#2556c4", "#b35c00", "#2d7a3e", "#6a3fb5", "#a3161b", "#1f6f8b"];
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function onlineTable(online) {
    const body = document.querySelector("#online tbody");
    clear(body);
    if (!online.length) {
      body.append(el("tr", {}, el("td", { colspan: "8" }, "no recommendations recorded yet")));
      return;
    }
    for (const m of online) {
      body.append(el("tr", { "data-version": m.model_version }, el("th", { scope: "row" }, m.model_version),
        el("td", {}, m.domain), el("td", {}, m.recommendations), el("td", {}, m.observed),
        el("td", {}, withCi(m.ctr, m.ctr_ci, pct)), el("td", {}, withCi(m.hit_rate, m.hit_rate_ci, pct)),
        el("td", {}, withCi(m.mrr, m.mrr_ci, num)), el("td", {}, pct(m.coverage))));
    }
  }

  function onlineChart(online) {
    const fig = document.getElementById("online-chart");
    fig.querySelectorAll("svg, ul").forEach((n) => n.remove());
    const series = online.filter((m) => m.hourly.length);
    if (!series.length) return;
    const W = 640, H = 220, L = 48, R = 12, T = 10, B = 28;
    const hours = series.flatMap((m) => m.hourly.map((p) => p.hour));
    const x0 = Math.min(...hours), x1 = Math.max(...hours) + 3600; // points at each hour's middle
    const yMax = Math.max(0.05, ...series.flatMap((m) => m.hourly.map((p) => p.ctr)));
    const x = (h) => L + ((h - x0) / (x1 - x0)) * (W - L - R);
    const y = (v) => T + (1 - v / yMax) * (H - T - B);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": "CTR per hour by version" });
    chart.append(svg("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#5b6475" }));
    chart.append(svg("line", { x1: L, y1: T, x2: L, y2: y(0), stroke: "#5b6475" }));
    for (const v of [0, yMax / 2, yMax]) {
      chart.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 11 }, pct(v)));
    }
    for (const [h, anchor] of [[x0, "start"], [x1, "end"]]) {
      chart.append(svg("text", { x: x(h), y: H - 8, "text-anchor": anchor, "font-size": 11 },
        new Date(h * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit" })));
    }
    const legend = el("ul", { class: "legend" });
    series.forEach((m, k) => {
      const colour = COLOURS[k % COLOURS.length];
      const pts = m.hourly.map((p) => `${x(p.hour + 1800).toFixed(1)},${y(p.ctr).toFixed(1)}`).join(" ");
      const line = svg("polyline", { points: pts, fill: "none", stroke: colour, "stroke-width": 2,
        class: "series", "data-version": m.model_version, "data-domain": m.domain });
      chart.append(line);
      for (const p of m.hourly) {
        const dot = svg("circle", { cx: x(p.hour + 1800), cy: y(p.ctr), r: 3, fill: colour });
        dot.append(svg("title", {}, `${m.model_version} ${m.domain}: CTR ${pct(p.ctr)} (${p.clicks}/${p.impressions}), ${p.recommendations} lists`));
        chart.append(dot);
      }
      const swatch = el("span", { class: "swatch" }, "\u25A0 ");
      swatch.style.color = colour; // CSSOM: allowed by the page's style-src 'self'
      legend.append(el("li", {}, swatch, `${m.model_version} · ${m.domain}`));
    });
    fig.append(chart, legend);
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
      if (s.online === null) {
        UI.showError(new Error("online metrics: the store could not be read"));
      } else {
        onlineTable(s.online);
        onlineChart(s.online);
      }
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
