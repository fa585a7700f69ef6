"""Two simple signals for users new to a domain, next to most-popular: are they worth a map?

    python bench/cd_cold_probe.py --dataset ../shared/datasets/amazon-arts-office \
        --seeds 0 1 2 --out docs/results/ablation/cd-cold-probes/arts-office

Users new to a domain (history only in the other domain) are served by most-popular or by
the cross-domain map (model.bridgefit). Before building another map, this probe measures
whether two cheap signals of the overlapping users carry more than popularity does:

- ``anchor popular``: items ranked by how many *overlapping* users (users with input in
  another domain too) bought them, not all users: the population a user new to the
  domain comes from.
- ``co-purchase (w)``: cross-domain item-to-item co-occurrence over the overlapping
  users, ``s_j = sum over the user's other-domain items i of P(j | i)`` (max-normalised per
  user) plus ``w`` times the popularity prior ``log(1 + deg_j) / log(1 + max deg)``;
  ``w`` is chosen per domain on the validation pseudo-cold users, then test is read once.

Both read only the slice's inputs (model.evaluation.slice_inputs), so the evaluated
users' target-domain history is hidden exactly as for the served model. Writes
``OUT/probe.json`` and ``OUT/probe.md`` (NDCG@20, validation and test, per seed and mean).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from model.data.loading import load_dataset
from model.data.split import InductiveSplit, SplitConfig, build_split
from model.evaluation import PSEUDO_COLD_SLICE, Scorer, evaluate
from model.rankers import PopularRanker

log = logging.getLogger("cd_cold_probe")

TEST_SLICE = "cd_cold_users"
POP_WEIGHTS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Popularity weights of the co-purchase score tried on validation."""
RANKS = (0, 64)
"""0: the exact co-occurrence; r: its rank-r truncated SVD (one inner product to serve)."""


