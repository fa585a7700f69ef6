"""The serving index and catalogue of one domain at up to 1e7 items: build time, disk size,
recall@100 against exact search on real user vectors, memory and search latency of a
process that maps them (what every worker maps), written without ever holding the
catalogue as Python lists.

    python bench/scale_index.py --sizes 1e5 1e6 1e7 --out docs/results/scale_index

Per size N, for one domain of a real trained bundle (default the largest of
``artifacts/demo-bundle``):

* **items**: the domain's real serving vectors (``InferenceEngine``, blend included)
  then N - n0 synthetic ones, each a mix of two random real ones (weight ~ U(0, 0.3) on
  the second) plus Gaussian noise of 0.1x the per-dimension spread, as the padded bundles
  of bench/serve_bundles.py mix the layer states they are computed from; written in
  chunks to a float16 ``.npy`` (the service's ``vector_dtype=float16`` serving file);
* **catalogue**: ids, titles and categories (a real item's, as the padded bundles) as the
  serving cache's columns (model/columns.py), written from generators;
* **index**: ``BaseIndex.build`` (app/index/base.py, the service's code) with the given
  dtype and nlist, nprobe calibrated for recall@100 >= 0.95 on half of the sampled real
  users; recall@100 then measured against exact search on the *other* half;
* **serving process**: a fresh process maps the index (``IO_FLAG_MMAP_IFC``) and the
  columns, resolves ids and runs single-query searches; its RSS/PSS and the latency
  percentiles are recorded.

One size at a time, FAISS/torch/OMP at 1 thread; the 1-minute load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MICREC_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np  # noqa: E402

CHUNK = 1 << 19


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def padded_vectors(base: np.ndarray, n: int, out: Path, seed: int) -> None:
    """``base`` then ``n - len(base)`` mixed rows, float16, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    n0, dim = base.shape
    std = base.std(axis=0, keepdims=True)
    mm = np.lib.format.open_memmap(out, mode="w+", dtype=np.float16, shape=(n, dim))
    mm[: min(n0, n)] = base[:n]
    for start in range(n0, n, CHUNK):
        m = min(CHUNK, n - start)
        a, b = rng.integers(0, n0, m), rng.integers(0, n0, m)
        w = rng.uniform(0, 0.3, (m, 1)).astype(np.float32)
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        mm[start : start + m] = (1 - w) * base[a] + w * base[b] + 0.1 * std * noise
    mm.flush()
    del mm


def columns(n: int, ids0: list[str], titles0: list[str], cats0: list[str], out: Path) -> None:
    from model.columns import CategoryColumn, IdLookup, StringColumn

    rng = np.random.default_rng(1)
    n0 = len(ids0)
    src = np.concatenate([np.arange(min(n0, n)), rng.integers(0, n0, max(0, n - n0))])

    def ids() -> Any:
        yield from ids0[:n]
        yield from (f"pad-{k:08d}" for k in range(max(0, n - n0)))

    StringColumn.from_strings(ids()).save(out, "ids")
    StringColumn.from_strings(titles0[j] for j in src.tolist()).save(out, "titles")
    CategoryColumn.from_strings(cats0[j] for j in src.tolist()).save(out, "categories")
    IdLookup.build(ids(), np.arange(n, dtype=np.int64)).save(out, "items")


