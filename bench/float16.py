"""float16 storage of the serving item vectors (MICREC_VECTOR_DTYPE): what it costs in
ranking quality and what it saves in memory.

    python bench/float16.py            # demo bundle + the padded 1e5 serve bundle

* **Quality on a real bundle** (default ``artifacts/demo-bundle``, trained on
  ``artifacts/demo-data``): the bundle's own seeded split is rebuilt from its manifest;
  every test user of each domain is folded in from their training items in that domain
  (what the service does for a known user), all items are ranked by the served score
  with float32 and with float16 item vectors (training + validation items masked, as in
  ``micrec evaluate``), and recall@20 / NDCG@10 / NDCG@20 against the test items are
  compared; plus how often the top 10 / top 100 differ at all.
* **Index recall**: recall@100 of the service's index (``app.lifecycle.state.build_domain_index``,
  service defaults: exact on the demo bundle, calibrated IVF on the padded 1e5 bundle)
  built from float16 vectors, against exact float32 search, for up to 500 bundle users
  per domain.
* **Memory**: bytes of the serving cache files (vectors + index) per dtype.

Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from machine import ROOT, cpu_model, git_commit

from app.lifecycle.engine import load_engine
from app.lifecycle.state import build_domain_index
from app.settings import Settings
from model.data.loading import load_dataset
from model.data.split import SplitConfig, build_split
from model.evaluation import seen_pairs
from model.inference import InferenceEngine
from model.metrics import user_metrics

DTYPES = ("float32", "float16")


def engines(bundle: Path, cache: Path) -> dict[str, InferenceEngine]:
    return {
        dt_: load_engine(bundle, cache_root=lambda _: cache, vector_dtype=dt_) for dt_ in DTYPES
    }


def split_quality(bundle: Path, data: Path, eng: dict[str, InferenceEngine]) -> dict[str, Any]:
    """recall@20 / NDCG@10 / NDCG@20 of test users per dtype, and top-k agreement."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    split = build_split(load_dataset(data), SplitConfig(**manifest["data"]["split_config"]))
    out: dict[str, Any] = {}
    for domain, ds in sorted(split.domains.items()):
        e32 = eng["float32"]
        cat = e32.catalogue(domain)
        pos = {iid: k for k, iid in enumerate(cat.item_ids)}
        col = np.array([pos.get(i, -1) for i in ds.item_ids])  # split item -> bundle row
        users = np.unique(ds.test[:, 0])
        train = {u: ds.train[ds.train[:, 0] == u, 1] for u in users}
        seen = seen_pairs(ds, "test")
        tops: dict[str, list[np.ndarray]] = {d: [] for d in DTYPES}
        targets = []
        for u in users:
            hist = [ds.item_ids[i] for i in train[u]]
            q = e32.embed_user(domain, {domain: hist}).vector  # same user vector for both
            masked = col[seen[seen[:, 0] == u, 1]]
            targets.append(col[ds.test[ds.test[:, 0] == u, 1]])
            for dtype in DTYPES:
                s = np.asarray(eng[dtype].catalogue(domain).vectors, dtype=np.float32) @ q
                s[masked[masked >= 0]] = -np.inf
                tops[dtype].append(np.argsort(-s, kind="stable")[:100])
        row: dict[str, Any] = {"test_users": len(users)}
        for dtype in DTYPES:
            top = np.stack(tops[dtype])
            for k, name in ((20, "recall@20"), (10, "ndcg@10"), (20, "ndcg@20")):
                rec, ndcg = user_metrics(top, targets, k)
                row[f"{dtype} {name}"] = float((rec if name.startswith("recall") else ndcg).mean())
        a, b = np.stack(tops["float32"]), np.stack(tops["float16"])
        row["top10 identical share"] = float(
            np.mean([(x[:10] == y[:10]).all() for x, y in zip(a, b, strict=True)])
        )
        row["top100 overlap"] = float(
            np.mean([len(set(x) & set(y)) / 100 for x, y in zip(a, b, strict=True)])
        )
        out[domain] = row
    return out


def index_recall(bundle: Path, eng: dict[str, InferenceEngine], cache: Path) -> dict[str, Any]:
    """recall@100 of the float16 service index vs exact float32 search, per domain."""
    out: dict[str, Any] = {}
    e32, e16 = eng["float32"], eng["float16"]
    for domain in e32.domains:
        q = e32.sample_user_vectors(domain, 500)
        x32 = np.ascontiguousarray(e32.catalogue(domain).vectors, dtype=np.float32)
        _, truth = faiss.knn(q, x32, 100, metric=faiss.METRIC_INNER_PRODUCT)
        row: dict[str, Any] = {"queries": len(q), "items": len(x32)}
        for dtype, e in (("float32", e32), ("float16", e16)):
            values: dict[str, Any] = {
                "serving_cache_dir": cache,
                "vector_dtype": dtype,
                "faiss_threads": 1,
            }
            settings = Settings(bundle_path=bundle, **values)
            index = build_domain_index(e, domain, settings, bundle)
            ids = e.catalogue(domain).item_ids
            hits = 0
            for row_q, want in zip(index.search(q, 100), truth, strict=True):
                hits += len({ids[j] for j in want} & {i for i, _ in row_q})
            row[f"{dtype} recall@100"] = hits / (100 * len(q))
            row[f"{dtype} index"] = f"{index.kind} nprobe={index.nprobe}"
        out[domain] = row
    sizes: dict[str, int] = {}
    for sub in cache.iterdir():
        if sub.is_dir():
            for f in sub.iterdir():
                sizes[f"{sub.name[:8]}/{f.name}"] = f.stat().st_size
    out["cache_files_bytes"] = sizes
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="artifacts/demo-bundle")
    ap.add_argument("--data", default="artifacts/demo-data")
    ap.add_argument("--padded", default="artifacts/serve-work/bundle-100000")
    ap.add_argument("--out", default="docs/results/serve-steps/float16")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(1)
    report: dict[str, Any] = {
        "command": "python bench/float16.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpu": cpu_model(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "demo"
        eng = engines(Path(args.bundle), cache)
        report["demo_quality"] = split_quality(Path(args.bundle), Path(args.data), eng)
        report["demo_index"] = index_recall(Path(args.bundle), eng, cache)
        if args.padded and Path(args.padded).is_dir():
            cache = Path(tmp) / "padded"
            eng = engines(Path(args.padded), cache)
            report["padded_index"] = index_recall(Path(args.padded), eng, cache)
    out = ROOT / args.out
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
