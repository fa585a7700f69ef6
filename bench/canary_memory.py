"""Memory of a replica serving a canary: RSS with one loaded version, then with two (the
current and the candidate, app/lifecycle/canary_follow.py), in one service process.

For each bundle given: version A = the bundle itself, version B = a copy with another
model_version (its own files and serving cache, as a retrained candidate has). The
service loads A the way ``micrec serve`` does (engine factory with the serving cache),
answers ``--requests`` recommends for users of the bundle; then B is built next to it as
the canary's state, routed half of the users, and the same requests run again. RSS
(psutil) after each step; the mapped serving files count once they are touched.

    python bench/canary_memory.py --bundle artifacts/demo-bundle \\
        --bundle artifacts/serve-work/bundle-100000 --out docs/results/canary_memory.json

Each bundle runs in a process of its own (a clean RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}


def _copy_as_candidate(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("serving-cache"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["model_version"] = manifest["model_version"] + "-canary"
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dst


def measure(bundle: Path, requests: int) -> dict[str, Any]:
    import numpy as np
    import psutil

    from app.api.schemas import RecommendRequest
    from app.lifecycle.canary_route import CanaryRoute
    from app.lifecycle.engine import load_engine
    from app.service import RecommendationService
    from app.settings import Settings
    from app.store.sqlite import SQLiteStore

    proc = psutil.Process()

    def rss_mib() -> float:
        return round(proc.memory_info().rss / 2**20, 1)

    out: dict[str, Any] = {"bundle": str(bundle), "rss_mib": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("CANARY_MEMORY_TMP")) as tmp:
        cand = _copy_as_candidate(bundle, Path(tmp) / "candidate")
        # its serving cache built by another process first, as A's already is: both are
        # then mapped the same way (the build's own heap is not the canary's cost)
        for path in (bundle, cand):
            subprocess.run([sys.executable, __file__, "--bundle", str(path), "--prepare",
                            str(path)], check=True, env=_env())  # fmt: skip
        db = Path(tmp) / "state.db"
        values: dict[str, Any] = {"bundle_path": bundle, "store_url": f"sqlite:///{db}"}
        settings = Settings(**values, warm_encoders=False)
        factory = partial(
            load_engine,
            cache_root=settings.serving_cache_root,
            vector_dtype=settings.vector_dtype,
        )
        out["rss_mib"]["process_started"] = rss_mib()
        svc = RecommendationService(settings, SQLiteStore(db), factory)
        svc.start()
        try:
            assert svc.wait_ready(1800), "the bundle did not load"
            svc.loader.wait(1800)
            state = svc.state
            assert state is not None
            domain = state.domains[0]
            users = [f"user-{k}" for k in range(requests)]
            items = state.engine.catalogue(domain).item_ids
            rng = np.random.default_rng(0)
            histories = [list(rng.choice(items, 5, replace=False)) for _ in users]

            def run() -> set[str]:
                versions = set()
                for u, h in zip(users, histories, strict=True):
                    req = RecommendRequest(domain=domain, user_id=u, history=h, n=20)
                    versions.add(svc.recommender.recommend(req).model_version)
                return versions

            run()
            out["rss_mib"]["one_version"] = rss_mib()
            canary_state = svc.loader.build(cand)
            svc.served.canary = CanaryRoute(canary_state, "candidate", 0.5, "bench")
            out["rss_mib"]["two_versions_loaded"] = rss_mib()
            out["versions_answered"] = sorted(run())
            out["rss_mib"]["two_versions_serving"] = rss_mib()
            r = out["rss_mib"]
            out["extra_mib"] = round(r["two_versions_serving"] - r["one_version"], 1)
            out["extra_ratio"] = round(r["two_versions_serving"] / r["one_version"], 3)
            out["bundle_files_mib"] = round(
                sum(p.stat().st_size for p in cand.rglob("*") if p.is_file()) / 2**20, 1
            )
            out["items_per_domain"] = len(items)
        finally:
            svc.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", action="append", type=Path, required=True)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)  # build a serving cache
    a = ap.parse_args()
    if a.prepare is not None:
        from app.lifecycle.engine import load_engine
        from app.settings import Settings

        values: dict[str, Any] = {"bundle_path": a.prepare}
        load_engine(a.prepare, cache_root=Settings(**values).serving_cache_root)
        return 0
    if a.one is not None:
        print(json.dumps(measure(a.one, a.requests)))
        return 0
    results = []
    for bundle in a.bundle:
        env = _env()
        cmd = [sys.executable, __file__, "--bundle", str(bundle), "--one", str(bundle),
               "--requests", str(a.requests)]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if a.out is not None:
        a.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
