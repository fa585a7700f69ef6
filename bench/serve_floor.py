"""The work floor of bench/serve.py: the model work per request type, without HTTP.

Run in its own process: the same bundle, engine and ``DomainIndex`` as the service, timing
the model work per request type in a plain loop, plus recall of the serving index and what
other index settings would trade.

    python bench/serve_floor.py SPEC.json OUT.json

(Started by bench/serve.py; SPEC holds the bundle, index settings, request bodies, stored
histories and the number of calls.)
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_common import RECOMMEND_TYPES, REGISTER_TYPES


def floor_worker(args: argparse.Namespace) -> int:
    """In-process cost of the model work: embed_user + DomainIndex.search per request."""
    import torch

    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    from PIL import Image

    from app.catalogue.content import open_image
    from app.index.domain import measure_recall
    from app.lifecycle.engine import load_engine
    from app.lifecycle.state import build_domain_index
    from app.settings import Settings
    from model.data.dataset import item_text

    spec = json.loads(Path(args.floor_spec).read_text())
    settings = Settings(**spec["settings"])
    t = time.perf_counter()
    engine = load_engine(Path(spec["bundle"]))
    load_s = time.perf_counter() - t
    indexes: dict[str, Any] = {}  # FAISS here (the floor never sets index_backend)
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
    from app.index.domain import DomainIndex, measure_recall

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("floor_spec", help="the spec JSON written by bench/serve.py")
    ap.add_argument("floor_out", help="where to write the measurements (JSON)")
    return floor_worker(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