def build(args: argparse.Namespace, n: int, work: Path) -> dict[str, Any]:
    import faiss

    from app.index.base import LARGE_ABOVE, BaseIndex, BaseParams, exact_top
    from model.bundle import load_bundle
    from model.inference import InferenceEngine

    faiss.omp_set_num_threads(1)
    engine = InferenceEngine.from_bundle(load_bundle(args.bundle))
    sizes = {name: len(engine.catalogue(name).item_ids) for name in engine.domains}
    d = args.domain or max(sizes, key=sizes.__getitem__)
    cat = engine.catalogue(d)
    base = np.asarray(cat.vectors, dtype=np.float32)
    users = engine.sample_user_vectors(d, 2 * args.queries)
    calib, held = users[0::2], users[1::2]
    rec: dict[str, Any] = {"n": n, "domain": d, "real_items": len(base), "dim": base.shape[1]}
    rec["users"] = {"calibration": len(calib), "held_out": len(held)}
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    padded_vectors(base, n, work / "vectors.npy", seed=0)
    rec["vectors_s"] = time.perf_counter() - t
    t = time.perf_counter()
    columns(n, list(cat.item_ids), list(cat.titles), list(cat.categories), work)
    rec["columns_s"] = time.perf_counter() - t
    del engine, cat
    # the float16 serving file, mapped: BaseIndex builds from it a chunk at a time
    x = np.load(work / "vectors.npy", mmap_mode="r")
    if n <= LARGE_ABOVE:  # below, the service builds from float32 in memory
        x = np.asarray(x, dtype=np.float32)
    params = BaseParams(
        exact_max_items=args.exact_max_items,
        nlist=args.nlist,
        nprobe=args.nprobe,
        target_recall=0.95,
        dtype=args.dtype,
    )
    t = time.perf_counter()
    index = BaseIndex.build(x, params, calib)
    rec["index_build_s"] = time.perf_counter() - t
    rec["kind"], rec["nlist"], rec["nprobe"] = index.kind, index.nlist, index.nprobe
    rec["calibration"] = None if index.calibration is None else vars(index.calibration)
    idx_dir = work / "index"
    idx_dir.mkdir(exist_ok=True)
    index.save(idx_dir)
    k = 100
    truth = exact_top(x, held, k)
    _, found = index.search(held, k)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True))
    rec["recall_at_100_held_out"] = hits / (k * len(held))
    np.save(work / "queries.npy", held)
    rec["disk_bytes"] = {
        "index": du(idx_dir),
        "vectors_float16": (work / "vectors.npy").stat().st_size,
        "catalogue_columns": sum(
            f.stat().st_size
            for f in work.glob("*.npy")
            if f.name not in ("vectors.npy", "queries.npy")
        ),
    }
    return rec


def resume(args: argparse.Namespace, n: int, work: Path) -> dict[str, Any]:
    """The measurements after the build, from the files a build left in ``work`` (its
    build times are read from the files' modification times)."""
    import faiss

    from app.index.base import LARGE_ABOVE, BaseIndex, exact_top
    from model.bundle import load_bundle
    from model.inference import InferenceEngine

    faiss.omp_set_num_threads(1)
    engine = InferenceEngine.from_bundle(load_bundle(args.bundle))
    sizes = {name: len(engine.catalogue(name).item_ids) for name in engine.domains}
    d = args.domain or max(sizes, key=sizes.__getitem__)
    # the build's sample (2 x 500 users: calibration = even rows), its odd rows held out
    users = engine.sample_user_vectors(d, 2 * args.build_queries)
    held = users[1::2][: args.queries]
    meta = json.loads((work / "index" / "index.json").read_text())
    mtime = {f.name: f.stat().st_mtime for f in work.glob("*.npy")}
    index_written = (work / "index" / "index.faiss").stat().st_mtime
    cal_s = meta["calibration"]["seconds"]
    rec: dict[str, Any] = {"n": n, "domain": d, "real_items": sizes[d], "resumed": True}
    rec["users"] = {"calibration": len(users[0::2]), "held_out": len(held)}
    rec["index_build_s_from_file_times"] = index_written - cal_s - mtime["items-values.npy"]
    rec["calibration"] = meta["calibration"]
    x = np.load(work / "vectors.npy", mmap_mode="r")
    rec["dim"] = int(x.shape[1])
    if n <= LARGE_ABOVE:
        x = np.asarray(x, dtype=np.float32)
    index = BaseIndex.load(work / "index", x)  # an ivf-pq index re-ranks against x
    rec["kind"], rec["nlist"], rec["nprobe"] = index.kind, index.nlist, index.nprobe
    k = 100
    t = time.perf_counter()
    truth = exact_top(x, held, k)
    rec["exact_search_s"] = time.perf_counter() - t
    _, found = index.search(held, k)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True))
    rec["recall_at_100_held_out"] = hits / (k * len(held))
    np.save(work / "queries.npy", held)
    rec["disk_bytes"] = {
        "index": du(work / "index"),
        "vectors_float16": (work / "vectors.npy").stat().st_size,
        "catalogue_columns": sum(
            f.stat().st_size
            for f in work.glob("*.npy")
            if f.name not in ("vectors.npy", "queries.npy")
        ),
    }
    return rec


