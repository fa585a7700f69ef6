"""Time to open the serving cache at a worker start: full sha256 vs the quick check.

    python bench/serving_cache_open.py --bundle artifacts/serve-work/bundle-100000 \\
        --cache artifacts/serving-cache-bench

The cache is built once into ``--cache`` (if absent) through the service's own path: the
engine and every domain's index, as a worker start does (``app.lifecycle.engine.load_engine`` +
``app.lifecycle.state.build_domain_index``). Then, per verification mode (``full``: sha256 of every
byte, which is what every start did before the quick check; ``quick``) and page-cache
state, every cache directory of the bundle is opened with ``open_cached`` (one worker
start), ``--repeats`` times:

* warm: the files were just read (a worker starting next to running ones);
* cold: the cache's files are dropped from the page cache first with
  ``posix_fadvise(DONTNEED)`` (only these files: nothing else on the machine is touched),
  as after a reboot or under memory pressure.

For context it also times ``model.bundle.verify_bundle`` (the bundle's own sha256 check in
``load_bundle``), the other full hash every worker start does. Writes ``--out``.md/.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import ROOT, busy_processes, git_commit, host_facts

from model import serving_cache
from model.bundle import verify_bundle
from model.serving_cache import META, CachePolicy, open_cached

MODES = ("full", "quick")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def load_like_a_worker(bundle: Path, cache: Path, verify: str = "quick") -> float:
    """Seconds to load the engine and every domain index as a worker start does (building
    the cache when it is absent)."""
    from app.lifecycle.engine import load_engine
    from app.lifecycle.state import build_domain_index
    from app.settings import Settings

    values: dict[str, Any] = {
        "serving_cache_dir": cache,
        "serving_cache_verify": verify,
        "serving_cache_keep": 0,
        "faiss_threads": 1,
    }
    settings = Settings(bundle_path=bundle, **values)
    serving_cache.configure(settings.serving_cache_policy())
    t0 = time.perf_counter()
    engine = load_engine(bundle, cache_root=settings.serving_cache_root)
    for domain in engine.domains:
        build_domain_index(engine, domain, settings, bundle)
    return time.perf_counter() - t0


def worker_start(bundle: Path, cache: Path, verify: str) -> float:
    """Seconds of :func:`load_like_a_worker` in a fresh process, one that refuses to build
    (a missing cache would be timed as a build, not a start)."""
    code = (
        "import sys; sys.path.insert(0, 'bench'); import serving_cache_open as b; "
        "b.serving_cache._build = b.refuse_build; "
        f"print(b.load_like_a_worker(b.Path({str(bundle)!r}), b.Path({str(cache)!r}), "
        f"{verify!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def refuse_build(*args: object) -> None:
    raise RuntimeError("the cache failed its check: the benchmark would time a rebuild")


def cache_files(cache: Path) -> dict[str, list[Path]]:
    """Every complete cache directory under ``cache`` (key -> its files)."""
    return {
        d.name: sorted(f for f in d.iterdir() if f.is_file())
        for d in sorted(cache.iterdir())
        if d.is_dir() and (d / META).is_file()
    }


def drop_page_cache(files: list[Path]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn: Callable[[], object], before: Callable[[], None], repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return summary(runs)


def summary(runs: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(runs),
        "min_s": min(runs),
        "max_s": max(runs),
        "runs_s": runs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="artifacts/serve-work/bundle-100000")
    ap.add_argument("--cache", default="artifacts/serving-cache-bench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="docs/results/serving_cache_open")
    ap.add_argument("--setup", default="", help="how --cache was made, for the results file")
    ap.add_argument(
        "--worker-starts", type=int, default=3, help="whole worker starts timed per mode"
    )
    args = ap.parse_args(argv)
    bundle, cache = Path(args.bundle), Path(args.cache)
    report: dict[str, Any] = {
        "command": "python bench/serving_cache_open.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "host": host_facts(),
        "bundle": str(bundle),
        "setup": args.setup,
        "out": Path(args.out).name,
    }
    if not (cache.is_dir() and cache_files(cache)):
        report["build_s"] = load_like_a_worker(bundle, cache)
    keys = cache_files(cache)
    all_files = [f for fs in keys.values() for f in fs]
    report["cache"] = {
        "directories": len(keys),
        "files": len(all_files),
        "bytes": sum(f.stat().st_size for f in all_files),
    }
    report["load_before"] = uptime()
    report["busy_before"] = busy_processes("serving_cache_open")
    results: dict[str, Any] = {}
    for state in ("warm", "cold"):
        before = (lambda: drop_page_cache(all_files)) if state == "cold" else (lambda: None)
        for mode in MODES:
            policy = CachePolicy(verify=mode, keep=0)  # type: ignore[arg-type]

            def start(policy: CachePolicy = policy) -> None:
                for key in keys:
                    open_cached(cache, key, refuse_build, policy)

            start()  # first open of a mode may record a new stat in meta.json
            results[f"{mode} {state}"] = timed(start, before, args.repeats)
            print(f"{mode:5s} {state}: {results[f'{mode} {state}']['median_s']:.3f} s", flush=True)
    bundle_files = [p for p in bundle.iterdir() if p.is_file()]
    results["verify_bundle warm"] = timed(lambda: verify_bundle(bundle), lambda: None, 3)
    starts: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.worker_starts):
        for mode in MODES:  # alternated, so a change in the machine's load hits both
            starts[mode].append(worker_start(bundle, cache, mode))
            print(f"worker start {mode}: {starts[mode][-1]:.2f} s", flush=True)
    for mode, runs in starts.items():
        if runs:
            results[f"whole worker start (fresh process), {mode}"] = summary(runs)
    report["results"] = results
    report["load_after"] = uptime()
    report["busy_after"] = busy_processes("serving_cache_open")
    report["bundle_bytes"] = sum(p.stat().st_size for p in bundle_files)
    out = ROOT / args.out
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict[str, Any]) -> str:
    c, res = r["cache"], r["results"]
    rows = [
        f"| {name} | {v['median_s'] * 1000:.1f} | {v['min_s'] * 1000:.1f} | "
        f"{v['max_s'] * 1000:.1f} |"
        for name, v in res.items()
    ]
    full, quick = res["full warm"]["median_s"], res["quick warm"]["median_s"]
    full_c, quick_c = res["full cold"]["median_s"], res["quick cold"]["median_s"]
    build = f"; built in {r['build_s']:.1f} s by this run" if "build_s" in r else ""
    return "\n".join(
        [
            "# Serving cache: time to open it at a worker start (full vs quick check)",
            "",
            f"Command: `{r['command']}` (commit {r['commit']}, {r['date']}; raw numbers in "
            f"[{r['out']}.json]({r['out']}.json)).",
            "",
            *([f"Setup: `{r['setup']}`", ""] if r["setup"] else []),
            f"Machine: {r['host']['nproc']} cores, {r['host']['cpu_model']}, "
            f"{r['host']['mem_gb']} GB. Load: before `{r['load_before']}`, after "
            f"`{r['load_after']}`; other busy processes before: "
            f"{'; '.join(r['busy_before']) or 'none'}.",
            "",
            f"Bundle `{r['bundle']}` ({r['bundle_bytes'] / 1e6:.0f} MB); its serving cache: "
            f"{c['directories']} directories (engine + one index per domain), {c['files']} "
            f"files, {c['bytes'] / 1e6:.0f} MB{build}. One worker start opens all of them "
            "(`open_cached` per directory); times in ms over the repeats.",
            "",
            "| what (per worker start) | median ms | min ms | max ms |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            f"Warm page cache: full {full * 1000:.0f} ms -> quick {quick * 1000:.1f} ms "
            f"({full / quick:.0f}x); cold: {full_c * 1000:.0f} ms -> {quick_c * 1000:.1f} ms. "
            "`full` is the check every start did before (sha256 of every byte), so it grows "
            "with the cache's bytes; quick reads a fixed sample per file, so it grows with the "
            "number of files. `verify_bundle` is the bundle's own sha256 check in "
            "`load_bundle`, also done at every worker start (not changed here). A whole "
            "worker start is `load_engine` + every domain's `build_domain_index` in a fresh "
            "process after its imports, --worker-starts times per mode. Cold = the "
            "cache's files dropped from this machine's page cache (`posix_fadvise`); the "
            "virtual disk below may still be cached by its host, so a cold start on real "
            "hardware can take longer for `full`.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
