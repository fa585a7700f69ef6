"""The serving benchmark's run: the sweep over catalogue sizes and worker counts, each
point a load-generator process against a real service (or the bare reference), the work
floor, and the report saved as it grows."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import busy_processes, git_commit, host_facts
from serve_bundles import ensure_bundle
from serve_common import (
    API_KEY,
    REGISTER_TYPES,
    ROOT,
    THREAD_ENV,
    TYPES,
    fmt_n,
    free_port,
    log,
)
from serve_http import seed_and_warm, visibility
from serve_procs import LoadAvg, ServerProcess, redis_server
from serve_report import markdown, plot
from serve_requests import build_requests, recommend_mix
from serve_targets import targets


class Bench:
    """One run of the serving benchmark: its temporary folder, load-average sampler, the
    points measured so far, and the source tree its processes run (``--source-root``)."""

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
            [sys.executable, str(ROOT / "bench" / "serve_floor.py"), str(spec_path), str(out_path)],
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

    def service_env(self, bundle: Path, redis_url: str) -> dict[str, str]:
        a = self.args
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
        return extra

    def server(self, n: int, bundle: Path, redis_url: str, workers: int, tag: str) -> ServerProcess:
        port = free_port()
        cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", str(workers)]
        log_path = self.tmp / f"{tag}-{n}-{workers}.log"
        env = self.env(self.service_env(bundle, redis_url))
        return ServerProcess(cmd, env, port, log_path, cwd=self.source)

    def warm_cache(self, n: int, bundle: Path) -> dict[str, Any]:
        """Build the serving cache (vectors, template rows, catalogue columns, indexes) with
        a 1-worker server that is stopped once ready, so every measured server starts on a
        warm cache: its memory and ready time are then those of a worker that maps the
        cache, not of the one that wrote it. Returns that build's time, load and memory."""
        with redis_server() as redis_url:
            server = self.server(n, bundle, redis_url, 1, "cache-build")
            t0 = time.time()
            server.start()
            try:
                build_s = server.wait_ready("/readyz", 1, self.args.ready_timeout)
                info = {
                    "build_s": build_s,
                    "loadavg_1m_max": self.loadavg.between(t0, time.time()),
                    "memory": server.memory(),
                    "log_tail": server.log_tail(10),
                }
            finally:
                server.stop()
        log(f"serving cache {fmt_n(n)} built in {info['build_s']:.0f} s")
        return info

    def service(self, n: int, bundle: Path, reqs: dict[str, Any], workers: int) -> dict[str, Any]:
        a = self.args
        info: dict[str, Any] = {"items_per_domain": n, "workers": workers}
        with redis_server() as redis_url:
            server = self.server(n, bundle, redis_url, workers, "service")
            t = time.perf_counter()
            t0 = time.time()
            server.start()
            try:
                info["ready_s"] = server.wait_ready("/readyz", workers, a.ready_timeout)
                info["loadavg_1m_ready"] = self.loadavg.between(t0, time.time())
                info["memory_ready"] = server.memory()
                log(f"service {fmt_n(n)} x{workers} ready in {info['ready_s']:.0f} s")
                seed_and_warm(server, reqs, workers, self.args.ready_timeout)
                info["startup_s"] = time.perf_counter() - t
                info["rss_mb_idle"] = server.rss_mb()
                info["memory_idle"] = server.memory()
                self.service_points(server, reqs, n, workers)
                if "visibility" not in a.skip:
                    info["visibility"] = visibility(server, reqs, a.visibility_trials)
                info["rss_mb_end"] = server.rss_mb()
                info["memory_end"] = server.memory()
                info["log_tail"] = server.log_tail(10)
            except Exception as err:  # keep what was measured before it (ready, memory)
                info["error"] = str(err)
                info["log_tail"] = server.log_tail(10)
                log(f"service {fmt_n(n)} x{workers} FAILED: {err}")
            finally:
                server.stop()
        return info

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
            mix = recommend_mix(bodies)
            g = {"name": "recommend_mix", "tasks": c, "path": "/v1/recommend", "bodies": mix}
            meta = {**base, "scenario": "recommend_mix", "concurrency": c}
            self.run_point(server, meta, [g], a.duration)
        if "register" in a.skip:
            return
        if not a.quick:
            for kind in REGISTER_TYPES:
                meta = {**base, "scenario": f"{kind}_c8", "concurrency": 8}
                self.run_point(server, meta, [group(kind, 8)], a.register_duration)
        mix = recommend_mix(bodies)
        c = 32 if not a.quick else 8
        groups = [
            {"name": "recommend_mix", "tasks": c - 1, "path": "/v1/recommend", "bodies": mix},
            group("reg_image", 1),
        ]
        meta = {**base, "scenario": "reg_under_load", "concurrency": c}
        self.run_point(server, meta, groups, a.duration)

    def run(self) -> dict[str, Any]:
        a = self.args
        started = dt.datetime.now(dt.UTC)
        report: dict[str, Any] = {
            "command": a.command_line,
            "date": started.isoformat(timespec="seconds"),
            "git_commit": git_commit(),
            "machine": machine_info(),
            # floor_calls stays out of params, as in the reports written so far.
            "params": {k: v for k, v in vars(a).items() if not k.startswith("floor_")},
            "floors": {},
            "services": [],
        }
        src = Path(a.bundle)
        if not (src / "manifest.json").is_file():
            raise SystemExit(f"no bundle at {src}: run `micrec demo build` first")
        work = Path(a.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        bundles = {}
        for n in a.sizes:
            t0 = time.time()
            bundles[n] = ensure_bundle(
                src, work, n, blend=not a.no_blend, domains=a.pad_domains
            ).resolve()
            report.setdefault("padding", {})[str(n)] = {
                "s": time.time() - t0,
                "loadavg_1m_max": self.loadavg.between(t0, time.time()),
            }
        report["bare"] = []
        if "bare" not in a.skip:
            t_bare = len(self.points)
            self.bare()
            report["bare"] = self.points[t_bare:]
        for n in a.sizes:
            reqs = build_requests(src, n, padded_domains=a.pad_domains)
            report["image_bytes"] = reqs["image_bytes"]
            if a.warm_cache:
                report.setdefault("cache_builds", {})[str(n)] = self.warm_cache(n, bundles[n])
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
