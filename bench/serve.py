"""Load benchmark of the real service: latency, throughput, errors and memory by catalogue
size, worker count and concurrency, against two references measured in the same run.

    python bench/serve.py            # full sweep: 1e4/1e5/1e6 items per domain, 1 and 2
                                     # workers, concurrency 1/8/32/64 (~20 min on 2 cores)
    python bench/serve.py --quick    # smoke run: 1e4 items, 1 worker, c=1/8, short points
    make bench-serve                 # the full sweep

What runs (everything on loopback, thread counts pinned: torch 1, FAISS 1, OMP 1):

* **Model**: a real trained bundle (default ``artifacts/demo-bundle``, ``micrec demo build``)
  whose domain catalogues are padded to N items per domain with synthetic items near the
  real ones (each a mix of two real items' layer states and content vectors plus noise),
  written with ``model.bundle.save_bundle`` so the service loads it through the normal
  path (checksums, ``load_bundle``, ``InferenceEngine``). Padded bundles are cached in
  ``--work-dir``. The service picks flat vs IVF per domain from its settings
  (``MICREC_EXACT_INDEX_MAX_ITEMS``, default 50k: 1e4 exact, 1e5/1e6 IVF).
* **Service**: ``python -m app.cli serve`` (= ``micrec serve``: uvicorn, ``--workers`` 1
  and 2) with the Redis store on a private ``redis-server`` started here (AOF,
  ``appendfsync always``, like production), auth on, log level warning (no access log).
  Before measuring: known users get 5 stored interactions each (``POST /v1/interactions``)
  and every request type is sent a few times on fresh connections (warm-up).
* **Load**: ``bench/serve_loadgen.py`` in its own process: asyncio + aiohttp, closed loop,
  keep-alive, fixed duration per point after a warm-up. Requests (n=10, all 3 domains):
  ``known`` (user id with bundle + stored history), ``inductive`` (anonymous, inline
  20-item history), ``cross`` (user id whose history is only in other domains),
  ``reg_text`` (``POST /v1/items`` title/categories/description) and ``reg_image`` (the
  same + a 512x512 JPEG as base64). Points: each type alone at concurrency 1 (the
  single-request table); the recommend mix (known/inductive/cross in equal parts) at every
  concurrency; registrations alone at concurrency 8; one text+image registration at a
  time under 31 concurrent recommends (``reg_under_load``).
* **References, same run**: (1) the framework ceiling: ``bench/serve_bare.py``, a bare
  FastAPI endpoint returning a constant, under the same uvicorn options and worker counts;
  (2) the work floor: in a separate process, the same bundle, engine and ``DomainIndex``
  (same settings), timing ``engine.embed_user`` + ``index.search`` per request type (and
  content encoding + ``add_item`` + ``upsert`` for registrations) in a plain loop, plus
  recall@100 of the service's index vs exact search on those user vectors.
* **Registration-to-visibility**: register a text+image item, then send
  ``/v1/recommend`` with ``history=[new id]`` on fresh connections until the new id is in
  the answer (``exclude_seen=false``, n=100); with 2 workers the recommend may land on the
  other worker, which learns the item from the store's change feed.
* Server RSS (uvicorn parent + workers, sampled every 0.5 s), server and load-generator CPU
  seconds, and the 1-minute load average are recorded for every point.

Writes ``<out>.json`` (everything), ``<out>.md`` (tables, targets) and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from machine import busy_processes, git_commit, host_facts
from redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
if "PYTHONPATH" not in os.environ and str(ROOT) not in sys.path:
    # (Processes started by the benchmark get PYTHONPATH = the source tree under test.)
    sys.path.insert(0, str(ROOT))

API_KEY = "bench-serve-key-0123456789"
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MICREC_TORCH_THREADS": "1",
    "MICREC_FAISS_THREADS": "1",
}
RECOMMEND_TYPES = ("known", "inductive", "cross")
REGISTER_TYPES = ("reg_text", "reg_image")
TYPES = RECOMMEND_TYPES + REGISTER_TYPES
PAD_SEED = 0
HISTORY_LEN = 20
STORED_PER_USER = 5


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fmt_n(n: int) -> str:
    e = round(float(np.log10(n)))
    return f"1e{e}" if 10**e == n else f"{n:,}"


# --- padded bundles -----------------------------------------------------------------------
def pad_bundle(
    src: Path, dst: Path, n_items: int, *, seed: int = PAD_SEED, blend: bool = True
) -> Path:
    """Write ``src`` with every domain padded to ``n_items`` items (real format).

    A synthetic item k mixes two random real items a, b of its domain (weight w ~ U(0, 0.3)
    on b) in every layer state and in the content vector, plus Gaussian noise of 0.1x the
    per-dimension spread; it keeps a's degree (so it is a graph item like a), is not a
    template, and gets a's title and categories and a small random popularity. Users and
    their histories are the real ones. The score blend's content vectors are mixed the
    same way (and re-normalised), so the padded bundle serves the blend like the real one;
    ``blend=False`` writes it without the blend (model score alone, the pre-blend vectors).
    """
    import torch
    import torch.nn.functional as F

    from model.bundle import load_bundle, save_bundle
    from model.nn.blend import DomainBlend
    from model.nn.foldin import DomainEmbedder
    from model.nn.graph import TemplateMap

    b = load_bundle(src)
    rng = np.random.default_rng(seed)
    model = b.model
    embedders: dict[str, DomainEmbedder] = {}
    catalogue: dict[str, dict[str, Any]] = {}
    histories: dict[str, np.ndarray] = {}
    blends: dict[str, DomainBlend] = {}

    def mixed(x: torch.Tensor, a: np.ndarray, bb: np.ndarray, w: torch.Tensor) -> torch.Tensor:
        std = x.std(dim=0, keepdim=True)
        noise = torch.from_numpy(rng.standard_normal((len(a), x.shape[1]), dtype=np.float32))
        return (1 - w) * x[a] + w * x[bb] + 0.1 * std * noise

    for d, s in b.domains.items():
        e = s.embedder
        n0 = e.n_items
        extra = max(0, n_items - n0)
        a = rng.integers(0, n0, extra)
        bb = rng.integers(0, n0, extra)
        w = torch.from_numpy(rng.uniform(0, 0.3, extra).astype(np.float32)).unsqueeze(1)
        item_layers = torch.cat(
            [
                e.item_layers,
                torch.stack([mixed(e.item_layers[k], a, bb, w) for k in range(e.n_layers + 1)]),
            ],
            dim=1,
        )
        content = None
        if e.item_content is not None:
            content = torch.cat([e.item_content, mixed(e.item_content, a, bb, w)])
        tm = model.templates[d]
        model.templates[d] = TemplateMap(
            tm.user_rows, np.concatenate([tm.item_rows, np.full(extra, -1, dtype=np.int64)])
        )
        embedders[d] = DomainEmbedder(
            domain=d,
            alpha=e.alpha,
            gamma=e.gamma,
            item_layers=item_layers,
            item_degree=torch.cat([e.item_degree, e.item_degree[a]]),
            item_template=e.item_template,  # derived at load time, not saved
            is_template=e.is_template,  # idem
            user_token=e.user_token,
            item_token=e.item_token,
            item_content=content,
            cold_scale=e.cold_scale,
        )
        catalogue[d] = {
            "user_ids": s.user_ids,
            "item_ids": list(s.item_ids) + [pad_id(d, k) for k in range(extra)],
            "titles": list(s.titles) + [s.titles[j] for j in a],
            "categories": list(s.categories) + [s.categories[j] for j in a],
            "popularity": np.concatenate([s.popularity, rng.poisson(1.0, extra)]),
        }
        if blend and b.blend is not None and s.blend is not None:
            c = s.blend.content
            if c is not None:
                c = torch.cat([c, F.normalize(mixed(c, a, bb, w), dim=1)])
            blends[d] = b.blend.for_domain(d, embedders[d].item_degree, content=c)
        users = np.repeat(np.arange(len(s.user_ids)), np.diff(s.history_ptr))
        histories[d] = np.stack([users, s.history_items], axis=1)
    m = b.manifest
    data = dict(m.get("data", {}))
    data["padded"] = {
        "from_bundle": str(src),
        "from_model_version": b.model_version,
        "items_per_domain": n_items,
        "seed": seed,
    }
    return save_bundle(
        dst,
        model=model,
        embedders=embedders,
        catalogue=catalogue,
        histories=histories,
        encoders=m.get("encoders", {}),
        data=data,
        metrics=m.get("metrics", {}),
        blends=blends or None,
        blend=b.blend if blend else None,
    )


def pad_id(domain: str, k: int) -> str:
    return f"{domain}-pad-{k:07d}"


def ensure_bundle(src: Path, work: Path, n_items: int, *, blend: bool = True) -> Path:
    """The padded bundle for ``n_items``, reused when it was made from the same model."""
    from model.bundle import read_manifest

    src_version = read_manifest(src)["model_version"]
    dst = work / (f"bundle-{n_items}" if blend else f"bundle-{n_items}-no-blend")
    if (dst / "manifest.json").is_file():
        padded = read_manifest(dst).get("data", {}).get("padded", {})
        if padded.get("from_model_version") == src_version and padded.get("seed") == PAD_SEED:
            log(f"reusing {dst}")
            return dst
    log(f"padding {src} to {n_items:,} items per domain -> {dst}")
    t = time.perf_counter()
    pad_bundle(src, dst, n_items, blend=blend)
    log(f"padded in {time.perf_counter() - t:.0f} s")
    return dst


# --- requests -------------------------------------------------------------------------------
def make_image(rng: np.random.Generator, size: int = 512) -> bytes:
    """A 512x512 JPEG (a product-photo-sized upload): smooth colour field + texture."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c = rng.uniform(0, 255, (3, 3))
    img = np.stack([c[k, 0] * xx + c[k, 1] * yy + c[k, 2] * (1 - xx) for k in range(3)], -1)
    img = np.clip(img / 2 + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def build_requests(src: Path, n_items: int, *, seed: int = 0, count: int = 300) -> dict[str, Any]:
    """Request bodies per type (JSON strings) + what the work floor needs to replay them."""
    from model.bundle import load_bundle

    b = load_bundle(src)
    rng = np.random.default_rng(seed)
    domains = sorted(b.domains)
    has: dict[str, set[str]] = {}
    for d, s in b.domains.items():
        counts = np.diff(s.history_ptr)
        has[d] = {u for u, c in zip(s.user_ids, counts.tolist(), strict=True) if c > 0}
    all_users = sorted(set().union(*has.values()))
    known: list[dict[str, Any]] = []
    cross: list[dict[str, Any]] = []
    for u in rng.permutation(all_users).tolist():
        in_doms = [d for d in domains if u in has[d]]
        out_doms = [d for d in domains if u not in has[d]]
        if len(known) < count:
            known.append({"user_id": u, "domain": str(rng.choice(in_doms))})
        if out_doms and len(cross) < count:
            cross.append({"user_id": u, "domain": str(rng.choice(out_doms))})
    inductive = []
    for k in range(count):
        d = domains[k % len(domains)]
        n0 = len(b.domains[d].item_ids)
        picks = rng.choice(n_items, HISTORY_LEN, replace=False)
        ids = [b.domains[d].item_ids[j] if j < n0 else pad_id(d, j - n0) for j in picks]
        inductive.append({"history": ids, "domain": d})
    # Stored history for known users: STORED_PER_USER items of their domain.
    stored: dict[str, list[dict[str, str]]] = {}
    for r in known:
        d = r["domain"]
        ids = b.domains[d].item_ids
        stored[r["user_id"]] = [
            {"user_id": r["user_id"], "item_id": ids[j], "domain": d}
            for j in rng.choice(len(ids), STORED_PER_USER, replace=False)
        ]
    images = [base64.b64encode(make_image(rng)).decode() for _ in range(8)]
    reg_text, reg_image = [], []
    for k in range(64):
        d = domains[k % len(domains)]
        s = b.domains[d]
        j = int(rng.integers(len(s.item_ids)))
        body = {
            "item_id": "__ID__",
            "domain": d,
            "title": f"{s.titles[j]} (new {k})",
            "categories": s.categories[j].split("|") if s.categories[j] else [],
            "description": f"A new product similar to {s.titles[j]}.",
        }
        reg_text.append(json.dumps(body))
        reg_image.append(json.dumps({**body, "image_base64": images[k % len(images)]}))
    return {
        "bodies": {
            "known": [json.dumps(r) for r in known],
            "inductive": [json.dumps(r) for r in inductive],
            "cross": [json.dumps(r) for r in cross],
            "reg_text": reg_text,
            "reg_image": reg_image,
        },
        "stored": stored,
        "image_bytes": [len(base64.b64decode(i)) for i in images],
    }


# --- the work floor (separate process) ----------------------------------------------------
def floor_worker(args: argparse.Namespace) -> int:
    """In-process cost of the model work: embed_user + DomainIndex.search per request."""
    import torch

    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    from PIL import Image

    from app.content import open_image
    from app.engine import load_engine
    from app.index import measure_recall
    from app.settings import Settings
    from app.state import build_domain_index
    from model.data.dataset import item_text

    spec = json.loads(Path(args.floor_spec).read_text())
    settings = Settings(**spec["settings"])
    t = time.perf_counter()
    engine = load_engine(Path(spec["bundle"]))
    load_s = time.perf_counter() - t
    indexes = {}
    t = time.perf_counter()
    for d in engine.domains:
        indexes[d] = build_domain_index(engine, d, settings)
    build_s = time.perf_counter() - t
    stored = spec["stored"]
    out: dict[str, Any] = {"load_s": load_s, "index_build_s": build_s, "types": {}}
    out["index_kind"] = {d: i.kind for d, i in indexes.items()}
    out["index_nprobe"] = {d: i.nprobe for d, i in indexes.items()}
    out["index_calibration"] = {
        d: None if i.calibration is None else dataclasses.asdict(i.calibration)
        for d, i in indexes.items()
    }
    calls = int(spec["calls"])
    queries: dict[str, list[np.ndarray]] = {d: [] for d in engine.domains}

    def history_of(req: dict[str, Any]) -> dict[str, list[str]]:
        by: dict[str, list[str]] = {}
        if "user_id" in req:
            for d, ids in engine.bundle_history(req["user_id"]).items():
                by.setdefault(d, []).extend(ids)
            for row in stored.get(req["user_id"], []):
                by.setdefault(row["domain"], []).append(row["item_id"])
        for iid in req.get("history", []):
            item_domain = engine.item_domain(iid)
            if item_domain is not None:
                by.setdefault(item_domain, []).append(iid)
        return by

    for kind in RECOMMEND_TYPES:
        reqs = [json.loads(b) for b in spec["bodies"][kind]]
        times = []
        for k in range(calls + 10):
            req = reqs[k % len(reqs)]
            t = time.perf_counter()
            by = history_of(req)
            emb = engine.embed_user(req["domain"], by)
            seen = {i for ids in by.values() for i in ids}
            indexes[req["domain"]].search(emb.vector.reshape(1, -1), 10, exclude=[seen])
            if k >= 10:  # first calls warm caches
                times.append(time.perf_counter() - t)
                if len(queries[req["domain"]]) < 100:
                    queries[req["domain"]].append(emb.vector)
        out["types"][kind] = lat_summary(times)

    image = Image.new("RGB", (64, 64), "gray")
    engine.encode_content(text="warm-up", image=image)  # load the encoders
    engine.encode_content(text="warm-up", image=image)
    for kind in REGISTER_TYPES:
        times = []
        for k in range(max(5, calls // 20)):
            body = json.loads(spec["bodies"][kind][k % len(spec["bodies"][kind])])
            t = time.perf_counter()
            img = None
            if "image_base64" in body:
                raw = base64.b64decode(body["image_base64"])
                img = open_image(raw, max_bytes=10**8, max_pixels=10**8)
            text = item_text(body["title"], "|".join(body["categories"]), body["description"])
            content = engine.encode_content(text=text, image=img)
            iid = f"floor-{kind}-{k}"
            vec = engine.add_item(iid, body["domain"], content)
            indexes[body["domain"]].upsert([iid], vec.reshape(1, -1))
            times.append(time.perf_counter() - t)
        out["types"][kind] = lat_summary(times)
    # Recall@100 of the serving index vs exact search, on these users' vectors.
    out["recall_at_100"] = {
        d: measure_recall(indexes[d], np.stack(q), 100) for d, q in queries.items() if q
    }
    out["index_options"] = index_options(engine, indexes, queries)
    import psutil

    out["rss_mb"] = psutil.Process().memory_info().rss / 2**20
    Path(args.floor_out).write_text(json.dumps(out))
    return 0


def index_options(
    engine: Any, indexes: dict[str, Any], queries: dict[str, list[np.ndarray]]
) -> list[dict[str, Any]]:
    """For one domain: search latency (k=10, one query at a time, 1 thread) and recall@100
    of exact search and, when the serving index is IVF, of IVF at larger nprobe: what the
    index settings trade at this size."""
    from app.index import DomainIndex, measure_recall

    d = next(d for d, q in queries.items() if q)
    q = np.stack(queries[d])
    cat = engine.catalogue(d)
    options: list[dict[str, Any]] = []

    def timed(index: Any, label: str) -> None:
        t = time.perf_counter()
        for row in q:
            index.search(row.reshape(1, -1), 10)
        ms = (time.perf_counter() - t) / len(q) * 1000
        rec = measure_recall(index, q, 100) if index.kind == "ivf" else 1.0
        options.append({"domain": d, "index": label, "search_ms": ms, "recall_at_100": rec})

    serving = indexes[d]
    if serving.kind == "ivf":
        default = serving.nprobe
        for nprobe in sorted({default, 128, 512}):
            serving.set_nprobe(nprobe)
            timed(serving, f"ivf nlist={serving.nlist} nprobe={nprobe}")
        serving.set_nprobe(default)
        exact = DomainIndex(d, engine.dim, exact_max_items=len(cat.item_ids), threads=1)
        exact.build(list(cat.item_ids), np.ascontiguousarray(cat.vectors, dtype=np.float32))
        timed(exact, "flat (exact)")
    else:
        timed(serving, "flat (exact)")
    return options


def lat_summary(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1000.0
    return {
        "count": len(ms),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


# --- processes ------------------------------------------------------------------------------
class LoadAvg:
    """Samples the 1-minute load average every few seconds in the background."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every: float) -> None:
        while True:
            self.samples.append((time.time(), os.getloadavg()[0]))
            if self._stop.wait(every):
                return

    def start(self) -> LoadAvg:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def between(self, t0: float, t1: float) -> float | None:
        vals = [v for t, v in self.samples if t0 <= t <= t1 + 5]
        return round(max(vals), 2) if vals else None


class ServerProcess:
    """A uvicorn server started here (own process group, so stopping it stops its workers)."""

    def __init__(
        self, cmd: list[str], env: dict[str, str], port: int, log_path: Path, cwd: Path = ROOT
    ) -> None:
        self.cmd, self.env, self.port, self.log_path, self.cwd = cmd, env, port, log_path, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def processes(self) -> list[Any]:
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return []

    def rss_mb(self) -> float:
        total = 0
        for p in self.processes():
            with suppress(Exception):
                total += p.memory_info().rss
        return total / 2**20

    def memory(self) -> dict[str, Any]:
        """RSS, PSS and USS (MB) summed over the server's processes, and per process. RSS
        counts a page shared by N processes N times; PSS counts 1/N of it in each, so the
        PSS sum is what the machine holds."""
        out: dict[str, Any] = {"rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0, "processes": []}
        for p in self.processes():
            with suppress(Exception):
                m = p.memory_full_info()
                row = {"pid": p.pid, "name": " ".join(p.cmdline()[-4:])[:80]}
                for key in ("rss", "pss", "uss"):
                    row[f"{key}_mb"] = getattr(m, key) / 2**20
                    out[f"{key}_mb"] += row[f"{key}_mb"]
                out["processes"].append(row)
        return out

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except Exception:
                pass
        return total

    def wait_ready(self, path: str, workers: int, timeout_s: float) -> float:
        """Seconds until ``path`` answered 200 on 4*workers fresh connections in a row."""
        import http.client

        t0 = time.monotonic()
        ok = 0
        while ok < 4 * workers:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"server exited; log: {self.log_path}\n{self.log_tail()}")
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"server not ready after {timeout_s} s; log: {self.log_path}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", path)
                status = c.getresponse().status
                c.close()
            except OSError:
                status = 0
            if status == 200:
                ok += 1
            else:
                ok = 0
                time.sleep(0.5)
        return time.monotonic() - t0

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def http_json(
    base: str, method: str, path: str, body: Any = None, timeout: float = 60
) -> tuple[int, Any]:
    """One request on a fresh connection (so with 2 workers it may reach either)."""
    import http.client

    u = base.removeprefix("http://")
    host, port = u.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"X-API-Key": API_KEY}
    data = None
    if body is not None:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        headers["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    raw = r.read()
    c.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw.decode(errors="replace")


@contextmanager
def redis_server() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


# --- the benchmark --------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="micrec-bench-serve-"))
        self.loadavg = LoadAvg().start()
        self.points: list[dict[str, Any]] = []
        self.source = Path(args.source_root).resolve() if args.source_root else ROOT

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICREC_")}
        env.update(THREAD_ENV)
        env["PYTHONPATH"] = str(self.source)
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
        env.update(extra)
        return env

    def run_point(
        self,
        server: ServerProcess,
        meta: dict[str, Any],
        groups: list[dict[str, Any]],
        duration: float,
    ) -> dict[str, Any]:
        spec = {
            "base_url": server.base_url,
            "duration_s": duration,
            "warmup_s": self.args.warmup,
            "timeout_s": 60,
            "headers": {"X-API-Key": API_KEY},
            "groups": groups,
        }
        tag = f"p{len(self.points)}"
        spec_path, out_path = self.tmp / f"{tag}-spec.json", self.tmp / f"{tag}-out.json"
        spec_path.write_text(json.dumps(spec))
        cpu0 = server.cpu_s()
        t0 = time.time()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "serve_loadgen.py"),
                str(spec_path),
                str(out_path),
            ],
            env=self.env({}),
        )
        rss = []
        while proc.poll() is None:
            rss.append(server.rss_mb())
            time.sleep(0.5)
        t1 = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}) at {meta}")
        res = json.loads(out_path.read_text())
        point = {
            **meta,
            "duration_s": duration,
            "groups": res["groups"],
            "loadgen_cpu_s": res["loadgen_cpu_s"],
            "server_cpu_s": server.cpu_s() - cpu0,
            "server_rss_mb_max": max(rss) if rss else server.rss_mb(),
            "loadavg_1m_max": self.loadavg.between(t0, t1),
            "wall_s": t1 - t0,
        }
        total = {
            "count": sum(g["count"] for g in res["groups"].values()),
            "errors": sum(g["errors"] for g in res["groups"].values()),
        }
        point["total"] = total
        self.points.append(point)
        brief = ", ".join(
            f"{name}: {g.get('p50_ms', 0):.1f}/{g.get('p99_ms', 0):.1f} ms p50/p99, "
            f"{g.get('throughput_rps', 0):.1f} rps, {g['errors']} err"
            for name, g in res["groups"].items()
        )
        log(f"{meta} -> {brief}; rss {point['server_rss_mb_max']:.0f} MB")
        return point

    # references
    def bare(self) -> None:
        a = self.args
        for workers in a.workers:
            port = free_port()
            cmd = [sys.executable, "-m", "uvicorn", "bench.serve_bare:app"]
            cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
            # The HTTP protocol `micrec serve` runs (TCP_NODELAY on every connection).
            cmd += ["--log-level", "warning", "--http", "app.commands.serve:NoDelayHTTPProtocol"]
            env = self.env({"PYTHONPATH": str(ROOT)})
            server = ServerProcess(cmd, env, port, self.tmp / f"bare-{workers}.log")
            server.start()
            try:
                server.wait_ready("/docs", workers, 60)
                body = [json.dumps({"user_id": "u1", "domain": "office"})]
                for c in a.concurrency:
                    group = {"name": "bare", "tasks": c, "path": "/v1/recommend", "bodies": body}
                    meta = {"kind": "bare", "workers": workers, "concurrency": c}
                    self.run_point(server, meta, [group], a.bare_duration)
            finally:
                server.stop()

    def floor(self, n: int, bundle: Path, reqs: dict[str, Any]) -> dict[str, Any]:
        spec = {
            "bundle": str(bundle),
            "settings": self.index_settings(),
            "bodies": reqs["bodies"],
            "stored": reqs["stored"],
            "calls": self.args.floor_calls,
        }
        spec_path, out_path = self.tmp / f"floor-{n}.json", self.tmp / f"floor-{n}-out.json"
        spec_path.write_text(json.dumps(spec))
        t0 = time.time()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--floor-spec",
                str(spec_path),
                "--floor-out",
                str(out_path),
            ],
            env=self.env({}),
            check=True,
        )
        res: dict[str, Any] = json.loads(out_path.read_text())
        res["loadavg_1m_max"] = self.loadavg.between(t0, time.time())
        log(
            f"floor {fmt_n(n)}: "
            + ", ".join(f"{k} p50 {v['p50_ms']:.2f} ms" for k, v in res["types"].items())
            + f"; recall@100 {res['recall_at_100']}"
        )
        return res

    def index_settings(self) -> dict[str, Any]:
        a = self.args
        s: dict[str, Any] = {"exact_index_max_items": a.exact_max_items, "ivf_nprobe": a.nprobe}
        if a.ivf_nlist:
            s["ivf_nlist"] = a.ivf_nlist
        return s

    def service(self, n: int, bundle: Path, reqs: dict[str, Any], workers: int) -> dict[str, Any]:
        a = self.args
        info: dict[str, Any] = {"items_per_domain": n, "workers": workers}
        with redis_server() as redis_url:
            port = free_port()
            extra = {
                "MICREC_BUNDLE_PATH": str(bundle),
                "MICREC_STORE_URL": redis_url,
                "MICREC_API_KEYS": API_KEY,
                "MICREC_LOG_LEVEL": "warning",
                "MICREC_EXACT_INDEX_MAX_ITEMS": str(a.exact_max_items),
                "MICREC_IVF_NPROBE": str(a.nprobe),
            }
            if a.ivf_nlist:
                extra["MICREC_IVF_NLIST"] = str(a.ivf_nlist)
            if a.request_threads:
                extra["MICREC_REQUEST_THREADS"] = str(a.request_threads)
            for item in a.service_env:
                key, _, value = item.partition("=")
                extra[key] = value
            cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
            cmd += ["--port", str(port), "--workers", str(workers)]
            log_path = self.tmp / f"service-{n}-{workers}.log"
            server = ServerProcess(cmd, self.env(extra), port, log_path, cwd=self.source)
            t = time.perf_counter()
            server.start()
            try:
                info["ready_s"] = server.wait_ready("/readyz", workers, a.ready_timeout)
                log(f"service {fmt_n(n)} x{workers} ready in {info['ready_s']:.0f} s")
                self.seed_and_warm(server, reqs, workers)
                info["startup_s"] = time.perf_counter() - t
                info["rss_mb_idle"] = server.rss_mb()
                info["memory_idle"] = server.memory()
                self.service_points(server, reqs, n, workers)
                if "visibility" not in a.skip:
                    info["visibility"] = self.visibility(server, reqs, a.visibility_trials)
                info["rss_mb_end"] = server.rss_mb()
                info["memory_end"] = server.memory()
                info["log_tail"] = server.log_tail(10)
            finally:
                server.stop()
        return info

    def seed_and_warm(self, server: ServerProcess, reqs: dict[str, Any], workers: int) -> None:
        rows = [r for rs in reqs["stored"].values() for r in rs]
        deadline = time.monotonic() + self.args.ready_timeout

        def call(path: str, body: Any) -> tuple[int, Any]:
            # With several workers /readyz may have answered from one that was ready while
            # another is still loading (503): retry until every answer is a model's.
            while True:
                status, resp = http_json(server.base_url, "POST", path, body)
                if status != 503 or time.monotonic() > deadline:
                    return status, resp
                time.sleep(1.0)

        for k in range(0, len(rows), 500):
            status, body = call("/v1/interactions", {"interactions": rows[k : k + 500]})
            if status != 200:
                raise RuntimeError(f"seeding interactions failed: {status} {body}")
        # Every request type a few times on fresh connections, so each worker has loaded
        # its encoders and run every code path at least once.
        for k in range(3 * workers):
            for kind in TYPES:
                body = reqs["bodies"][kind][k % len(reqs["bodies"][kind])]
                path = "/v1/items" if kind in REGISTER_TYPES else "/v1/recommend"
                body = body.replace("__ID__", f"warm-{kind}-{k}")
                status, resp = call(path, body)
                if status >= 400:
                    raise RuntimeError(f"warm-up {kind} failed: {status} {resp}")
        # Then /readyz must answer 200 on 50 fresh connections in a row.
        server.wait_ready("/readyz", workers * 12 + 2, self.args.ready_timeout)

    def service_points(
        self, server: ServerProcess, reqs: dict[str, Any], n: int, workers: int
    ) -> None:
        a = self.args
        bodies = reqs["bodies"]
        run_tag = f"{n}-{workers}-{int(time.time())}"

        def group(kind: str, tasks: int, name: str | None = None) -> dict[str, Any]:
            g: dict[str, Any] = {"name": name or kind, "tasks": tasks, "bodies": bodies[kind]}
            if kind in REGISTER_TYPES:
                g |= {"path": "/v1/items", "id_prefix": f"{kind}-{run_tag}-{len(self.points)}"}
            else:
                g["path"] = "/v1/recommend"
            return g

        base = {"kind": "service", "items_per_domain": n, "workers": workers}
        for kind in TYPES if "single" not in a.skip else ():
            meta = {**base, "scenario": f"single_{kind}", "concurrency": 1}
            self.run_point(server, meta, [group(kind, 1)], a.single_duration)
        for c in a.concurrency:
            # Recommend mix: equal shares of the three user types, interleaved.
            mix = [
                b for trio in zip(*(bodies[k] for k in RECOMMEND_TYPES), strict=False) for b in trio
            ]
            g = {"name": "recommend_mix", "tasks": c, "path": "/v1/recommend", "bodies": mix}
            meta = {**base, "scenario": "recommend_mix", "concurrency": c}
            self.run_point(server, meta, [g], a.duration)
        if "register" in a.skip:
            return
        if not a.quick:
            for kind in REGISTER_TYPES:
                meta = {**base, "scenario": f"{kind}_c8", "concurrency": 8}
                self.run_point(server, meta, [group(kind, 8)], a.register_duration)
        mix = [b for trio in zip(*(bodies[k] for k in RECOMMEND_TYPES), strict=False) for b in trio]
        c = 32 if not a.quick else 8
        groups = [
            {"name": "recommend_mix", "tasks": c - 1, "path": "/v1/recommend", "bodies": mix},
            group("reg_image", 1),
        ]
        meta = {**base, "scenario": "reg_under_load", "concurrency": c}
        self.run_point(server, meta, groups, a.duration)

    def visibility(
        self, server: ServerProcess, reqs: dict[str, Any], trials: int
    ) -> dict[str, Any]:
        """Register a text+image item under a category no other item has, then send
        ``/v1/recommend`` for ``history=[it]`` filtered on that category (n=1) on fresh
        connections until the new item is returned. (Without the filter a cold item need
        not rank in anyone's top n, so absence would prove nothing.)"""
        out: list[dict[str, Any]] = []
        stamp = int(time.time() * 1000)
        for k in range(trials):
            body = json.loads(reqs["bodies"]["reg_image"][k % len(reqs["bodies"]["reg_image"])])
            iid = f"visible-{stamp}-{k}"
            category = f"benchvisible{stamp}x{k}"
            body |= {"item_id": iid, "categories": [category]}
            t0 = time.perf_counter()
            status, resp = http_json(server.base_url, "POST", "/v1/items", body)
            t_created = time.perf_counter()
            if status != 201:
                out.append({"error": f"{status} {resp}"})
                continue
            polls = 0
            source = None
            rec = {
                "history": [iid],
                "domain": body["domain"],
                "n": 1,
                "category": category,
                "exclude_seen": False,
            }
            t_poll = t_created
            while time.perf_counter() - t_created < 5.0:
                polls += 1
                t_poll = time.perf_counter()
                status, resp = http_json(server.base_url, "POST", "/v1/recommend", rec)
                items = resp.get("items", []) if status == 200 else []
                if items and items[0]["item_id"] == iid:
                    source = items[0]["source"]
                    break
            t_seen = time.perf_counter()
            out.append(
                {
                    "register_ms": (t_created - t0) * 1000,
                    "created_to_returned_ms": (t_seen - t_created) * 1000 if source else None,
                    "last_recommend_ms": (t_seen - t_poll) * 1000,
                    "polls": polls,
                    "source": source,
                }
            )
        ok = [o for o in out if o.get("source")]
        summary: dict[str, Any] = {"trials": out, "returned": len(ok), "total": len(out)}
        if ok:
            v = np.array([o["created_to_returned_ms"] for o in ok])
            summary |= {
                "first_poll_share": sum(o["polls"] == 1 for o in ok) / len(ok),
                "created_to_returned_ms_p50": float(np.percentile(v, 50)),
                "created_to_returned_ms_max": float(v.max()),
                "sources": sorted({o["source"] for o in ok}),
            }
        log(
            f"visibility: {summary.get('returned')}/{summary.get('total')} returned, "
            f"on first poll {summary.get('first_poll_share')}, "
            f"p50 {summary.get('created_to_returned_ms_p50')} ms, "
            f"max {summary.get('created_to_returned_ms_max')} ms, {summary.get('sources')}"
        )
        return summary

    def run(self) -> dict[str, Any]:
        a = self.args
        started = dt.datetime.now(dt.UTC)
        report: dict[str, Any] = {
            "command": a.command_line,
            "date": started.isoformat(timespec="seconds"),
            "git_commit": git_commit(),
            "machine": machine_info(),
            "params": {k: v for k, v in vars(a).items() if not k.startswith("floor_")},
            "floors": {},
            "services": [],
        }
        src = Path(a.bundle)
        if not (src / "manifest.json").is_file():
            raise SystemExit(f"no bundle at {src}: run `micrec demo build` first")
        work = Path(a.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        bundles = {n: ensure_bundle(src, work, n, blend=not a.no_blend).resolve() for n in a.sizes}
        report["bare"] = []
        if "bare" not in a.skip:
            t_bare = len(self.points)
            self.bare()
            report["bare"] = self.points[t_bare:]
        for n in a.sizes:
            reqs = build_requests(src, n)
            report["image_bytes"] = reqs["image_bytes"]
            if "floor" not in a.skip:
                report["floors"][str(n)] = self.floor(n, bundles[n], reqs)
            for workers in a.workers:
                first = len(self.points)
                try:
                    info = self.service(n, bundles[n], reqs, workers)
                except Exception as err:  # record it and go on with the other points
                    log(f"service {fmt_n(n)} x{workers} FAILED: {err}")
                    info = {"items_per_domain": n, "workers": workers, "error": str(err)}
                info["points"] = self.points[first:]
                report["services"].append(info)
                self.save(report, partial=True)
        self.loadavg.stop()
        report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        report["duration_min"] = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
        report["loadavg_samples"] = self.loadavg.samples
        report["machine"]["loadavg_1m_mean"] = round(
            float(np.mean([v for _, v in self.loadavg.samples])), 2
        )
        report["machine"]["loadavg_1m_max"] = round(max(v for _, v in self.loadavg.samples), 2)
        report["targets"] = targets(report)
        self.save(report, partial=False)
        return report

    def save(self, report: dict[str, Any], *, partial: bool) -> None:
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        suffix = ".partial.json" if partial else ".json"
        out.with_suffix(suffix).write_text(json.dumps(report, indent=1, default=str) + "\n")
        if not partial:
            out.with_suffix(".partial.json").unlink(missing_ok=True)
            out.with_suffix(".md").write_text(markdown(report))
            plot(report, out.with_suffix(".png"))


def machine_info() -> dict[str, Any]:
    import faiss
    import torch

    other = busy_processes("bench/serve")
    return {
        **host_facts(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "other_busy_processes_at_start": other,
        "torch": torch.__version__,
        "faiss": faiss.__version__,
    }


# --- targets and report -----------------------------------------------------------------------
def find(report: dict[str, Any], **kw: Any) -> dict[str, Any] | None:
    pts = [p for s in report["services"] for p in s["points"]] + report.get("bare", [])
    for p in pts:
        if all(p.get(k) == v for k, v in kw.items()):
            return p
    return None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets (1e5 items per domain, concurrency 32; 1e6 p99), per worker count."""
    out: list[dict[str, Any]] = []
    workers = sorted({s["workers"] for s in report["services"]})

    def add(name: str, value: float | None, limit: float, unit: str, cond: str, **ctx: Any) -> None:
        if value is None:
            return
        met = value <= limit if cond == "<=" else value >= limit
        out.append(
            {
                "target": name,
                "value": value,
                "limit": limit,
                "unit": unit,
                "op": cond,
                "met": bool(met),
                "margin": value - limit,
                **ctx,
            }
        )

    for w in workers:
        mix = find(
            report,
            kind="service",
            items_per_domain=100_000,
            workers=w,
            scenario="recommend_mix",
            concurrency=32,
        )
        bare = find(report, kind="bare", workers=w, concurrency=32)
        if mix:
            g = mix["groups"]["recommend_mix"]
            add("recommend p99 (1e5, c=32)", g.get("p99_ms"), 50, "ms", "<=", workers=w)
            if bare:
                ratio = g["throughput_rps"] / bare["groups"]["bare"]["throughput_rps"]
                add("recommend throughput / bare (1e5, c=32)", ratio, 0.5, "x", ">=", workers=w)
            fl = report["floors"].get("100000")
            if fl:
                raw = float(np.mean([fl["types"][k]["p50_ms"] for k in RECOMMEND_TYPES]))
                add(
                    "recommend p50 / raw work p50 (1e5, c=32)",
                    g["p50_ms"] / raw,
                    3,
                    "x",
                    "<=",
                    workers=w,
                )
                single = [
                    find(
                        report,
                        kind="service",
                        items_per_domain=100_000,
                        workers=w,
                        scenario=f"single_{k}",
                    )
                    for k in RECOMMEND_TYPES
                ]
                if all(single):
                    s50 = float(
                        np.mean(
                            [
                                p["groups"][k]["p50_ms"]  # type: ignore[index]
                                for p, k in zip(single, RECOMMEND_TYPES, strict=True)
                            ]
                        )
                    )
                    add(
                        "recommend p50 / raw work p50 (1e5, c=1)",
                        s50 / raw,
                        3,
                        "x",
                        "<=",
                        workers=w,
                    )
        reg = find(
            report, kind="service", items_per_domain=100_000, workers=w, scenario="reg_under_load"
        )
        if reg:
            add(
                "text+image registration p99 (1e5, under c=31 recommend load)",
                reg["groups"]["reg_image"].get("p99_ms"),
                500,
                "ms",
                "<=",
                workers=w,
            )
        reg8 = find(
            report, kind="service", items_per_domain=100_000, workers=w, scenario="reg_image_c8"
        )
        if reg8:
            add(
                "text+image registration p99 (1e5, c=8 registrations)",
                reg8["groups"]["reg_image"].get("p99_ms"),
                500,
                "ms",
                "<=",
                workers=w,
            )
        big = find(
            report,
            kind="service",
            items_per_domain=1_000_000,
            workers=w,
            scenario="recommend_mix",
            concurrency=32,
        )
        if big:
            add(
                "recommend p99 (1e6, c=32)",
                big["groups"]["recommend_mix"].get("p99_ms"),
                100,
                "ms",
                "<=",
                workers=w,
            )
    fl6 = report["floors"].get("1000000")
    if fl6:
        add(
            "recall@100 vs exact (1e6, serving index)",
            min(fl6["recall_at_100"].values()),
            0.95,
            "",
            ">=",
        )
    return out


def floor_p50(report: dict[str, Any], n: int, kinds: tuple[str, ...]) -> float | None:
    """Mean p50 (ms) of the work floor over ``kinds`` at ``n`` items, None if not measured."""
    fl = report["floors"].get(str(n))
    if not fl:
        return None
    return float(np.mean([fl["types"][k]["p50_ms"] for k in kinds]))


def _g(p: dict[str, Any] | None, name: str, key: str) -> float | None:
    if p is None:
        return None
    v = p["groups"].get(name, {}).get(key)
    return None if v is None else float(v)


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    sizes = [int(s) for s in report["params"]["sizes"]]
    workers = sorted({s["workers"] for s in report["services"]})
    conc = report["params"]["concurrency"]
    L: list[str] = ["# Service load benchmark (bench/serve.py)", ""]
    L += [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']} (finished {report.get('finished')}, "
        f"{report.get('duration_min', 0):.1f} min), commit {report['git_commit']}  ",
        f"Machine: {m['cpu_model']}, {m['nproc']} cores, {m['mem_gb']} GB RAM; Python "
        f"{m['python']}, torch {m['torch']}, faiss {m['faiss']}  ",
        f"Load average (1 min) at start {m['loadavg_start'][0]}, during the run mean "
        f"{m.get('loadavg_1m_mean')} / max {m.get('loadavg_1m_max')}  ",
    ]
    if m["other_busy_processes_at_start"]:
        L.append(
            "Other processes using the CPUs when the run started: "
            + "; ".join(f"`{x}`" for x in m["other_busy_processes_at_start"])
            + "  "
        )
    for sup in report.get("supplementary", []):
        sm = sup["machine"]
        L.append(
            f"{sup['what']}: `{sup['command']}`, {sup['date']}, commit {sup['git_commit']}, "
            f"load average mean {sm.get('loadavg_1m_mean')} / max {sm.get('loadavg_1m_max')}  "
        )
    L.append("")
    # single-request table (the issue-4 figure)
    L += ["## Single requests (concurrency 1, 1 worker)", ""]
    L += ["Latency of one request at a time over keep-alive HTTP (p50 / p99 ms).", ""]
    head = "| request | " + " | ".join(f"{fmt_n(n)} items/domain" for n in sizes) + " |"
    L += [head, "|---|" + "---:|" * len(sizes)]
    names = {
        "known": "recommend, known user",
        "inductive": "recommend, inductive (20-item inline history)",
        "cross": "recommend, cross-domain user",
        "reg_text": "register item, text only",
        "reg_image": "register item, text + 512x512 JPEG",
    }
    for kind in TYPES:
        cells = []
        for n in sizes:
            p = find(
                report, kind="service", items_per_domain=n, workers=1, scenario=f"single_{kind}"
            )
            cells.append(f"{_f(_g(p, kind, 'p50_ms'))} / {_f(_g(p, kind, 'p99_ms'))}")
        L.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    L += [
        "",
        "Raw in-process work for the same requests (p50 ms: embed_user + index search; "
        "registrations: decode + encode + add_item + index upsert):",
        "",
    ]
    L += [head, "|---|" + "---:|" * len(sizes)]
    for kind in TYPES:
        cells = [_f(floor_p50(report, n, (kind,)), 2) for n in sizes]
        L.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    # targets
    L += ["", "## Targets", ""]
    L += ["| target | workers | value | limit | met | by |", "|---|---:|---:|---:|---|---:|"]
    for t in report.get("targets", []):
        L.append(
            f"| {t['target']} | {t.get('workers', '-')} | {t['value']:.3g} {t['unit']} | "
            f"{t['op']} {t['limit']:g} | {'met' if t['met'] else '**missed**'} | "
            f"{t['margin']:+.3g} |"
        )
    # load sweep
    L += ["", "## Recommend mix vs concurrency", ""]
    L += [
        "Equal shares of known, inductive and cross-domain users, all 3 domains, n=10. "
        "`x bare` = throughput / the bare endpoint's at the same workers and concurrency; "
        "`p50 / raw` = service p50 / raw work p50 (mean of the three types).",
        "",
        "| items/domain | workers | c | rps | p50 ms | p95 ms | p99 ms | errors | x bare | "
        "p50 / raw | server RSS MB | server CPU ms/req | loadgen CPU ms/req | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        raw = floor_p50(report, n, RECOMMEND_TYPES)
        for w in workers:
            for c in conc:
                p = find(
                    report,
                    kind="service",
                    items_per_domain=n,
                    workers=w,
                    scenario="recommend_mix",
                    concurrency=c,
                )
                if p is None:
                    continue
                b = find(report, kind="bare", workers=w, concurrency=c)
                rps = _g(p, "recommend_mix", "throughput_rps") or 0.0
                xb = rps / b["groups"]["bare"]["throughput_rps"] if b else None
                p50 = _g(p, "recommend_mix", "p50_ms")
                cnt = max(1, p["total"]["count"])
                L.append(
                    f"| {fmt_n(n)} | {w} | {c} | {rps:,.1f} | {_f(p50)} | "
                    f"{_f(_g(p, 'recommend_mix', 'p95_ms'))} | "
                    f"{_f(_g(p, 'recommend_mix', 'p99_ms'))} | {p['total']['errors']} | "
                    f"{_f(xb, 2)} | {_f(p50 / raw if p50 and raw else None)} | "
                    f"{p['server_rss_mb_max']:,.0f} | {p['server_cpu_s'] / cnt * 1000:.1f} | "
                    f"{p['loadgen_cpu_s'] / cnt * 1000:.1f} | {p['loadavg_1m_max']} |"
                )
    L += ["", "## Bare FastAPI endpoint (framework ceiling)", ""]
    L += [
        "| workers | c | rps | p50 ms | p99 ms | errors | loadgen CPU ms/req |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.get("bare", []):
        cnt = max(1, p["total"]["count"])
        L.append(
            f"| {p['workers']} | {p['concurrency']} | {_g(p, 'bare', 'throughput_rps'):,.1f} | "
            f"{_f(_g(p, 'bare', 'p50_ms'), 2)} | {_f(_g(p, 'bare', 'p99_ms'), 2)} | "
            f"{p['total']['errors']} | {p['loadgen_cpu_s'] / cnt * 1000:.2f} |"
        )
    # registrations
    L += ["", "## Registrations", ""]
    L += [
        "| items/domain | workers | scenario | rps | p50 ms | p95 ms | p99 ms | errors |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        for w in workers:
            for scen, grp in (
                ("reg_text_c8", "reg_text"),
                ("reg_image_c8", "reg_image"),
                ("reg_under_load", "reg_image"),
            ):
                p = find(report, kind="service", items_per_domain=n, workers=w, scenario=scen)
                if p is None:
                    continue
                g = p["groups"][grp]
                label = {
                    "reg_text_c8": "text only, 8 concurrent",
                    "reg_image_c8": "text + image, 8 concurrent",
                    "reg_under_load": "text + image, 1 at a time under 31 recommends",
                }[scen]
                L.append(
                    f"| {fmt_n(n)} | {w} | {label} | {g.get('throughput_rps', 0):.1f} | "
                    f"{_f(g.get('p50_ms'))} | {_f(g.get('p95_ms'))} | {_f(g.get('p99_ms'))} | "
                    f"{g['errors']} |"
                )
    L += ["", "## Registration to visibility", ""]
    L += [
        "Register a text + image item under a category no other item has, then "
        "`POST /v1/recommend` with `history=[new id]`, `category=<that category>`, n=1 on fresh "
        "connections until the new id is returned (`source`: `model` = found by the index "
        "search, `latest` = by the fallback chain). The time includes that filtered "
        "recommend call (`last call ms`).",
        "",
        "| items/domain | workers | returned | on the first recommend | 201 -> returned "
        "p50 / max ms | last call ms p50 | source |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["services"]:
        v = s.get("visibility")
        if not v:
            continue
        last = [t["last_recommend_ms"] for t in v.get("trials", []) if t.get("source")]
        L.append(
            f"| {fmt_n(s['items_per_domain'])} | {s['workers']} | {v.get('returned')}/"
            f"{v.get('total')} | {_f((v.get('first_poll_share') or 0) * 100, 0)}% | "
            f"{_f(v.get('created_to_returned_ms_p50'))} / "
            f"{_f(v.get('created_to_returned_ms_max'))} | "
            f"{_f(float(np.median(last)) if last else None)} | "
            f"{', '.join(v.get('sources', []))} |"
        )
    L += ["", "## Start-up, memory and index", ""]
    L += [
        "| items/domain | workers | ready s | RSS idle MB | RSS max MB | RSS / PSS / USS "
        "end MB | index | recall@100 vs exact | raw work process RSS MB |",
        "|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for s in report["services"]:
        n = s["items_per_domain"]
        if "error" in s:
            L.append(f"| {fmt_n(n)} | {s['workers']} | failed: {s['error'][:200]} | | | | | | |")
            continue
        fl = report["floors"].get(str(n), {"index_kind": {}, "recall_at_100": {}, "rss_mb": 0})
        rss_max = max([p["server_rss_mb_max"] for p in s["points"]] or [0])
        kinds = ", ".join(sorted(set(fl["index_kind"].values())))
        rec = min(fl["recall_at_100"].values()) if fl["recall_at_100"] else None
        m = s.get("memory_end") or {}
        mem = " / ".join(f"{m[k]:,.0f}" for k in ("rss_mb", "pss_mb", "uss_mb") if k in m)
        L.append(
            f"| {fmt_n(n)} | {s['workers']} | {s['ready_s']:.0f} | {s['rss_mb_idle']:,.0f} | "
            f"{rss_max:,.0f} | {mem or '-'} | {kinds} | {_f(rec, 3)} | {fl['rss_mb']:,.0f} |"
        )
    L += [
        "",
        "Index options at each size (one domain, k=10 single-query search, 1 thread, "
        "recall@100 vs exact on the benchmark's user vectors):",
        "",
    ]
    L += ["| items/domain | index | search ms | recall@100 |", "|---:|---|---:|---:|"]
    for n in sizes:
        for o in report["floors"].get(str(n), {}).get("index_options", []):
            L.append(
                f"| {fmt_n(n)} | {o['index']} | {o['search_ms']:.2f} | {o['recall_at_100']:.3f} |"
            )
    L += [
        "",
        "Per-point details (every group's latency percentiles, CPU seconds, load "
        "average) are in serve.json.",
        "",
    ]
    return "\n".join(L) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sizes = [int(s) for s in report["params"]["sizes"]]
    workers = sorted({s["workers"] for s in report["services"]})
    conc = report["params"]["concurrency"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, n in enumerate(sizes):
        for w in workers:
            pts = [
                find(
                    report,
                    kind="service",
                    items_per_domain=n,
                    workers=w,
                    scenario="recommend_mix",
                    concurrency=c,
                )
                for c in conc
            ]
            cs = [c for c, p in zip(conc, pts, strict=True) if p]
            ps = [p for p in pts if p]
            if not ps:
                continue
            style = "-" if w == 1 else "--"
            label = f"{fmt_n(n)} items, {w} worker{'s' if w > 1 else ''}"
            g = [p["groups"]["recommend_mix"] for p in ps]
            axes[0].plot(
                cs, [x["p50_ms"] for x in g], style, marker="o", color=colors[i], label=label
            )
            axes[1].plot(
                cs, [x["p99_ms"] for x in g], style, marker="o", color=colors[i], label=label
            )
            axes[2].plot(
                cs,
                [x["throughput_rps"] for x in g],
                style,
                marker="o",
                color=colors[i],
                label=label,
            )
    for w in workers:
        bs = [find(report, kind="bare", workers=w, concurrency=c) for c in conc]
        cs = [c for c, p in zip(conc, bs, strict=True) if p]
        if cs:
            axes[2].plot(
                cs,
                [p["groups"]["bare"]["throughput_rps"] for p in bs if p],
                "-" if w == 1 else "--",
                color="gray",
                marker="s",
                label=f"bare endpoint, {w} worker{'s' if w > 1 else ''}",
            )
    axes[1].axhline(50, color="red", lw=0.8, ls=":", label="target 1e5 (50 ms)")
    axes[1].axhline(100, color="darkred", lw=0.8, ls=":", label="target 1e6 (100 ms)")
    for ax, title, ylabel in (
        (axes[0], "recommend p50 latency", "ms"),
        (axes[1], "recommend p99 latency", "ms"),
        (axes[2], "throughput", "requests / s"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(conc)
        ax.set_xticklabels([str(c) for c in conc])
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    m = report["machine"]
    fig.suptitle(
        f"MICRec service, recommend mix (known / inductive / cross-domain), {m['nproc']} cores "
        f"{m['cpu_model']}, {report['date'][:10]}, load avg max {m.get('loadavg_1m_max')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_size(text: str) -> int:
    return int(float(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", type=parse_size, nargs="+", default=[10**4, 10**5, 10**6])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--duration", type=float, default=7.0, help="seconds per load point")
    ap.add_argument("--single-duration", type=float, default=3.0, help="seconds, c=1 points")
    ap.add_argument("--register-duration", type=float, default=5.0)
    ap.add_argument("--bare-duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    ap.add_argument("--visibility-trials", type=int, default=4)
    ap.add_argument("--floor-calls", type=int, default=200)
    ap.add_argument(
        "--exact-max-items",
        type=int,
        default=50_000,
        help="MICREC_EXACT_INDEX_MAX_ITEMS (service default)",
    )
    ap.add_argument("--ivf-nlist", type=int, default=None, help="MICREC_IVF_NLIST (default: unset)")
    ap.add_argument("--nprobe", type=int, default=32, help="MICREC_IVF_NPROBE (service default)")
    ap.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="MICREC_KEY=VALUE",
        help="extra service setting for every service run (repeatable), e.g. "
        "--service-env MICREC_SEARCH_BATCHING=false",
    )
    ap.add_argument(
        "--request-threads",
        type=int,
        default=None,
        help="MICREC_REQUEST_THREADS (default: unset, the service default)",
    )
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--bundle", default="artifacts/demo-bundle", help="the real trained bundle")
    ap.add_argument("--work-dir", default="artifacts/bench-serve", help="padded bundles")
    ap.add_argument("--out", default="docs/results/serve")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1e4, 1 worker, c=1/8")
    ap.add_argument(
        "--no-blend",
        action="store_true",
        help="serve the padded bundles without the score blend (model score alone, 64-d "
        "vectors): the cost of the blend is the difference to a run without this flag",
    )
    ap.add_argument(
        "--skip",
        default="",
        type=lambda t: set(filter(None, t.split(","))),
        help="comma-separated parts to leave out: bare, floor, single, register, visibility",
    )
    ap.add_argument(
        "--source-root",
        help="run the service and the work floor from this source tree (e.g. a `git worktree` "
        "of an older commit, for before/after comparisons); default: this checkout",
    )
    ap.add_argument("--floor-spec", help=argparse.SUPPRESS)
    ap.add_argument("--floor-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_spec:
        return floor_worker(args)
    used = sys.argv[1:] if argv is None else argv
    args.command_line = shlex.join(["python", "bench/serve.py", *used])
    if args.quick:
        args.sizes = [10**4] if "--sizes" not in used else args.sizes
        args.workers = [1] if "--workers" not in used else args.workers
        args.concurrency = [1, 8] if "--concurrency" not in used else args.concurrency
        args.duration, args.single_duration, args.bare_duration = 3.0, 2.0, 2.0
        args.register_duration, args.visibility_trials, args.floor_calls = 2.0, 2, 50
        if "--out" not in used:
            args.out = str(Path(tempfile.gettempdir()) / "micrec-bench-serve-quick" / "serve")
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)
    bench = Bench(args)
    report = bench.run()
    print(markdown(report))
    log(f"wrote {args.out}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