def _pairs_matrix(pairs: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary user x item matrix of (user, item) rows (repeats count once)."""
    m = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=shape)
    m.data[:] = 1.0
    return m


def _anchor_mask(split: InductiveSplit, domain: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """[n_users of domain] bool: users with input rows in another domain."""
    ds = split.domains[domain]
    raw: set[str] = set()
    for d, rows in inputs.items():
        if d != domain and len(rows):
            raw.update(split.domains[d].user_ids[u] for u in np.unique(rows[:, 0]))
    return np.array([u in raw for u in ds.user_ids], dtype=bool)


class AnchorPopularRanker:
    """Most popular among the users who shop in another domain too."""

    name = "anchor-popular"

    def __init__(self, split: InductiveSplit) -> None:
        self.split = split

    def serves(self, slice_name: str) -> bool:
        return True

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        return _AnchorPopularScorer(self.split, inputs)


class _AnchorPopularScorer:
    def __init__(self, split: InductiveSplit, inputs: dict[str, np.ndarray]) -> None:
        self.split, self.inputs = split, inputs

    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor:
        n = self.split.domains[domain].n_items
        rows = self.inputs[domain]
        anchor = _anchor_mask(self.split, domain, self.inputs)
        deg = np.bincount(rows[anchor[rows[:, 0]], 1], minlength=n).astype(np.float64)
        # ties (items no overlapping user bought) fall back to the overall degree
        deg += 1e-3 * np.bincount(rows[:, 1], minlength=n) / max(len(rows), 1)
        return torch.from_numpy(deg.astype(np.float32)).expand(len(users), n)


class CoPurchaseRanker:
    """Cross-domain co-occurrence over overlapping users, plus ``pop_weight`` x prior."""

    def __init__(self, split: InductiveSplit, pop_weight: float, rank: int = 0) -> None:
        self.split = split
        self.pop_weight = pop_weight
        self.rank = rank
        low = f", rank {rank}" if rank else ""
        self.name = f"co-purchase (w={pop_weight:g}{low})"

    def serves(self, slice_name: str) -> bool:
        return slice_name in (TEST_SLICE, PSEUDO_COLD_SLICE)

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        return _CoPurchaseScorer(self.split, inputs, self.pop_weight, self.rank)


class _CoPurchaseScorer:
    def __init__(
        self, split: InductiveSplit, inputs: dict[str, np.ndarray], w: float, rank: int
    ) -> None:
        self.split, self.inputs, self.w, self.rank = split, inputs, w, rank
        self._cache: dict[tuple[str, str], sp.csr_matrix] = {}
        self._low: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def _factors(self, source: str, target: str) -> tuple[np.ndarray, np.ndarray]:
        """Rank-r factors (U S, V) of the transition: what one inner product can serve."""
        key = (source, target)
        if key not in self._low:
            u, s, vt = spla.svds(self._transition(source, target), k=self.rank, random_state=0)
            self._low[key] = (u * s, vt.T)
        return self._low[key]

    def _transition(self, source: str, target: str) -> sp.csr_matrix:
        """[source items, target items] P(j | i) over users with input in both domains."""
        key = (source, target)
        if key not in self._cache:
            s, t = self.split.domains[source], self.split.domains[target]
            where = {u: k for k, u in enumerate(t.user_ids)}
            in_t = np.array([where.get(u, -1) for u in s.user_ids])
            ok = np.flatnonzero(in_t >= 0)
            # source users -> target users (only overlapping ones carry co-occurrence)
            link = sp.csr_matrix((np.ones(len(ok)), (ok, in_t[ok])), shape=(s.n_users, t.n_users))
            a = _pairs_matrix(self.inputs[source], (s.n_users, s.n_items))
            b = _pairs_matrix(self.inputs[target], (t.n_users, t.n_items))
            co = (a.T @ link @ b).tocsr()
            total = np.asarray(co.sum(axis=1)).ravel()
            self._cache[key] = (sp.diags(1.0 / np.maximum(total, 1.0)) @ co).tocsr()
        return self._cache[key]

    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor:
        ds = self.split.domains[domain]
        deg = np.bincount(self.inputs[domain][:, 1], minlength=ds.n_items).astype(np.float64)
        prior = np.log1p(deg) / max(float(np.log1p(deg.max())), 1e-12)
        out = np.tile(self.w * prior, (len(users), 1))
        raw = [ds.user_ids[u] for u in users]
        for d, os_ in self.split.domains.items():
            if d == domain:
                continue
            where = {u: k for k, u in enumerate(os_.user_ids)}
            local = np.array([where.get(r, -1) for r in raw])
            rows = self.inputs[d]
            hist = _pairs_matrix(rows, (os_.n_users, os_.n_items))
            pick = sp.csr_matrix(
                (np.ones(int((local >= 0).sum())), (np.flatnonzero(local >= 0), local[local >= 0])),
                shape=(len(users), os_.n_users),
            )
            if self.rank:
                # the served form: the user's mean left factor, L2-normalised, times V
                left, right = self._factors(d, domain)
                n_hist = np.maximum(np.asarray((pick @ hist).sum(axis=1)), 1.0)
                uvec = np.asarray(pick @ hist @ left) / n_hist
                uvec /= np.maximum(np.linalg.norm(uvec, axis=1, keepdims=True), 1e-12)
                out += uvec @ right.T
                continue
            else:
                s = np.asarray((pick @ hist @ self._transition(d, domain)).todense())
            out += s / np.maximum(s.max(axis=1, keepdims=True), 1e-12)
        return torch.from_numpy(out.astype(np.float32))


def _ndcg(result: dict[str, Any], domain: str, slice_name: str) -> float | None:
    row = result.get(domain, {}).get(slice_name) or {}
    value = row.get("ndcg@20")
    return None if value is None else float(value)


def probe_split(split: InductiveSplit) -> dict[str, dict[str, Any]]:
    """Per domain: validation (pseudo-cold) and test (users new to the domain) NDCG@20 of
    most-popular, anchor-popular and co-purchase at every weight, and the weight that
    validation chose."""
    rankers: list[Any] = [PopularRanker(split), AnchorPopularRanker(split)]
    rankers += [CoPurchaseRanker(split, w, rank) for rank in RANKS for w in POP_WEIGHTS]
    out: dict[str, dict[str, Any]] = {d: {"val": {}, "test": {}} for d in sorted(split.domains)}
    for r in rankers:
        val = evaluate(r, split, stage="val", only=[PSEUDO_COLD_SLICE])
        test = evaluate(r, split, stage="test", only=[TEST_SLICE])
        for d in out:
            out[d]["val"][r.name] = _ndcg(val, d, PSEUDO_COLD_SLICE)
            out[d]["test"][r.name] = _ndcg(test, d, TEST_SLICE)
    for rec in out.values():
        co = {
            k: v
            for k, v in rec["val"].items()
            if k.startswith("co-purchase") and "rank" not in k and v is not None
        }
        rec["chosen"] = max(co, key=lambda k: co[k]) if co else None
    return out


def report(runs: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """Markdown: per domain, the mean over seeds (validation / test) of each signal, and
    the co-purchase weight validation chose, read on test."""
    lines = [
        "NDCG@20 (%) of users new to the domain: validation = pseudo-cold users (old users",
        "with their target history hidden), test = the real ones. Mean over seeds "
        + ", ".join(str(s) for s in sorted(runs))
        + ".",
        "",
        "| domain | signal | validation | test | test vs most popular |",
        "|---|---|---:|---:|---:|",
    ]
    first = runs[min(runs)]
    for d in first:
        names = [*first[d]["test"], "co-purchase (validation's w)"]
        base = float(np.mean([runs[s][d]["test"]["popular"] or 0.0 for s in runs]))
        for name in names:
            if name.startswith("co-purchase (validation"):
                val = [runs[s][d]["val"][runs[s][d]["chosen"]] for s in runs]
                test = [runs[s][d]["test"][runs[s][d]["chosen"]] for s in runs]
            else:
                val = [runs[s][d]["val"][name] for s in runs]
                test = [runs[s][d]["test"][name] for s in runs]
            if None in val or None in test:
                continue
            mv, mt = 100 * float(np.mean(val)), 100 * float(np.mean(test))
            ratio = f"{mt / (100 * base):.2f}" if base else "n/a"
            lines.append(f"| {d} | {name} | {mv:.2f} | {mt:.2f} | {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k-core", type=int, default=5)
    ap.add_argument("--sparsify", default=None, metavar="DOMAIN=SHARE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    sparsify = {}
    if args.sparsify:
        dom, share = args.sparsify.split("=")
        sparsify = {dom: float(share)}
    dataset = load_dataset(args.dataset)
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    for seed in args.seeds:
        split = build_split(dataset, SplitConfig(seed=seed, k_core=args.k_core, sparsify=sparsify))
        runs[seed] = probe_split(split)
        log.info("seed %d: %s", seed, {d: r["chosen"] for d, r in runs[seed].items()})
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": args.dataset, "k_core": args.k_core, "sparsify": sparsify}
    (args.out / "probe.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    lines = report(runs)
    (args.out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
