"""``micrec retrain``: export -> hold out the newest interactions -> train a candidate with
the serving bundle's configuration -> score candidate and current bundle on exactly that
window (model/retrain.py) -> report -> registry: promote (every replica follows,
app/lifecycle/promotion.py) or refuse (kept for inspection, never served).

One run lives in ``<retrain_dir>/<run id>/``: ``export/`` (the whole export), ``train/``
(the candidate's dataset: the rest, the window in holdout.csv), ``candidate/`` (the
bundle, with retrain-report.md/.json/.png) and ``outcome.json``. A promoted candidate's
``train/`` is the next export's base (the bundle manifest names it): keep the directory.

Under ``torchrun`` every rank trains; rank 0 alone exports, evaluates, reports and writes
to the registry (other ranks wait at a barrier for the data, then return None).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.api.timestamps import DEFAULT_TIMESTAMP_SKEW_S
from app.feedback.report import online_markdown, online_report
from app.learning.export import export_dataset
from app.lifecycle.canary import start_canary
from app.lifecycle.promotion import promote
from app.settings_groups import DEFAULT_POSITIVE_EVENTS
from app.store.base import Store, StoreUnavailable
from model.bundle import load_bundle, read_manifest
from model.data.writer import bundle_training_data
from model.registry import BundleRegistry
from model.retrain import (
    Gate,
    NothingNew,
    Window,
    decision_json,
    gate,
    score_on_window,
    split_by_time,
)
from model.retrain import window_split as build_window_split
from model.retrain_gate import PerUser
from model.runconfig import RunConfig, run_config_from_dict

log = logging.getLogger("micrec.retrain")
OUTCOME_FILE = "outcome.json"


@dataclass(frozen=True)
class RetrainOptions:
    window: Window = field(default_factory=Window)
    gate: Gate = field(default_factory=Gate)
    tune: bool = False
    """Re-run the [tune] search (slow); default: train the current bundle's chosen config."""
    epochs: int | None = None
    """Override [train] epochs (a quick or a deliberately weak candidate)."""
    data: Path | None = None
    """An exported dataset to use instead of exporting now."""
    progress: bool = True
    keep_runs: int = 0
    """Keep only the newest N run directories (0: keep all); see :func:`prune_runs`."""
    max_timestamp_skew_s: float = DEFAULT_TIMESTAMP_SKEW_S
    """Stored rows stamped later than this past the export's clock are left out of it."""
    canary_share: float = 0.0
    """> 0: a candidate the gate passes starts as a canary for this share of users
    (app/lifecycle/canary.py) instead of being promoted at once."""
    positive_events: tuple[str, ...] = DEFAULT_POSITIVE_EVENTS
    """The positive feedback types (``feedback_positive``) the online section lists."""


@dataclass
class Outcome:
    """What one run did: ``outcome`` is "promoted", "canary" (passed the gate, served to a
    share of users first), "refused" or "skipped" (nothing new since the current bundle's
    training data; ``error`` says so)."""

    outcome: str
    run_dir: Path
    version: str | None = None
    decision: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    announced: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "run_dir": str(self.run_dir),
            "version": self.version,
            "decision": self.decision,
            "seconds": self.seconds,
            "error": self.error,
            "announced": self.announced,
        }


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 3)
            log.info("retrain: %s took %.1f s", name, self.seconds[name])


def candidate_config(manifest: dict[str, Any], opts: RetrainOptions) -> RunConfig:
    """The current bundle's run config (after tuning it records the chosen trial's), with
    no new search unless asked, ratings already applied by the export."""
    cfg = run_config_from_dict(manifest["data"]["run_config"])
    cfg = replace(cfg, data=replace(cfg.data, min_rating=None))
    if not opts.tune:
        cfg = replace(cfg, tune=replace(cfg.tune, trials=0))
    if opts.epochs is not None:
        cfg = replace(cfg, train=replace(cfg.train, epochs=opts.epochs))
    return cfg


def _new_run_dir(root: Path) -> str:
    """Creates and names a fresh run directory: UTC start time and pid, plus a counter when
    that name is taken (two runs of one process within a second)."""
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    for k in itertools.count(1):
        name = base if k == 1 else f"{base}-{k}"
        try:
            (root / name).mkdir()
        except FileExistsError:
            continue
        return name
    raise AssertionError("unreachable")


def _shared_run_dir(root: Path, rank: int, world: int) -> Path:
    """Rank 0 names the run; under torchrun the name is broadcast to the other ranks."""
    name = [_new_run_dir(root) if rank == 0 else ""]
    if world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(name, src=0)
    return root / name[0]


