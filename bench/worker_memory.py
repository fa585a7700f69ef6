"""Where one worker's own memory goes: the process's memory after the imports, after the
engine is loaded and after the serving state is built, and the Python allocations still
alive at the end by file and line (tracemalloc).

    python bench/worker_memory.py --bundle artifacts/serve-work/bundle-100000

Reads /proc/self/smaps_rollup (Linux): RSS, and Anonymous = memory no other process can
share (the Python heap, arrays allocated by numpy/torch/FAISS). Memory-mapped serving-cache
files count only once touched, so the numbers here are what a worker holds before serving.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIELDS = ("Rss", "Anonymous")


def rollup() -> dict[str, int]:
    """MB of each of FIELDS for this process."""
    out: dict[str, int] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0].rstrip(":") in FIELDS:
                out[parts[0].rstrip(":")] = int(parts[1]) // 1024
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--bundle", default="artifacts/serve-work/bundle-100000")
    ap.add_argument("--top", type=int, default=8)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = [("start", rollup())]
    import faiss  # noqa: F401
    import fastapi  # noqa: F401
    import torch  # noqa: F401

    from app.lifecycle.engine import load_engine
    from app.lifecycle.state import build_state
    from app.settings import Settings

    rows.append(("imports (torch, FAISS, FastAPI, app)", rollup()))
    tracemalloc.start(1)
    bundle = Path(a.bundle)
    values = {"bundle_path": bundle}
    settings = Settings(**values)  # type: ignore[arg-type]
    engine = load_engine(
        bundle, cache_root=settings.serving_cache_root, vector_dtype=settings.vector_dtype
    )
    rows.append(("engine loaded", rollup()))
    state = build_state(engine, bundle, settings)
    gc.collect()
    rows.append(("state built", rollup()))
    snap = tracemalloc.take_snapshot()
    print(f"`python bench/worker_memory.py --bundle {a.bundle}`\n")
    print("| step | RSS MB | Anonymous MB |\n|---|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r.get('Rss', 0)} | {r.get('Anonymous', 0)} |")
    traced = snap.statistics("lineno")
    total = sum(s.size for s in traced) / 2**20
    print(
        f"\nPython allocations alive at the end (tracemalloc, from the engine load on): "
        f"{total:.0f} MB; the largest:\n"
    )
    print("| MB | where |\n|---:|---|")
    for s in traced[: a.top]:
        frame = s.traceback[0]
        name = frame.filename.replace(str(ROOT) + "/", "")
        print(f"| {s.size / 2**20:.1f} | {name}:{frame.lineno} |")
    del state, engine
    return 0


if __name__ == "__main__":
    sys.exit(main())