def serve_probe(work: Path, calls: int) -> dict[str, Any]:
    """In this (fresh) process: map index + columns, resolve ids, search one query at a time."""
    import faiss
    import psutil

    from app.index.base import BaseIndex
    from model.columns import IdLookup, StringColumn

    faiss.omp_set_num_threads(1)
    proc = psutil.Process()
    before = proc.memory_full_info()
    t = time.perf_counter()
    # the serving vectors the service maps beside the index (an ivf-pq index re-ranks
    # against them)
    index = BaseIndex.load(work / "index", np.load(work / "vectors.npy", mmap_mode="r"))
    ids = StringColumn.load(work, "ids")
    lookup = IdLookup.load(work, "items")
    open_s = time.perf_counter() - t
    q = np.load(work / "queries.npy")
    lat, look = [], []
    for j in range(calls):
        row = q[j % len(q)][None, :]
        t = time.perf_counter()
        _, labels = index.search(row, 110)
        got = [ids[int(lb)] for lb in labels[0, :10] if lb >= 0]
        lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        lookup.get_many(got)
        look.append(time.perf_counter() - t)
    after = proc.memory_full_info()
    return {
        "open_s": open_s,
        "search_ms": {p: float(np.percentile(lat, p) * 1e3) for p in (50, 99)},
        "lookup_10_ids_us": {p: float(np.percentile(look, p) * 1e6) for p in (50, 99)},
        "rss_mb": after.rss / 2**20,
        "pss_mb": after.pss / 2**20,
        "uss_mb": after.uss / 2**20,
        "rss_before_open_mb": before.rss / 2**20,
        "calls": calls,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", type=lambda t: int(float(t)), nargs="+", default=[10**7])
    ap.add_argument("--bundle", default="artifacts/demo-bundle")
    ap.add_argument("--domain", default=None)
    ap.add_argument("--dtype", default="float16", choices=["float32", "float16"])
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--exact-max-items", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=500, help="real users per half")
    ap.add_argument(
        "--build-queries", type=int, default=500, help="with --resume: --queries of the build"
    )
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--work-dir", default="artifacts/bench-scale")
    ap.add_argument("--out", default="docs/results/scale_index")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="measure what an earlier build left in --work-dir (no rebuild)",
    )
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(serve_probe(Path(args.probe), args.calls)))
        return 0
    out = Path(args.out)
    records = []
    for n in args.sizes:
        work = Path(args.work_dir) / f"n{n}"
        log(f"{n:,} items: building in {work} (load {os.getloadavg()[0]:.1f})")
        rec = resume(args, n, work) if args.resume else build(args, n, work)
        rec["load_1m_after_build"] = os.getloadavg()[0]
        log(f"built: {json.dumps(rec)}")
        cmd = [sys.executable, __file__, "--probe", str(work), "--calls", str(args.calls)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rec["serving_process"] = json.loads(res.stdout.strip().splitlines()[-1])
        rec["load_1m_after_probe"] = os.getloadavg()[0]
        log(f"probe: {json.dumps(rec['serving_process'])}")
        records.append(rec)
        out.with_suffix(".json").write_text(
            json.dumps(
                {"command": " ".join(sys.argv), "cpus": os.cpu_count(), "runs": records}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
