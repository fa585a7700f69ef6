"""Index options for one large domain, on the serving vectors the service maps: recall@100
against exact search on real users of the bundle and single-query latency (1 thread), per
option, sharing one k-means and one assignment of the items to lists.

    python bench/large_index_options.py --bundle /tmp/pq1e7-work/bundle-10000000-office \
        --domain office --options pqr2,sq --out docs/results/scale_index_pq

The bundle is a padded one (bench/serve.py's ``--pad-domains``); its serving cache (float16
vectors) is built or reused as the service would (``load_engine``). Users: 1000 of the
domain spread over the bundle (``sample_user_vectors``), every other one held out (200 of
each half used). Options, all IVF with the same ``--nlist`` lists (k-means on 64 points
per list, 10 iterations, over the augmented vectors ``[x, sqrt(R^2 - |x|^2)]``, items
assigned by a flat quantizer, queries by an HNSW graph over the centroids searched
``max(128, nprobe)`` wide, lists scanned by inner product with the zero-padded query):

* ``sq``: float16 lists (the index of the large bases before IVF-PQ);
* ``pq<s>``: 4-bit PQ fast scan, ``s`` dimensions per code, codes of the vectors
  themselves; ``pqr<s>``: codes of the residuals from the centroids, each list's term
  <q, centroid> computed and passed with the lists, lists chosen by the centroids'
  projections onto the sphere of radius R (what app/index/large.py does); both re-ranked
  exactly against the float16 vectors at each depth of ``--depths``.

Also written: each nprobe's share of the true top 100 lying in the probed lists (the ceiling
of any option's recall) and the share of the items those lists hold.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MICREC_THREADS"):
    os.environ.setdefault(_k, "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

CHUNK = 1 << 18


def log(msg: str) -> None:
    print(f"[options {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, x: np.ndarray, users: np.ndarray, nlist: int, work: Path) -> None:
        self.x, self.n, self.d = x, x.shape[0], x.shape[1]
        self.calib, self.held = users[0::2][:200], users[1::2][:200]
        self.nlist, self.work = nlist, work
        self.rec: dict[str, Any] = {"n": self.n, "dim": self.d, "nlist": nlist, "options": {}}
        self.truth = self.cached("truth_held", self.exact)
        self.radius = float(self.cached("radius", self.max_norm)[0])
        self.centroids = self.cached(f"centroids{nlist}", self.kmeans)
        self.assign = self.cached(f"assign{nlist}", self.assign_all)

    def cached(self, name: str, fn: Any) -> np.ndarray:
        path = self.work / f"{name}.npy"
        if path.exists():
            return np.load(path)
        t = time.perf_counter()
        value = fn()
        np.save(path, value)
        self.rec[f"{name}_s"] = time.perf_counter() - t
        log(f"{name}: {self.rec[f'{name}_s']:.0f} s")
        return value

    def exact(self) -> np.ndarray:
        heap = faiss.ResultHeap(len(self.held), 100, keep_max=True)
        for s in range(0, self.n, CHUNK):
            part = np.ascontiguousarray(self.x[s : s + CHUNK], dtype=np.float32)
            d, i = faiss.knn(self.held, part, 100, metric=faiss.METRIC_INNER_PRODUCT)
            heap.add_result(d, i + s)
        heap.finalize()
        return heap.I

    def max_norm(self) -> np.ndarray:
        r = max(
            float(np.sqrt(np.einsum("ij,ij->i", p, p).max()))
            for p in (
                np.asarray(self.x[s : s + CHUNK], np.float32) for s in range(0, self.n, CHUNK)
            )
        )
        return np.array([r])

    def rows(self, x: np.ndarray, width: int) -> np.ndarray:
        x = np.asarray(x, np.float32)
        out = np.zeros((len(x), width), np.float32)
        out[:, : self.d] = x
        sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        out[:, self.d] = np.sqrt(np.maximum(self.radius**2 - sq, 0))
        return out

    def kmeans(self) -> np.ndarray:
        m = min(self.n, 64 * self.nlist)
        sample = np.sort(np.random.default_rng(0).choice(self.n, m, replace=False))
        km = faiss.Kmeans(self.d + 1, self.nlist, niter=10, max_points_per_centroid=64, seed=1234)
        km.train(self.rows(self.x[sample], self.d + 1))
        assert km.centroids is not None
        return km.centroids

    def flat(self, width: int) -> Any:
        q = faiss.IndexFlatL2(width)
        q.add(self.padded(self.centroids, width))
        return q

    def hnsw(self, width: int, sphere: bool = False) -> Any:
        from app.index.large import on_sphere

        c = self.padded(self.centroids, width)
        h = faiss.IndexHNSWFlat(width, 32)
        h.add(on_sphere(c, self.radius) if sphere else c)
        return h

    @staticmethod
    def padded(x: np.ndarray, width: int) -> np.ndarray:
        out = np.zeros((len(x), width), np.float32)
        out[:, : x.shape[1]] = x
        return out

    def assign_all(self) -> np.ndarray:
        q, out = self.flat(self.d + 1), np.empty(self.n, np.int64)
        for s in range(0, self.n, CHUNK):
            out[s : s + CHUNK] = q.search(self.rows(self.x[s : s + CHUNK], self.d + 1), 1)[1][:, 0]
        return out

    def coverage(self, nprobes: list[int]) -> None:
        sizes = np.bincount(self.assign, minlength=self.nlist)
        h = self.hnsw(self.d + 1, sphere=True)
        qp = self.padded(self.held, self.d + 1)
        for nprobe in nprobes:
            h.hnsw.efSearch = max(128, nprobe)
            lists = h.search(qp, nprobe)[1]
            cov = np.mean(
                [
                    np.isin(self.assign[t], li).mean()
                    for t, li in zip(self.truth, lists, strict=True)
                ]
            )
            share = np.mean([sizes[li].sum() / self.n for li in lists])
            self.rec.setdefault("lists", {})[nprobe] = {"top100_in_lists": cov, "items": share}
            log(f"nprobe {nprobe}: true top 100 in the probed lists {cov:.4f}, items {share:.4f}")

    def build(self, option: str) -> tuple[Any, Any, int]:
        dims = int(option.lstrip("pqrs") or 1)
        width = -(-(self.d + 1) // dims) * dims
        flat = self.flat(width)
        if option == "sq":
            fp16 = faiss.ScalarQuantizer.QT_fp16
            index: Any = faiss.IndexIVFScalarQuantizer(
                flat, width, self.nlist, fp16, faiss.METRIC_INNER_PRODUCT
            )
            index.by_residual = False
        else:
            index = faiss.IndexIVFPQFastScan(
                flat, width, self.nlist, width // dims, 4, faiss.METRIC_INNER_PRODUCT
            )
            index.by_residual = option.startswith("pqr")
        t = time.perf_counter()
        sample = np.sort(np.random.default_rng(1).choice(self.n, 65536, replace=False))
        index.train(self.rows(self.x[sample], width))  # centroids given: the codes only
        for s in range(0, self.n, CHUNK):
            index.add(self.rows(self.x[s : s + CHUNK], width))
        quantizer = self.hnsw(width, sphere=option.startswith("pqr"))
        index.quantizer = quantizer
        path = self.work / f"{option}.faiss"
        faiss.write_index(index, str(path))
        self.rec["options"][option] = {
            "build_s": time.perf_counter() - t,
            "file_bytes": path.stat().st_size,
        }
        path.unlink()
        log(f"{option}: built in {time.perf_counter() - t:.0f} s")
        return index, quantizer, width

    def measure(
        self, option: str, index: Any, quantizer: Any, width: int, nprobe: int, depth: int
    ) -> None:
        index.nprobe = nprobe
        quantizer.hnsw.efSearch = max(128, nprobe)
        centres = self.padded(self.centroids, width)
        qp = self.padded(self.held, width)
        lat, hits = [], 0
        for i in range(len(qp)):
            t = time.perf_counter()
            if option.startswith("pqr"):
                lists = quantizer.search(qp[i : i + 1], nprobe)[1]
                bias = (centres[lists[0]] @ qp[i])[None, :].astype(np.float32)
                cand = index.search_preassigned(qp[i : i + 1], depth, lists, bias)[1][0]
            else:
                cand = index.search(qp[i : i + 1], depth)[1][0]
            cand = np.sort(cand[cand >= 0])
            if option != "sq":
                exact = np.asarray(self.x[cand], np.float32) @ self.held[i]
                cand = cand[np.argsort(-exact)[:100]]
            lat.append(time.perf_counter() - t)
            hits += len(set(cand.tolist()) & set(self.truth[i].tolist()))
        ms = np.array(lat[20:]) * 1e3  # the first 20 queries warm the pages
        point = {
            "nprobe": nprobe,
            "depth": depth,
            "recall_at_100": hits / (100 * len(qp)),
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()),
            "loadavg_1m": os.getloadavg()[0],
        }
        self.rec["options"][option].setdefault("points", []).append(point)
        log(f"{option} {point}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="a (padded) bundle directory")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--options", default="pqr2,sq", help="comma-separated: sq, pq<s>, pqr<s>")
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobes", default="32,64,128,256")
    ap.add_argument("--depths", default="400,1000,3000,10000")
    ap.add_argument("--work", default="/tmp/large-index-options")
    ap.add_argument("--out", required=True, help="output path without suffix (.json)")
    a = ap.parse_args()
    from app.lifecycle.engine import load_engine

    faiss.omp_set_num_threads(1)
    bundle = Path(a.bundle)
    engine = load_engine(
        bundle, cache_root=lambda p: Path(p) / "serving-cache", vector_dtype="float16"
    )
    x = engine.catalogue(a.domain).vectors
    users = np.ascontiguousarray(engine.sample_user_vectors(a.domain, 1000), dtype=np.float32)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(x, users, a.nlist, work)
    nprobes = [int(v) for v in a.nprobes.split(",")]
    bench.coverage(sorted(set(nprobes) | {512}))
    for option in a.options.split(","):
        index, quantizer, width = bench.build(option)
        for nprobe in nprobes:
            for depth in [100] if option == "sq" else [int(v) for v in a.depths.split(",")]:
                bench.measure(option, index, quantizer, width, nprobe, depth)
        del index, quantizer
        out = Path(a.out).with_suffix(".json")
        out.write_text(json.dumps(bench.rec, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
