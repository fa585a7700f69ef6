"""The embedded synthetic multi-domain catalogue (the demo's default data and test fixture).

It writes a dataset folder in exactly the project's CSV format (see
../shared/datasets/README.md) plus PNG images and a ``synth.json`` recording the config:

- ``interactions.csv``: ``user_id,item_id,domain,timestamp``
- ``items.csv``: ``item_id,domain,title,categories,description,image``
  (``image`` = ``images/<item_id>.png`` relative to the folder, empty when absent)

Why a generative model rather than random rows: the demo and the tests must be able to
show that each MICRec component helps, so every component needs a signal it can find.

Generative story (all draws from one seed; independent streams per stage):

1. **Styles** (shared across domains): ``n_styles`` latent aesthetics ("rustic",
   "modern", ...). A style shows in an item's adjectives and in its image palette, in
   every domain alike: this is what makes text/image features transfer across domains.
2. **Topics** (per domain): ``topics_per_domain`` product families ("Kitchen >
   Drinkware"), each with nouns/materials (title words), a category, and an image shape
   family + texture. Each topic has a *primary style* (a per-domain permutation links the
   topics of different domains through the styles); an item takes its topic's primary
   style with probability ``style_purity``, else a random one. A share
   ``hidden_style_share`` of items use neutral words ("premium", ...), so their style is
   visible only in the image (the text is informative but imperfect).
3. **Users** have a taste over styles (Dirichlet, peaked), shared by all their domains up
   to multiplicative per-domain noise, so an overlapping user's taste in one domain
   predicts the other (cross-domain signal); a per-domain taste over topics (content
   signal that does not transfer); and a per-domain collaborative vector that meets a
   hidden per-item vector (signal that only IDs / the graph can learn).
4. **Choices**: user u picks n items in domain d without replacement (Gumbel top-n) with
   utility ``style + topic + collaborative + log popularity``; log popularity is a
   Zipf-like term over a random item rank plus lognormal noise, so item degrees are
   long-tailed at both ends (hits and a real low-degree tail). n is drawn from a lognormal
   activity level (few heavy users, many light ones), at least ``min_per_domain`` so that
   users survive the default 5-core filter.

Images are small PNGs rendered with PIL (palette from the style, shape family and texture
from the topic, per-item jitter and pixel noise). Output is byte-for-byte deterministic
for a given config (same numpy/Pillow versions).

This module writes the folder; the parts are ``synth_config.py`` (:class:`SynthConfig`),
``synth_vocab.py`` (styles and topic words), ``synth_simulate.py`` (the draws, steps 1-4)
and ``synth_images.py`` (the PNGs).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL

from model.data.synth_config import SynthConfig, SynthConfigError
from model.data.synth_images import render_image
from model.data.synth_simulate import make_domain, simulate
from model.data.synth_vocab import STYLES

__all__ = ["FORMAT_VERSION", "SynthConfig", "SynthConfigError", "write_synthetic_catalogue"]

FORMAT_VERSION = 1
"""Version of the synthetic generator recorded in ``synth.json``; bump when output changes."""

# spawn_key prefix of the per-image seeds (0 and 1 are the catalogue and simulation streams).
_IMAGE_STREAM = 2


def write_synthetic_catalogue(
    out_dir: Path, config: SynthConfig, *, workers: int | None = None
) -> Path:
    """Generate the catalogue described by ``config`` into ``out_dir``; return ``out_dir``.

    ``out_dir`` must be absent, empty, or a previous synthetic catalogue (it has a
    ``synth.json``); in the last case its files and ``images/`` are replaced.
    ``workers`` = image-rendering threads (default 2, or 1 on one core); the output does
    not depend on it.
    """
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise SynthConfigError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / "synth.json").is_file():
            raise SynthConfigError(
                f"{out_dir} is not empty and holds no synth.json; refusing to overwrite it"
            )
        if (out_dir / "images").is_dir():
            shutil.rmtree(out_dir / "images")  # stale images of a previous, larger catalogue
    out_dir.mkdir(parents=True, exist_ok=True)

    # Independent streams: e.g. turning images off does not change the interactions.
    s_cat, s_sim = np.random.SeedSequence(config.seed).spawn(2)
    cat_rng, sim_rng = np.random.default_rng(s_cat), np.random.default_rng(s_sim)
    cats = [make_domain(config, d, cat_rng) for d in range(len(config.domains))]
    inter = simulate(config, cats, sim_rng)

    # items.csv
    with open(out_dir / "items.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["item_id", "domain", "title", "categories", "description", "image"])
        for cat in cats:
            for i, item_id in enumerate(cat.item_ids):
                image = f"images/{item_id}.png" if cat.has_image[i] else ""
                row = [item_id, cat.name, cat.titles[i], cat.categories[i], cat.descriptions[i]]
                w.writerow([*row, image])

    # Images. Each has its own seed (config seed, domain, item), so the bytes do not depend
    # on rendering order and the work can be spread over threads: PNG encoding and file I/O
    # release the GIL. That helps on an idle multi-core machine, not on a saturated one.
    if config.images:
        (out_dir / "images").mkdir(exist_ok=True)
        jobs = [
            (d, i)
            for d, cat in enumerate(cats)
            for i in range(len(cat.item_ids))
            if cat.has_image[i]
        ]

        def render(job: tuple[int, int]) -> None:
            d, i = job
            cat = cats[d]
            seq = np.random.SeedSequence(config.seed, spawn_key=(_IMAGE_STREAM, d, i))
            style = STYLES[int(cat.style[i])]
            img = render_image(
                config.image_size, style, int(cat.topic[i]), np.random.default_rng(seq)
            )
            img.save(out_dir / "images" / f"{cat.item_ids[i]}.png", format="PNG")

        n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)
        if n_workers <= 1:
            for job in jobs:
                render(job)
        else:
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                list(pool.map(render, jobs, chunksize=64))  # list(): re-raise worker errors

    # interactions.csv, sorted by user then time so each history reads chronologically.
    width = max(5, len(str(config.users - 1)))
    user_ids = [f"u{u:0{width}d}" for u in range(config.users)]
    order = np.lexsort((inter.domain, inter.item, inter.timestamp, inter.user))
    with open(out_dir / "interactions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["user_id", "item_id", "domain", "timestamp"])
        for r in order:
            d = int(inter.domain[r])
            w.writerow(
                [
                    user_ids[inter.user[r]],
                    cats[d].item_ids[inter.item[r]],
                    cats[d].name,
                    int(inter.timestamp[r]),
                ]
            )

    # synth.json: config (to regenerate) plus summary counts (to sanity-check at a glance).
    user_domain = np.unique(inter.user * len(cats) + inter.domain)  # distinct (user, domain)
    n_dom_per_user = np.bincount(user_domain // len(cats), minlength=config.users)
    summary = {
        "format_version": FORMAT_VERSION,
        # Byte-for-byte determinism holds for the same versions of these two libraries.
        "generator": {"numpy": np.__version__, "pillow": PIL.__version__},
        "config": config.to_dict(),
        "stats": {
            "users": config.users,
            "items": sum(len(c.item_ids) for c in cats),
            "interactions": len(inter.user),
            "interactions_per_domain": {
                c.name: int((inter.domain == d).sum()) for d, c in enumerate(cats)
            },
            "overlapping_users": int((n_dom_per_user >= 2).sum()),
            "items_without_image": int(sum((~c.has_image).sum() for c in cats)),
            "items_without_text": int(sum((~c.has_text).sum() for c in cats)),
            "items_without_content": int(sum((~c.has_text & ~c.has_image).sum() for c in cats)),
        },
        # Ground truth for analysis and tests (never an input to a model).
        "latent": {c.name: {"topic": c.topic.tolist(), "style": c.style.tolist()} for c in cats},
    }
    (out_dir / "synth.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return out_dir
