"""Training speed: seconds per epoch and peak memory against the number of interactions.

    python bench/train_speed.py            # real 25/50/100% + synthetic ~0.5M/1M/2M (CPU)
    python bench/train_speed.py --quick    # smoke run: 25% real + 50k synthetic, 1 epoch
    make bench-train-speed

Datasets (every one through the normal path: dataset folder -> ``load_dataset`` ->
``build_split`` (default split: 5-core, 20% new users/items) -> ``Trainer``):

* **real**: ``../shared/datasets/amazon-arts-office`` with 25/50/100% of every domain's
  training interactions kept (the split's ``sparsify``: the 5-core and the split run on
  the whole dataset, then that share of the training pairs is kept, so users and items
  stay the same and only the interactions shrink; subsampling users or rows first would
  let the 5-core delete most of this sparse dataset, median item degree 3), with text
  features (MiniLM, read from the feature cache ``artifacts/cache``; items missing from it
  are encoded first, outside the timing). The dataset has no images.
* **synthetic**: ``model.data.synth`` catalogues (3 domains, no images) sized to
  ~0.5M / 1M / 2M interactions, trained **without content features** (``modalities=[]``:
  the INMO backbone + cross-domain alignment): encoding 100k+ synthetic titles would take
  longer than the training being measured, and the content projection adds an
  [n_items, 384] x [384, 64] product per step that does not change the scaling.

Model and training: the reference config (``configs/micrec.toml`` defaults: d=64, 3
layers, batch 2048 BPR triples per domain per step, Adam), a few epochs, validation only
after the last epoch (on at most 500 users per domain) and not counted in the epoch time.
One epoch = ceil(largest domain's training pairs / 2048) steps; every step propagates
over the whole domain graphs (full-graph LightGCN), so its cost grows with the number of
interactions.

Each point runs in its own process (``--threads`` torch threads, default 2), so the peak
RSS (``ru_maxrss``) is that point's: data, split, graph tensors, model, optimizer and
autograd buffers. Writes ``<out>.json``, ``<out>.md`` and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REAL = ROOT.parent / "shared" / "datasets" / "amazon-arts-office"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- datasets -------------------------------------------------------------------------------
def synthetic(dst: Path, target: int, seed: int = 0) -> Path:
    """A synthetic catalogue with about ``target`` interactions (no images)."""
    from model.data.synth import SynthConfig, write_synthetic_catalogue

    if (dst / "interactions.csv").is_file():
        return dst
    # ~21 interactions per user with the defaults (half the users in 2+ domains, ~12 per
    # domain before the cap); items grow with users so item degrees stay realistic.
    users = max(2000, round(target / 21))
    cfg = SynthConfig(users=users, items_per_domain=max(600, users // 4), images=False, seed=seed)
    write_synthetic_catalogue(dst, cfg)
    return dst


def count_rows(path: Path) -> int:
    with open(path / "interactions.csv", "rb") as f:
        return sum(1 for _ in f) - 1


# --- one point (own process) ----------------------------------------------------------------
def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from model.data.loading import load_dataset
    from model.data.split import build_split
    from model.pipeline import load_features
    from model.runconfig import load_run_config
    from model.training import Trainer

    overrides: dict[str, dict[str, Any]] = {
        "features": {"text": spec["text"], "image": "none", "cache_dir": spec["cache_dir"]},
        "train": {
            "epochs": spec["epochs"],
            "eval_every": spec["epochs"],
            "patience": 10_000,
            "val_users": 500,
            "seed": 0,
        },
    }
    if spec["text"] == "none":
        overrides["model"] = {"modalities": []}
    if spec.get("sparsify", 1.0) < 1.0:
        from model.data.loading import load_dataset as _peek

        domains = sorted({i.domain for i in _peek(Path(spec["data"])).items.values()})
        overrides["data"] = {"sparsify": dict.fromkeys(domains, spec["sparsify"])}
    cfg = load_run_config(None, overrides)
    out: dict[str, Any] = {}
    t = time.perf_counter()
    dataset = load_dataset(Path(spec["data"]), min_rating=cfg.data.min_rating)
    split = build_split(dataset, cfg.data)
    out["load_split_s"] = time.perf_counter() - t
    t = time.perf_counter()
    features = load_features(dataset, cfg, progress=False)
    out["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    trainer = Trainer(split, features, cfg.model_config(), cfg.train)
    out["setup_s"] = time.perf_counter() - t
    out["domains"] = {
        d: {
            "users": ds.n_users,
            "items": ds.n_items,
            "train_pairs": len(trainer.train_pairs[d]),
        }
        for d, ds in split.domains.items()
    }
    out["train_pairs"] = int(sum(len(p) for p in trainer.train_pairs.values()))
    out["steps_per_epoch"] = trainer.steps_per_epoch()
    out["modalities"] = list(getattr(trainer.model, "modalities", []))
    out["parameters"] = int(sum(p.numel() for p in trainer.model.parameters()))
    t = time.perf_counter()
    steps = trainer.steps_per_epoch()
    if steps * spec["epochs"] <= spec["max_steps"]:
        result = trainer.fit(progress=False)
        out["epoch_seconds"] = [row["train_seconds"] for row in result.history]
        out["seconds_per_epoch"] = float(np.mean(out["epoch_seconds"]))
        out["step_ms"] = out["seconds_per_epoch"] / steps * 1000
        out["val_ndcg@20"] = result.best_val
        out["extrapolated"] = False
    else:
        # Whole epochs would take too long: time single steps (the same Trainer.step an
        # epoch repeats `steps` times) after one warm-up step, and extrapolate.
        trainer.step()
        times = []
        for _ in range(spec["timed_steps"]):
            t1 = time.perf_counter()
            trainer.step()
            times.append(time.perf_counter() - t1)
        out["step_seconds"] = times
        out["step_ms"] = float(np.mean(times)) * 1000
        out["seconds_per_epoch"] = out["step_ms"] / 1000 * steps
        out["extrapolated"] = True
    out["fit_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- report ---------------------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    L = [
        "# Training speed (bench/train_speed.py)",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']} ({report.get('duration_min', 0):.1f} min), commit "
        f"{report['git_commit']}  ",
        f"Machine: {m['cpu_model']}, {m['nproc']} cores, {m['mem_gb']} GB RAM, CPU only (no "
        f"GPU); torch {m['torch']} with {report['params']['threads']} threads; Python "
        f"{m['python']}  ",
        f"Load average (1 min) at start {m['loadavg_start']}, at end {m.get('loadavg_end')}  ",
    ]
    if m.get("other_busy_processes_at_start"):
        L.append(
            "Other processes using the CPUs at the start: "
            + "; ".join(f"`{x}`" for x in m["other_busy_processes_at_start"])
            + "  "
        )
    L += [
        "",
        "MICRec reference config (d=64, 3 layers, batch 2048 per domain, Adam). "
        "`interactions` = dataset rows (x the kept share for the real points); `train pairs` "
        "= old-user x old-item training "
        "interactions after the 5-core and the inductive split (what an epoch iterates "
        "over). Epoch time excludes validation.",
        "",
        "| dataset | features | interactions | train pairs | items | steps/epoch | "
        "s/epoch | ms/step | setup s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["points"]:
        r = p["result"]
        items = sum(d["items"] for d in r["domains"].values())
        feats = "+".join(r["modalities"]) or "none"
        L.append(
            f"| {p['name']} | {feats} | {p['interactions']:,} | {r['train_pairs']:,} | "
            f"{items:,} | {r['steps_per_epoch']} | {r['seconds_per_epoch']:,.1f}"
            f"{'*' if r.get('extrapolated') else ''} | "
            f"{r['step_ms']:.0f} | {r['setup_s']:.1f} | {r['peak_rss_mb']:,.0f} |"
        )
    L += [
        "",
        "\\* extrapolated: steps/epoch x the mean time of single training steps (after a "
        "warm-up step), because whole epochs would exceed the benchmark's budget (every step "
        "propagates over the whole graph, so an epoch costs ~ interactions^2 / batch). "
        "Synthetic datasets are trained without content features (see the script's "
        "docstring); the real ones with MiniLM text features. Per-epoch times, per-domain "
        "sizes, load/split and feature times are in train_speed.json.",
        "",
    ]
    return "\n".join(L)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, marker in (("real", "o"), ("synthetic", "s")):
        pts = [p for p in report["points"] if p["kind"] == kind]
        if not pts:
            continue
        x = [p["result"]["train_pairs"] for p in pts]
        axes[0].plot(x, [p["result"]["seconds_per_epoch"] for p in pts], marker=marker, label=kind)
        axes[1].plot(x, [p["result"]["peak_rss_mb"] / 1024 for p in pts], marker=marker, label=kind)
    for ax, title, ylabel in (
        (axes[0], "seconds per epoch", "s"),
        (axes[1], "peak RSS", "GiB"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training interactions (train pairs)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    m = report["machine"]
    fig.suptitle(
        f"MICRec training on CPU ({report['params']['threads']} threads, {m['cpu_model']}), "
        f"{report['date'][:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info() -> dict[str, Any]:
    import torch

    other = []
    try:
        ps = subprocess.run(
            ["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True
        )
        for line in ps.stdout.splitlines()[1:6]:
            pcpu, _, cmd = line.strip().partition(" ")
            if float(pcpu) >= 20 and "bench/train_speed" not in cmd:
                other.append(f"{pcpu}% {cmd[:120]}")
    except (OSError, ValueError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_start": round(os.getloadavg()[0], 2),
        "other_busy_processes_at_start": other,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=REAL, help="real dataset folder")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument(
        "--synthetic",
        type=lambda t: int(float(t)),
        nargs="*",
        default=[500_000, 1_000_000, 2_000_000],
        help="approximate interaction counts of the synthetic datasets",
    )
    ap.add_argument("--epochs", type=int, default=3, help="epochs per point")
    ap.add_argument(
        "--big-epochs", type=int, default=2, help="epochs for datasets over 1M interactions"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--max-steps",
        type=int,
        default=100,
        help="run whole epochs only up to this many steps per point; beyond, time "
        "--timed-steps single steps and extrapolate the epoch",
    )
    ap.add_argument("--timed-steps", type=int, default=5)
    ap.add_argument("--work-dir", default="artifacts/bench-train-speed")
    ap.add_argument("--cache-dir", default="artifacts/cache")
    ap.add_argument("--out", default="docs/results/train_speed")
    ap.add_argument("--quick", action="store_true", help="25%% real + 50k synthetic, 1 epoch")
    ap.add_argument("--point", help=argparse.SUPPRESS)
    ap.add_argument("--point-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.point:
        res = run_point(json.loads(Path(args.point).read_text()))
        Path(args.point_out).write_text(json.dumps(res))
        return 0
    used = sys.argv[1:] if argv is None else argv
    if args.quick:
        args.shares = [0.25] if "--shares" not in used else args.shares
        args.synthetic = [50_000] if "--synthetic" not in used else args.synthetic
        args.epochs = args.big_epochs = 1
        if "--out" not in used:
            args.out = str(Path(tempfile.gettempdir()) / "micrec-train-speed-quick" / "train_speed")
    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "command": shlex.join(["python", "bench/train_speed.py", *used]),
        "date": started.isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "points": [],
    }
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, str, Path, str, float]] = []
    for share in args.shares:
        name = f"{args.dataset.name} {share:.0%}"
        plan.append(("real", name, args.dataset, "minilm-l6-v2", share))
    for target in args.synthetic:
        log(f"synthetic catalogue ~{target:,} interactions")
        data = synthetic(work / f"synth-{target}", target)
        plan.append(("synthetic", f"synthetic ~{target / 1e6:g}M", data, "none", 1.0))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MICREC_THREADS": str(args.threads)}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="micrec-train-speed-"))
    for kind, name, data, text, share in plan:
        n = round(count_rows(data) * share)
        epochs = args.big_epochs if n > 1_000_000 else args.epochs
        spec = {
            "data": str(data),
            "text": text,
            "epochs": epochs,
            "threads": args.threads,
            "cache_dir": args.cache_dir,
            "sparsify": share,
            "max_steps": args.max_steps,
            "timed_steps": args.timed_steps,
        }
        sp, op = tmp / f"{len(report['points'])}.json", tmp / f"{len(report['points'])}-out.json"
        sp.write_text(json.dumps(spec))
        log(f"{name}: {n:,} interactions, {epochs} epochs")
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--point", str(sp), "--point-out", str(op)],
            env=env,
            check=True,
        )
        res = json.loads(op.read_text())
        log(
            f"{name}: {res['seconds_per_epoch']:.1f} s/epoch ({res['steps_per_epoch']} steps), "
            f"peak RSS {res['peak_rss_mb']:.0f} MB, wall {time.perf_counter() - t:.0f} s"
        )
        report["points"].append(
            {
                "kind": kind,
                "name": name,
                "data": str(data),
                "interactions": n,
                "share": share,
                "epochs": epochs,
                "loadavg_1m_end": round(os.getloadavg()[0], 2),
                "result": res,
            }
        )
    report["machine"]["loadavg_end"] = round(os.getloadavg()[0], 2)
    report["duration_min"] = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    plot(report, out.with_suffix(".png"))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
