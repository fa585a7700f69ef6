"""A tiny hand-built two-domain split with topic-structured content features.

Used by the model tests where the synthetic catalogue would be slower than needed. Items
carry a "topic" that both drives which users pick them and shows in their text vector, so
content is predictive; the same user has the same topic in both domains, so overlap
carries signal.
"""

from __future__ import annotations

import numpy as np

from model.data.split import DomainSplit, InductiveSplit, SplitConfig
from model.encoders.base import ItemFeatures, ModalityFeatures


def toy_split(
    n_users: int = 200, n_items: dict[str, int] | None = None, n_topics: int = 5, seed: int = 0
) -> tuple[InductiveSplit, ItemFeatures]:
    rng = np.random.default_rng(seed)
    n_items = n_items or {"a": 80, "b": 60}
    user_topic = rng.integers(0, n_topics, n_users)
    domains, ids, topics = {}, [], []
    for name, ni in n_items.items():
        it = rng.integers(0, n_topics, ni)
        pairs = []
        for u in range(n_users):
            same = np.flatnonzero(it == user_topic[u])
            other = np.flatnonzero(it != user_topic[u])
            k = int(rng.integers(5, 12))
            pick = list(rng.choice(same, min(k, len(same)), replace=False)) + list(
                rng.choice(other, 1)
            )
            pairs += [(u, i) for i in pick]
        arr = np.array(pairs, dtype=np.int64)
        rng.shuffle(arr)
        n = len(arr)
        tr, va, te = arr[: int(0.7 * n)], arr[int(0.7 * n) : int(0.8 * n)], arr[int(0.8 * n) :]
        domains[name] = DomainSplit(
            name,
            [f"u{u}" for u in range(n_users)],
            [f"{name}{i}" for i in range(ni)],
            int(0.8 * n_users),
            int(0.8 * ni),
            tr,
            va,
            te,
        )
        ids += domains[name].item_ids
        topics.append(it)
    t = np.concatenate(topics)
    text = np.eye(16, dtype=np.float32)[t] + 0.2 * rng.standard_normal((len(ids), 16)).astype(
        np.float32
    )
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image = rng.standard_normal((len(ids), 8)).astype(np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    img_mask = rng.random(len(ids)) > 0.3
    image[~img_mask] = 0
    feats = ItemFeatures(
        ids,
        {
            "text": ModalityFeatures("toy-text", text, np.ones(len(ids), dtype=bool)),
            "image": ModalityFeatures("toy-image", image, img_mask),
        },
    )
    return InductiveSplit(SplitConfig(), domains), feats
