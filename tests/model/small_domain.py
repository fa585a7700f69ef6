"""The small-domain dataset of issue 12: a domain with fewer items than K = 20.

Two domains, ``big`` (300 items) and ``small`` (12 items); 200 users with 15 interactions
in ``big`` and 8 in ``small`` each. After the split ``small`` has ~10 old items, so
validation, evaluation (K = 10, 20, 50) and serving (n = 20) all ask for more items than
the domain has.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

DOMAINS = {"big": (300, 15), "small": (12, 8)}  # domain -> (items, interactions per user)
USERS = 200
WORDS = ("pen", "paper", "ink", "desk", "lamp", "mug", "chair", "shelf", "clip", "tape")


def write_small_domain_dataset(root: Path, seed: int = 0) -> Path:
    """interactions.csv + items.csv under ``root`` (text only; no images)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "domain", "title", "categories"])
        for d, (n, _) in DOMAINS.items():
            for i in range(n):
                w.writerow([f"{d}-{i}", d, f"{WORDS[i % 10]} {d} {i}", f"{d}|{WORDS[i % 10]}"])
    with open(root / "interactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "domain", "timestamp"])
        for u in range(USERS):
            for d, (n, per_user) in DOMAINS.items():
                for k, i in enumerate(rng.choice(n, per_user, replace=False)):
                    w.writerow([f"u{u}", f"{d}-{i}", d, 1_600_000_000 + 100 * u + k])
    return root