def retrain(
    store: Store,
    registry: BundleRegistry,
    retrain_dir: Path,
    opts: RetrainOptions,
) -> Outcome | None:
    """One retrain run (module docstring). None on ranks other than 0."""
    from model.data.loading import load_dataset
    from model.pipeline import load_features, train_run
    from model.training import distributed_rank_world

    rank, world = distributed_rank_world()
    current_version = registry.current()
    if current_version is None:
        raise ValueError(f"registry {registry.root} has no current version to compare with")
    current_dir = registry.path(current_version)
    manifest = read_manifest(current_dir)
    run_dir = _shared_run_dir(Path(retrain_dir), rank, world)
    clock = _Clock()
    export_dir, train_dir = (opts.data or run_dir / "export"), run_dir / "train"
    skip: list[str | None] = [None]
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if opts.data is None:
            with clock.stage("export"):
                export_dataset(
                    store,
                    current_dir,
                    export_dir,
                    progress=opts.progress,
                    max_timestamp_skew_s=opts.max_timestamp_skew_s,
                )
        with clock.stage("split"):
            until = bundle_training_data(current_dir).trained_until()
            try:
                cut = split_by_time(export_dir, train_dir, opts.window, until)
            except NothingNew as err:
                skip = [str(err)]
    if world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(skip, src=0)  # also: the other ranks read train/ after
    if skip[0] is not None:
        if rank != 0:
            return None
        out = Outcome("skipped", run_dir, seconds=clock.seconds, error=skip[0])
        (run_dir / OUTCOME_FILE).write_text(json.dumps(out.to_json(), indent=1))
        return out
    cfg = candidate_config(manifest, opts)
    with clock.stage("train"):
        trained = train_run(
            train_dir, cfg, run_dir / "candidate", progress=opts.progress, run_test=False
        )
    if rank != 0:
        return None
    with clock.stage("score"):
        dataset = load_dataset(export_dir)
        domains = list(manifest["domains"])
        scored = build_window_split(
            dataset, cut.cutoff, domains, min_rows=opts.window.min_user_rows
        )
        split = scored.split
        candidate = load_bundle(trained.bundle_dir)
        current = load_bundle(current_dir)
        cand_cfg = run_config_from_dict(candidate.manifest["data"]["run_config"])
        cur_cfg = run_config_from_dict(manifest["data"]["run_config"])
        cand_feats = load_features(dataset, cand_cfg, progress=opts.progress)
        same = cand_cfg.features == cur_cfg.features
        cur_feats = cand_feats if same else load_features(dataset, cur_cfg, progress=False)
        per_user: dict[str, PerUser] = {"candidate": {}, "current": {}}
        results = {
            "candidate": score_on_window(
                "candidate", candidate, split, cand_feats, per_user["candidate"]
            ),
            "current": score_on_window("current", current, split, cur_feats, per_user["current"]),
        }
    decision = gate(results["candidate"], results["current"], opts.gate, *per_user.values())
    verdict = decision_json(decision)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "current_version": current_version,
        "current_model_version": current.model_version,
        "candidate_model_version": candidate.model_version,
        "window": {
            "cutoff": cut.cutoff,
            "current_trained_until": until,
            "spec": {"fraction": opts.window.fraction, "days": opts.window.days},
            "train_rows": cut.n_train,
            "window_rows": cut.n_window,
            "rows_dropped_bad_timestamp": _export_count(export_dir, "rows_skipped_bad_timestamp"),
            "targets": {d: len(s.test) for d, s in split.domains.items()},
            "scored": scored.counts,
            "min_user_rows": opts.window.min_user_rows,
        },
        "config": {"tune": opts.tune, "epochs": cfg.train.epochs, "world_size": world},
        "gate": verdict,
        "results": results,
        "online": online_report(store, current.model_version, opts.positive_events),
    }
    with clock.stage("report"):
        from model.retrain_report import write_report

        md = write_report(trained.bundle_dir, report, clock.seconds)
        with md.open("a") as f:
            f.write(online_markdown(report["online"]))
    with clock.stage("registry"):
        version = registry.add(
            trained.bundle_dir,
            meta={"source": "retrain", "run_dir": str(run_dir), "gate": verdict},
        )
        announced, promoted = None, False
        with registry.locked():  # no other promotion between this check and ours
            moved = registry.current()
            if decision.promote and moved != current_version:
                # the candidate was measured against a bundle that no longer serves
                verdict = {
                    **verdict,
                    "promote": False,
                    "reason": (
                        f"{decision.reason}, but the current version changed from "
                        f"{current_version} to {moved} during the run"
                    ),
                }
            canary = False
            if verdict["promote"] and opts.canary_share > 0:
                try:
                    start_canary(registry, store, version, opts.canary_share)
                    announced, canary = True, True
                except StoreUnavailable as err:
                    announced = False
                    log.error("retrain: %s passed the gate; canary not announced: %s", version, err)
            elif verdict["promote"]:
                p = promote(registry, store, version, reason=f"retrain gate: {decision.reason}")
                announced, promoted = p.announced, True
                if not p.announced:
                    log.error("retrain: %s promoted but not announced: %s", version, p.error)
            else:
                registry.refuse(version, report=verdict)
    out = Outcome(
        "canary" if canary else "promoted" if promoted else "refused",
        run_dir,
        version,
        verdict,
        clock.seconds,
        announced=announced,
    )
    (run_dir / OUTCOME_FILE).write_text(json.dumps(out.to_json(), indent=1))
    if opts.keep_runs > 0:
        prune_runs(Path(retrain_dir), registry, opts.keep_runs)
    return out


def _export_count(export_dir: Path, key: str) -> int:
    """A count from the export's export.json (0 when absent: an export made elsewhere)."""
    try:
        return int(json.loads((export_dir / "export.json").read_text())["counts"].get(key, 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0


def prune_runs(retrain_dir: Path, registry: BundleRegistry, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` run directories, except a run whose training
    folder a registry version was trained on (a rollback may make it the next export's
    base). Returns the directories deleted."""
    used = set()
    for info in registry.list():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            used.add(Path(read_manifest(info.path)["data"]["dataset"]).resolve().parent)
    marks = ("train", "export", OUTCOME_FILE)
    runs = sorted(  # run names start with their UTC start time
        p
        for p in Path(retrain_dir).iterdir()
        if p.is_dir() and any((p / m).exists() for m in marks)
    )
    gone = [p for p in runs[: max(0, len(runs) - keep)] if p.resolve() not in used]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone
