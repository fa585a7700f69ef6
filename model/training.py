"""Training loop: BPR + self-enhanced + cross-domain InfoNCE, annealing, early stopping.

One step samples a BPR batch in every domain, runs each domain's full propagation once
(inductive layer-0 with drop-interaction) and, when enabled, aligns overlapping users
across domain pairs and trains the hidden-history transfer loss (an overlapping user's
vector in one domain ranks their items in the other). An epoch has
ceil(max_D |train_D| / batch) steps, so a single-domain run is exactly INMO's schedule
(as many samples as training interactions).
"""

from __future__ import annotations

import copy
import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model.data.split import DomainSplit, InductiveSplit
from model.encoders.base import ItemFeatures
from model.metrics import ndcg_at_k_from_topk
from model.nn.config import MICRecConfig, TrainConfig
from model.nn.graph import TemplateMap, select_templates
from model.nn.micrec import DomainInputs, MICRec
from model.nn.modules import bpr_loss, symmetric_info_nce

log = logging.getLogger(__name__)


class BPRSampler:
    """Uniform user (among users with training items), uniform positive, uniform negative."""

    def __init__(self, pairs: np.ndarray, n_items: int, rng: np.random.Generator) -> None:
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        self.users_col = pairs[order, 0]
        self.items_col = pairs[order, 1]
        self.users = np.unique(self.users_col)
        self.start = np.searchsorted(self.users_col, self.users)
        self.deg = np.searchsorted(self.users_col, self.users, side="right") - self.start
        self.n_items = n_items
        self.keys = np.sort(self.users_col.astype(np.int64) * n_items + self.items_col)
        self.rng = rng

    def is_positive(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        k = u.astype(np.int64) * self.n_items + i
        pos = np.searchsorted(self.keys, k).clip(max=len(self.keys) - 1)
        return self.keys[pos] == k

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, positives, negatives), each int64 [n]."""
        u = self.users[self.rng.integers(0, len(self.users), n)]
        pos, neg = self.items_of(u)
        return u, pos, neg

    def items_of(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One uniformly drawn training item of each user in ``u`` (who must have one) and
        one uniform negative: (positives, negatives), each int64 [len(u)]."""
        k = np.searchsorted(self.users, u)
        pos = self.items_col[
            self.start[k] + (self.rng.random(len(u)) * self.deg[k]).astype(np.int64)
        ]
        neg = self.rng.integers(0, self.n_items, len(u))
        bad = self.is_positive(u, neg)
        while bad.any():  # resample negatives that hit a positive (rare: data is sparse)
            neg[bad] = self.rng.integers(0, self.n_items, int(bad.sum()))
            bad = self.is_positive(u, neg)
        return pos, neg


def domain_features(
    features: ItemFeatures | None, item_ids: list[str], modalities: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Feature matrices aligned to a domain's local item ids (only requested modalities)."""
    if features is None or not modalities:
        return {}, {}
    rows = features.rows(item_ids)
    feats = {m: f.vectors for m, f in rows.modalities.items() if m in modalities and f.mask.any()}
    masks = {m: rows.modalities[m].mask for m in feats}
    return feats, masks


def overlap_pairs(
    split: InductiveSplit, a: str, b: str, pairs: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Local ids (in a and in b) of users with input interactions in both domains."""
    da, db = split.domains[a], split.domains[b]
    ua = np.unique(pairs[a][:, 0]) if len(pairs[a]) else np.array([], dtype=np.int64)
    ub = np.unique(pairs[b][:, 0]) if len(pairs[b]) else np.array([], dtype=np.int64)
    pos_b = {db.user_ids[u]: u for u in ub}
    both = [(u, pos_b[da.user_ids[u]]) for u in ua if da.user_ids[u] in pos_b]
    arr = np.array(both, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def validation_targets(ds: DomainSplit) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Old users' validation items among old items (INMO's dropui validation)."""
    val = ds.old_pairs(ds.val)
    users = np.unique(val[:, 0])
    order = np.argsort(val[:, 0], kind="stable")
    v = val[order]
    cut = np.searchsorted(v[:, 0], users)
    groups = np.split(v[:, 1], cut[1:])
    return users, dict(zip(users.tolist(), groups, strict=True))


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best_val: float
    seconds_per_epoch: float
    peak_memory_mb: float
    templates: dict[str, TemplateMap] = field(default_factory=dict)


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun (gloo on CPU,
    nccl on CUDA). Outside torchrun: (0, 1)."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = (
            "nccl"
            if torch.cuda.is_available() and os.environ.get("MICREC_DIST_BACKEND") != "gloo"
            else "gloo"
        )
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class StepLoss(nn.Module):
    """The whole training objective of one step as a module, so that one forward call
    covers every domain (what DistributedDataParallel needs to all-reduce gradients once)."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model
        self.t = [trainer]  # a list keeps the trainer out of the module tree

    def forward(
        self,
        bpr: dict[str, tuple[torch.Tensor, ...]],
        cd_picks: list[torch.Tensor],
        transfer: list[tuple[torch.Tensor, ...]] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = self.t[0]
        model, mc = self.model, t.mc
        losses: dict[str, torch.Tensor] = {}
        z_users: dict[str, torch.Tensor] = {}
        z_items: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=t.device)
        for d, (u, p, n) in bpr.items():
            zu, zi, _ = model(d, t.inputs[d], drop=mc.drop_interaction, generator=t.gen)
            z_users[d], z_items[d] = zu, zi
            loss = bpr_loss((zu[u] * zi[p]).sum(-1), (zu[u] * zi[n]).sum(-1))
            losses[f"bpr/{d}"] = loss.detach()
            if mc.cold_item_weight > 0 and isinstance(model, MICRec) and model.content is not None:
                cp = model.cold_item_vectors(d, t.inputs[d], p)
                cn = model.cold_item_vectors(d, t.inputs[d], n)
                cold = bpr_loss((zu[u] * cp).sum(-1), (zu[u] * cn).sum(-1))
                losses[f"cold/{d}"] = cold.detach()
                loss = loss + mc.cold_item_weight * cold
            if mc.l2_weight > 0:
                reg = zu[u].pow(2).sum() + zi[p].pow(2).sum() + zi[n].pow(2).sum()
                loss = loss + mc.l2_weight * reg / len(u)
            if mc.self_enhanced_weight > 0 and isinstance(model, MICRec):
                sp, vp = model.self_enhanced_scores(d, u, p)
                sn, vn = model.self_enhanced_scores(d, u, n)
                ok = vp & vn
                if ok.any():
                    se = bpr_loss(sp[ok], sn[ok])
                    losses[f"se/{d}"] = se.detach()
                    loss = loss + mc.self_enhanced_weight * se
            total = total + loss
        if t.cd_pairs and isinstance(model, MICRec) and model.head is not None:
            cd = torch.zeros((), device=t.device)
            for (a, b, ua, ub), k in zip(t.cd_pairs, cd_picks, strict=True):
                qa = model.head(z_users[a][torch.as_tensor(ua, device=t.device)[k]])
                qb = model.head(z_users[b][torch.as_tensor(ub, device=t.device)[k]])
                cd = cd + symmetric_info_nce(qa, qb, mc.temperature)
            losses["cd"] = cd.detach()
            total = total + mc.cross_domain_weight * cd
        if transfer and isinstance(model, MICRec) and model.transfer is not None:
            tr = torch.zeros((), device=t.device)
            for (src, dst, _, _), (us, pos, neg) in zip(t.transfer_pairs, transfer, strict=True):
                # the user's dst history is hidden: their src vector alone ranks dst's items,
                # with dst's own BPR loss (a softmax over all of dst's items pulled every
                # item vector and cut in-domain quality: docs/results/ablation/transfer.md)
                query = model.transfer_map(src, dst)(z_users[src][us])
                zi = z_items[dst]
                tr = tr + bpr_loss((query * zi[pos]).sum(-1), (query * zi[neg]).sum(-1))
            losses["transfer"] = tr.detach()
            total = total + mc.transfer_weight * tr
        return total, losses


class Trainer:
    """Trains MICRec (or any ablation) on an inductive split's old x old interactions."""

    def __init__(
        self,
        split: InductiveSplit,
        features: ItemFeatures | None,
        model_config: MICRecConfig,
        train_config: TrainConfig,
        *,
        domains: list[str] | None = None,
        model_factory: Callable[..., nn.Module] | None = None,
    ) -> None:
        self.split = split
        self.domains = sorted(domains or split.domains)
        self.mc = model_config
        self.tc = train_config
        self.device = torch.device(train_config.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in __import__("os").environ:
            self.device = torch.device("cuda", int(__import__("os").environ["LOCAL_RANK"]))
        torch.manual_seed(train_config.seed)
        rank, _ = distributed_rank_world()
        self.rng = np.random.default_rng([train_config.seed, rank])
        self.gen = torch.Generator(device=self.device).manual_seed(train_config.seed)
        self.train_pairs = {d: split.domains[d].train_old() for d in self.domains}
        self.templates = {
            d: select_templates(
                split.domains[d].n_users,
                split.domains[d].n_items,
                self.train_pairs[d],
                model_config.template_ratio,
            )
            for d in self.domains
        }
        self.inputs: dict[str, DomainInputs] = {}
        feature_dims: dict[str, int] = {}
        for d in self.domains:
            ds = split.domains[d]
            feats, masks = domain_features(features, ds.item_ids, model_config.modalities)
            feature_dims.update({m: v.shape[1] for m, v in feats.items()})
            self.inputs[d] = DomainInputs.build(
                self.templates[d],
                ds.n_users,
                ds.n_items,
                self.train_pairs[d],
                feats,
                masks,
                self.device,
            )
        factory = model_factory or MICRec
        self.model = factory(model_config, self.templates, feature_dims).to(self.device)
        self.samplers = {
            d: BPRSampler(self.train_pairs[d], split.domains[d].n_old_items, self.rng)
            for d in self.domains
            if len(self.train_pairs[d])
        }
        self.cd_pairs = []
        if model_config.cross_domain_weight > 0:
            for a_idx, a in enumerate(self.domains):
                for b in self.domains[a_idx + 1 :]:
                    ua, ub = overlap_pairs(split, a, b, self.train_pairs)
                    if len(ua) >= 2:
                        self.cd_pairs.append((a, b, ua, ub))
        # ordered pairs (src, dst, src ids, dst ids) of the transfer loss's anchors: users
        # with training items in both, minus dst's pseudo-cold validation users (validation
        # judges users new to a domain on them, so no cross-domain mapping trains on them)
        self.transfer_pairs: list[tuple[str, str, np.ndarray, np.ndarray]] = []
        if model_config.transfer_weight > 0:
            for a_idx, a in enumerate(self.domains):
                for b in self.domains[a_idx + 1 :]:
                    ua, ub = overlap_pairs(split, a, b, self.train_pairs)
                    for src, dst, us, ud in ((a, b, ua, ub), (b, a, ub, ua)):
                        keep = ~np.isin(ud, split.pseudo_cold_users(dst))
                        if keep.sum() >= 2:
                            self.transfer_pairs.append((src, dst, us[keep], ud[keep]))
        self.val = {d: validation_targets(split.domains[d]) for d in self.domains}
        self.rank, self.world = distributed_rank_world()
        self.loss_module: nn.Module = StepLoss(self)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # identical init on every rank (DDP broadcasts rank 0's), gradients averaged;
            # every rank samples its own batches (seed + rank), so N ranks see N x the data
            # per step. Some parameters (head, w) may be unused in a step.
            self.loss_module = DistributedDataParallel(
                self.loss_module, find_unused_parameters=True
            )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.lr)

    def steps_per_epoch(self) -> int:
        return max(
            1, math.ceil(max(len(p) for p in self.train_pairs.values()) / self.tc.batch_size)
        )

    def sample(
        self,
    ) -> tuple[
        dict[str, tuple[torch.Tensor, ...]],
        list[torch.Tensor],
        list[tuple[torch.Tensor, ...]],
    ]:
        """One step's BPR triples per domain, overlapping-user picks per domain pair and,
        per ordered pair of the transfer loss, (src user ids, a dst training item and a dst
        negative each)."""
        bpr = {
            d: tuple(torch.as_tensor(x, device=self.device) for x in s.sample(self.tc.batch_size))
            for d, s in self.samplers.items()
        }
        cd = [
            torch.as_tensor(
                self.rng.choice(
                    len(ua), size=min(self.mc.cross_domain_batch, len(ua)), replace=False
                ),
                device=self.device,
            )
            for _, _, ua, _ in self.cd_pairs
        ]
        transfer = []
        for _, dst, us, ud in self.transfer_pairs:
            k = self.rng.choice(
                len(us), size=min(self.mc.cross_domain_batch, len(us)), replace=False
            )
            pos, neg = self.samplers[dst].items_of(ud[k])
            transfer.append(
                tuple(torch.as_tensor(x, device=self.device) for x in (us[k], pos, neg))
            )
        return bpr, cd, transfer

    def step(self) -> dict[str, float]:
        self.model.train()
        bpr, cd, transfer = self.sample()
        total, losses = self.loss_module(bpr, cd, transfer)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        out = {k: float(v) for k, v in losses.items()}
        out["total"] = float(total.detach())
        return out

    @torch.no_grad()
    def validate(self, k: int = 20) -> dict[str, float]:
        """NDCG@k on old users' validation items, ranking old items, train items masked."""
        self.model.eval()
        out: dict[str, float] = {}
        for d in self.domains:
            users, targets = self.val[d]
            if self.tc.val_users and len(users) > self.tc.val_users:
                users = np.sort(
                    np.random.default_rng(0).choice(users, self.tc.val_users, replace=False)
                )
            if not len(users):
                continue
            n_old = self.split.domains[d].n_old_items
            zu, zi, _ = self.model(d, self.inputs[d])
            scores = zu[torch.as_tensor(users, device=self.device)] @ zi[:n_old].T
            tp = self.train_pairs[d]
            row_of = {u: r for r, u in enumerate(users.tolist())}
            sel = np.array([row_of.get(u, -1) for u in tp[:, 0]])
            m = sel >= 0
            scores[
                torch.as_tensor(sel[m], device=self.device),
                torch.as_tensor(tp[m, 1], device=self.device),
            ] = -torch.inf
            # a domain may have fewer old items than k (K larger than a catalogue is legal)
            top = torch.topk(scores, min(k, n_old), dim=1).indices.cpu().numpy()
            out[d] = ndcg_at_k_from_topk(top, [targets[u] for u in users.tolist()], k)
        return out

    def fit(
        self, *, progress: bool = True, on_epoch: Callable[[dict[str, Any]], None] | None = None
    ) -> TrainResult:
        tc = self.tc
        history: list[dict[str, Any]] = []
        best_val, best_epoch, best_state = -1.0, 0, copy.deepcopy(self.model.state_dict())
        bad = 0
        steps = self.steps_per_epoch()
        train_seconds = 0.0
        bar = tqdm(range(1, tc.epochs + 1), desc="train", unit="epoch", disable=not progress)
        for epoch in bar:
            t0 = time.perf_counter()
            agg: dict[str, float] = {}
            for _ in range(steps):
                for key, value in self.step().items():
                    agg[key] = agg.get(key, 0.0) + value / steps
            train_seconds += time.perf_counter() - t0
            alpha = getattr(self.model, "alpha", None)
            row: dict[str, Any] = {
                "epoch": epoch,
                "alpha": None if alpha is None else float(alpha),
                **agg,
            }
            row["train_seconds"] = time.perf_counter() - t0
            if epoch % tc.eval_every == 0 or epoch == tc.epochs:
                val = self.validate()
                mean_val = float(np.mean(list(val.values()))) if val else 0.0
                row.update({f"val_ndcg@20/{d}": v for d, v in val.items()})
                row["val_ndcg@20"] = mean_val
                if mean_val > best_val:
                    best_val, best_epoch, bad = mean_val, epoch, 0
                    best_state = copy.deepcopy(self.model.state_dict())  # alpha buffer included
                else:
                    bad += tc.eval_every
            history.append(row)
            log.debug("epoch %s", row)
            bar.set_postfix(
                loss=f"{agg.get('total', 0):.4f}",
                val=f"{row.get('val_ndcg@20', float('nan')):.4f}",
                best=best_epoch,
            )
            if on_epoch:
                on_epoch(row)
            if isinstance(self.model, MICRec):
                self.model.alpha.mul_(self.mc.alpha_decay)
            if bad >= tc.patience:
                log.info(
                    "early stop at epoch %d (best %d, val NDCG@20 %.4f)",
                    epoch,
                    best_epoch,
                    best_val,
                )
                break
        self.model.load_state_dict(best_state)
        return TrainResult(
            model=self.model,
            history=history,
            best_epoch=best_epoch,
            best_val=best_val,
            seconds_per_epoch=train_seconds / max(1, len(history)),
            peak_memory_mb=peak_memory_mb(self.device),
            templates=self.templates,
        )


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "training") -> Path:
    """Training-curve PNG: total loss and validation NDCG@20 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted(
        {k for r in history for k in r if k == "total" or k.startswith(("bpr/", "cd"))}
    ):
        ax1.plot(epochs, [r.get(key, np.nan) for r in history], label=key)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=8)
    for key in sorted({k for r in history for k in r if k.startswith("val_ndcg@20")}):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation NDCG@20")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
