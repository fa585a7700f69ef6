"""The synthetic catalogue's draws: each domain's items (topic, style, popularity, hidden
collaborative vector, missing modalities, text) and the users' choices among them (steps
1-4 of the generative story in :mod:`model.data.synth`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model.data.synth_config import SynthConfig
from model.data.synth_vocab import NEUTRAL_ADJECTIVES, NEUTRAL_PHRASE, STYLES, domain_topics


@dataclass
class DomainCatalogue:
    """Latent and visible attributes of one domain's items (index = local item id)."""

    name: str
    item_ids: list[str]
    topic: np.ndarray  # [n] int
    style: np.ndarray  # [n] int
    hidden_style: np.ndarray  # [n] bool
    log_pop: np.ndarray  # [n] float
    collab: np.ndarray  # [n, collab_dim]
    has_text: np.ndarray  # [n] bool
    has_image: np.ndarray  # [n] bool
    titles: list[str]
    categories: list[str]
    descriptions: list[str]


def _exact_mask(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """A boolean mask with exactly round(share * n) True entries at random positions."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: round(share * n)]] = True
    return mask


def make_domain(cfg: SynthConfig, d: int, rng: np.random.Generator) -> DomainCatalogue:
    name = cfg.domains[d]
    n, k_topics = cfg.items_per_domain, cfg.topics_per_domain
    topics = domain_topics(name, k_topics)
    # Links topics across domains: topic k of this domain mostly carries style primary[k].
    primary = rng.permutation(max(cfg.n_styles, k_topics))[:k_topics] % cfg.n_styles
    topic_share = rng.dirichlet(np.full(k_topics, 5.0))  # uneven but no empty topic
    topic = rng.choice(k_topics, size=n, p=topic_share)
    own = rng.random(n) < cfg.style_purity
    style = np.where(own, primary[topic], rng.integers(0, cfg.n_styles, n))
    hidden = _exact_mask(rng, n, cfg.hidden_style_share)
    rank = rng.permutation(n)
    log_pop = -cfg.zipf_exponent * np.log1p(rank) + cfg.popularity_sigma * rng.normal(size=n)
    collab = rng.normal(size=(n, cfg.collab_dim))

    # Missing modalities: disjoint exact-size groups (none / text only / image only).
    order = rng.permutation(n)
    n_none = round(cfg.no_content_share * n)
    n_no_img = round(cfg.no_image_share * n)
    n_no_txt = round(cfg.no_text_share * n)
    has_text = np.ones(n, dtype=bool)
    has_image = np.full(n, cfg.images, dtype=bool)
    has_text[order[:n_none]] = False
    has_image[order[:n_none]] = False
    has_image[order[n_none : n_none + n_no_img]] = False
    has_text[order[n_none + n_no_img : n_none + n_no_img + n_no_txt]] = False

    width = max(4, len(str(n - 1)))
    item_ids = [f"{name}_{i:0{width}d}" for i in range(n)]
    pick = rng.integers(0, 1 << 30, size=(n, 5))  # word choices, drawn even when unused
    titles, cats, descs = [], [], []
    for i in range(n):
        if not has_text[i]:
            titles.append("")
            cats.append("")
            descs.append("")
            continue
        tp = topics[topic[i]]
        st = STYLES[style[i]]
        mod = tp.modifiers[pick[i, 0] % len(tp.modifiers)]
        noun = tp.nouns[pick[i, 1] % len(tp.nouns)]
        if hidden[i]:
            adj = NEUTRAL_ADJECTIVES[pick[i, 2] % len(NEUTRAL_ADJECTIVES)]
            adj2 = NEUTRAL_ADJECTIVES[pick[i, 3] % len(NEUTRAL_ADJECTIVES)]
            phrase = NEUTRAL_PHRASE
        else:
            adj = st.adjectives[pick[i, 2] % len(st.adjectives)]
            adj2 = st.adjectives[pick[i, 3] % len(st.adjectives)]
            phrase = st.phrase
        titles.append(f"{adj} {mod} {noun}")
        cats.append(f"{name.capitalize()} > {tp.category}")
        pack = ("", " (pack of 2)", " (set of 4)", " (large)")[pick[i, 4] % 4]
        descs.append(f"{adj2.capitalize()} {noun} in {mod}{pack}. {phrase}.")
    return DomainCatalogue(
        name,
        item_ids,
        topic,
        style,
        hidden,
        log_pop,
        collab,
        has_text,
        has_image,
        titles,
        cats,
        descs,
    )


def _assign_domains(cfg: SynthConfig, rng: np.random.Generator) -> list[list[int]]:
    """Each user's active domains; exactly round(overlap * users) users get 2+ domains."""
    n_dom, n_users = len(cfg.domains), cfg.users
    multi = _exact_mask(rng, n_users, cfg.overlap if n_dom > 1 else 0.0)
    out: list[list[int]] = []
    for u in range(n_users):
        perm = [int(x) for x in rng.permutation(n_dom)]
        if multi[u]:
            m = 2
            while m < n_dom and rng.random() < cfg.extra_domain_prob:
                m += 1
            out.append(sorted(perm[:m]))
        else:
            out.append([perm[0]])
    return out


@dataclass
class Interactions:
    user: np.ndarray  # [n] int user index
    domain: np.ndarray  # [n] int domain index
    item: np.ndarray  # [n] int local item index
    timestamp: np.ndarray  # [n] int64


def simulate(
    cfg: SynthConfig, cats: list[DomainCatalogue], rng: np.random.Generator
) -> Interactions:
    n_users, n_styles = cfg.users, cfg.n_styles
    user_domains = _assign_domains(cfg, rng)
    taste = rng.dirichlet(np.full(n_styles, cfg.style_concentration), size=n_users)
    # Lognormal activity normalised to mean 1: few heavy users, many light ones.
    activity = rng.lognormal(0.0, cfg.activity_sigma, n_users)
    activity /= math.exp(cfg.activity_sigma**2 / 2)
    density = cfg.domain_density or [1.0] * len(cfg.domains)
    cap = cfg.cap_per_domain()
    span = cfg.time_span_days * 86400

    users_l, doms_l, items_l, ts_l = [], [], [], []
    for d, cat in enumerate(cats):
        members = np.array([u for u in range(n_users) if d in user_domains[u]], dtype=np.int64)
        m = len(members)
        if m == 0:
            continue
        # Per-domain style taste = shared taste x lognormal noise: correlated, not equal.
        noise = np.exp(rng.normal(0.0, cfg.domain_taste_noise, (m, n_styles)))
        t_d = taste[members] * noise
        t_d /= t_d.sum(1, keepdims=True)
        topic_taste = rng.dirichlet(np.full(cfg.topics_per_domain, cfg.topic_concentration), m)
        u_collab = rng.normal(size=(m, cfg.collab_dim))
        extra = cfg.mean_per_domain - cfg.min_per_domain
        counts = cfg.min_per_domain + rng.poisson(activity[members] * density[d] * extra)
        counts = np.minimum(counts, cap)

        # Utility, scaled so a uniform taste contributes weight * 1 on average.
        util = (
            cfg.style_weight * n_styles * t_d[:, cat.style]
            + cfg.topic_weight * cfg.topics_per_domain * topic_taste[:, cat.topic]
            # einsum, not BLAS matmul: its summation order never depends on thread count.
            + cfg.collab_weight
            * np.einsum("uk,ik->ui", u_collab, cat.collab)
            / math.sqrt(cfg.collab_dim)
            + cat.log_pop[None, :]
        )
        # Gumbel top-n = sampling n items without replacement with p ~ exp(utility).
        util += rng.gumbel(size=util.shape)
        order = np.argsort(-util, axis=1, kind="stable")
        for row, u in enumerate(members):
            chosen = order[row, : counts[row]]
            users_l.append(np.full(len(chosen), u))
            doms_l.append(np.full(len(chosen), d))
            items_l.append(chosen)
            ts_l.append(cfg.start_time + rng.integers(0, span, len(chosen)))
    return Interactions(
        user=np.concatenate(users_l),
        domain=np.concatenate(doms_l),
        item=np.concatenate(items_l),
        timestamp=np.concatenate(ts_l).astype(np.int64),
    )
