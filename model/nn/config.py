"""Typed model configuration. Every field is documented with its default.

Ablations of METHOD.md section 2 are flags of this one config (see ``ABLATIONS``), never
copies of the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

CROSS_DOMAIN_RULES = ("content", "aligned", "content+aligned", "bridge")


@dataclass
class MICRecConfig:
    dim: int = 64
    """Embedding size d."""
    n_layers: int = 3
    """LightGCN propagation layers L (final z = mean of layers 0..L)."""
    template_ratio: float = 1.0
    """Share of training users/items kept as templates (ranked by sum of 1/deg of neighbours)."""
    init_std: float = 0.1
    """Std of the N(0, std^2) init of the template table."""
    drop_interaction: float = 0.1
    """Drop probability of template-incidence non-zeros during training (INMO's p)."""
    alpha_init: float = 1.0
    """Normalisation exponent alpha at the start (layer-0 scale c^(alpha/2 - 1))."""
    alpha_decay: float = 0.99
    """alpha is multiplied by this after every epoch (1.0 disables annealing)."""
    self_enhanced_weight: float = 0.01
    """Weight of the self-enhanced BPR loss on template vectors (0 disables it)."""
    l2_weight: float = 0.0
    """Optional L2 on the batch's final representations."""
    modalities: tuple[str, ...] = ("text", "image")
    """Content modalities used (subset of those with features; () disables content)."""
    user_content: bool = True
    """Add the user content preference gamma * p_u to users' layer 0 (METHOD.md 2)."""
    gamma_init: float = 1.0
    """Initial value of the learnable content weight gamma (METHOD.md). Measured trade-off
    (docs/results/quality.md, finding 4): 0 lets a sparse domain keep its collaborative
    signal (office kept at 10 %: office NDCG@20 1.62 at 1 vs 2.81 at 0, INMO 3.08) but
    weakens content-only items (arts-office cold items 5.4 -> 4.4; the demo's registered
    text-only items reach the top 20 of their topic in 9 instead of 18 of 19 topics).
    Default 1 for cold start; set 0 when the target domain is sparse."""
    gamma_per_domain: bool = False
    """One learnable gamma per domain instead of one shared by all domains."""
    item_content_weight: str = "constant"
    """How an item's content enters its layer-0 vector: "constant" is METHOD.md's
    e_i + gamma * h_i; "degree" counts the content as one more neighbour,
    e_i + gamma * (|N(i)| + 1)^(alpha/2 - 1) * h_i, as the user side already does, so the
    content fades as an item collects interactions (a cold item is unchanged)."""
    cold_item_weight: float = 0.0
    """Weight of the content-only ranking loss: a BPR loss on the batch's items represented
    as a cold item is served (item token + gamma h_i, no interactions), so the content
    projection learns to rank without the collaborative part (the idea of DropoutNet,
    Volkovs et al. 2017, and Heater, Zhu et al. 2020). 0 disables it."""
    cross_domain_weight: float = 0.1
    """lambda_CD of the symmetric InfoNCE over overlapping users (0 disables it)."""
    cross_domain_batch: int = 512
    """Overlapping users per contrastive batch."""
    temperature: float = 0.2
    """InfoNCE temperature tau."""
    transfer_weight: float = 0.0
    """Weight of the hidden-history transfer loss (0 disables it): for overlapping users
    (not the pseudo-cold validation users), their vector in domain A, built from their A
    history alone, goes through a trained map f_{A->B} (model.nn.modules.TransferMap) and
    has to rank one of their B training items above a random B item (B's BPR loss), in
    both directions. The user's B history is hidden from the query, as DropoutNet hides an
    item's interactions, so training itself practises serving users new to a domain.
    Off: no consistent gain on the search's chosen trials (docs/results/ablation/transfer.md)."""
    cross_domain_rule: str = "content+aligned"
    """How a user with no history in a domain is served: "content" (content preference of
    their other-domain items), "aligned" (their other-domain representation), both
    summed, or "bridge" (their other-domain representation through the trained
    cross-domain mapping, model.nn.bridge). The blend fit chooses among the configured
    rule and "bridge" on pseudo-cold validation users and records its choice here."""

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        if self.cross_domain_rule not in CROSS_DOMAIN_RULES:
            raise ValueError(
                f"cross_domain_rule must be {'|'.join(CROSS_DOMAIN_RULES)}, "
                f"got {self.cross_domain_rule!r}"
            )
        if self.item_content_weight not in ("constant", "degree"):
            raise ValueError(
                f"item_content_weight must be constant|degree, got {self.item_content_weight!r}"
            )
        if not 0 < self.template_ratio <= 1:
            raise ValueError("template_ratio must be in (0, 1]")
        if not 0 <= self.drop_interaction < 1:
            raise ValueError("drop_interaction must be in [0, 1)")
        if self.cold_item_weight < 0:
            raise ValueError(f"cold_item_weight must be >= 0, got {self.cold_item_weight}")
        _at_least(self, dim=1, n_layers=0, cross_domain_batch=1)
        _at_least(self, init_std=0.0, self_enhanced_weight=0.0, l2_weight=0.0)
        _at_least(self, cross_domain_weight=0.0, transfer_weight=0.0)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.alpha_decay <= 1:
            raise ValueError(f"alpha_decay must be in (0, 1], got {self.alpha_decay}")
        unknown = sorted(set(self.modalities) - {"text", "image"})
        if unknown:
            raise ValueError(f"modalities {unknown} unknown; choose from text, image")

    @property
    def uses_content(self) -> bool:
        return len(self.modalities) > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MICRecConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def ablate(self, name: str) -> MICRecConfig:
        """The config of a named ablation (see ``ABLATIONS``)."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        return replace(self, **ABLATIONS[name])


ABLATIONS: dict[str, dict[str, Any]] = {
    "micrec": {},
    "inmo": {"modalities": (), "cross_domain_weight": 0.0},
    "no-modality": {"modalities": ()},
    "no-cd": {"cross_domain_weight": 0.0},
    "text-only": {"modalities": ("text",)},
    "image-only": {"modalities": ("image",)},
    "no-self-enhanced": {"self_enhanced_weight": 0.0},
    "no-annealing": {"alpha_decay": 1.0},
    # variants measured against the sparse-domain regression (docs/results/quality.md)
    "no-user-content": {"user_content": False},
    "gamma-init-0": {"gamma_init": 0.0},
    "content-degree": {"item_content_weight": "degree"},
    "gamma-per-domain": {"gamma_per_domain": True},
    "content-degree+gamma-per-domain": {"item_content_weight": "degree", "gamma_per_domain": True},
}


@dataclass
class TrainConfig:
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 2048
    """BPR triples per domain per step."""
    epochs: int = 200
    """Maximum number of epochs."""
    patience: int = 20
    """Early stopping: epochs without validation NDCG@20 improvement (INMO used 50)."""
    eval_every: int = 1
    """Validate every this many epochs."""
    seed: int = 0
    """Seed of init, sampling and drop-interaction."""
    device: str = "cpu"
    """"cpu", "cuda" or "cuda:N"."""
    val_users: int = 0
    """Validate on at most this many users per domain (0 = all)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _at_least(self, batch_size=1, epochs=1, patience=0, eval_every=1, val_users=0)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class BlendConfig:
    """The served score blend (model.nn.blend), fitted on validation after training."""

    enabled: bool = True
    """Fit and serve the blend; false serves the model score alone."""
    trials: int = 30
    """Optuna trials per domain and user type (the three single-part corners included)."""
    content_dim: int = 384
    """r: PCA dimensions of the content part (0 disables the content part). 384 (MiniLM's
    full width) over 128 on validation with both maps and the content decay, 3 seeds
    (docs/results/ablation/content-dim.md); it makes every serving vector 64 + 1 + 384
    numbers instead of 193, so a catalogue past ~1e6 items per domain may prefer 128
    (the index's memory and scan time grow with it: same page)."""
    max_users: int = 500
    """Validation users per slice in the fit (a seeded sample)."""
    main_tolerance: float = 0.02
    """Share of the main slice's validation NDCG@20 (``all``; cross-domain cold users for
    them) the blend may give up for the other slices (model.blendfit)."""
    cold_prior: bool = False
    """Fit the prior of items nobody bought in training (held-out and registered items) on
    validation with the inductive users' weights, in [-1, 1]; false: 0, the least popular
    item's prior (model.nn.blend)."""
    content_decay: bool = True
    """Fit the exponent d in [0, 1] of the content rows' decay with the item's training
    degree, (1 + deg)^-d (model.nn.blend); false: 0, every content row at full weight.
    On by default: chosen on validation on every amazon-arts-office fit measured
    (docs/results/ablation/item-terms.md); a dataset without content is unaffected."""
    profile_other: tuple[float, ...] = (0.0, 0.25, 0.5)
    """Weights of a user's content profile from their other-domain items mixed into the
    profile of a user with history in the domain (model.nn.blend: ``p_u = norm(p_own +
    w p_other)``), tried per domain with the inductive blend on validation; 0 is always
    tried and wins unless another is strictly better. ``[0.0]``: off, one fit fewer per
    domain."""
    copurchase: bool = True
    """Fit the cross-domain co-purchase boost for users new to a domain (model.nn.copurchase:
    what the anchors who bought the user's other-domain items bought here; the service
    re-ranks the index's answer with it). Its weight is fitted on every pseudo-cold
    validation user and kept only where it raises their validation NDCG@20; on by
    default: it did not lower users new to a domain on test in any fit measured
    (docs/results/ablation/copurchase.md)."""
    copurchase_warm: bool = True
    """With ``copurchase``: also fit the boost for users with history in the domain (from
    their items in the other domains; the same transitions), its own weight, kept only
    where it raises the validation objective of these users (``all`` and the item slices
    the blend judges them on; a slice already below its best single part is charged for
    any loss: model.copurchasefit.fit_warm_copurchase)."""
    copurchase_pop: tuple[float, ...] = (0.0, 0.5)
    """Popularity exponents of the transitions tried per domain for users new to it
    (model.nn.copurchase ``CoPurchase.pop``: a target item's shares divided by its
    buyers^pop), chosen with the boost's weight on the pseudo-cold validation users; the
    first of equals wins, so list 0 first. ``[0.0]``: no discount, one fit fewer."""
    copurchase_max_items: int = 0
    """A user's boost keeps its largest this many items (0: all): bounds the service's
    re-ranking cost for users with long histories in other domains; the evaluation and
    the weight fit cut the same way."""
    copurchase_top: int = 200
    """Co-purchased target items kept per source item (the largest shares): bounds the
    bundle's co-purchase file and a boost's size however large the catalogues."""
    rule_one_se: bool = True
    """Users new to a domain are served by the trained cross-domain map (rule ``bridge``)
    unless the configured rule beats it on the pseudo-cold validation users by more than
    one standard error of the paired per-user difference (model.rulechoice); false: the
    higher validation mean wins, however small the difference."""
    seed: int = 0
    """Seed of the user sample and of the TPE sampler."""

    def __post_init__(self) -> None:
        _at_least(
            self, trials=3, content_dim=0, max_users=1, copurchase_top=1, copurchase_max_items=0
        )
        self.copurchase_pop = tuple(float(p) for p in self.copurchase_pop)
        if not self.copurchase_pop or not all(0.0 <= p <= 2.0 for p in self.copurchase_pop):
            raise ValueError(
                f"copurchase_pop must list exponents in [0, 2], got {list(self.copurchase_pop)}"
            )
        self.profile_other = tuple(float(p) for p in self.profile_other)
        if not self.profile_other or not all(0.0 <= p <= 4.0 for p in self.profile_other):
            raise ValueError(
                f"profile_other must list weights in [0, 4], got {list(self.profile_other)}"
            )
        if not 0.0 <= self.main_tolerance < 1.0:
            raise ValueError(f"main_tolerance must be in [0, 1), got {self.main_tolerance}")


@dataclass
class BridgeConfig:
    """The cross-domain mapping (model.nn.bridge, model.bridgefit), trained after the
    backbone on users shared by two domains. Every key is documented with its default."""

    enabled: bool = True
    """Train the mapping; false leaves users new to a domain to the configured rule."""
    hidden: int = 512
    """Width of the mapping's hidden layer (0 = a linear map, EMCDR's simplest form).
    Chosen with ``lr`` on validation (docs/results/quality.md, "Cross-domain map")."""
    epochs: int = 40
    """Passes over the anchor users at most (early stopping on a tenth of them)."""
    patience: int = 5
    """Epochs without a better held-back loss before stopping."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_users: int = 256
    """Anchor users per step."""
    mse_weight: float = 0.0
    """Weight of EMCDR's regression of the user's own target-domain vector, added to the
    ranking loss (0 = ranking only, as task-oriented mappings train)."""
    with_prior: bool = False
    """Train with the served item prior inside the loss (a learned weight), so the map
    learns what popularity does not explain (the served blend adds the prior itself).
    Measured no better on validation, so off."""
    weight_decay: float = 1e-4
    """Adam weight decay."""
    content: bool = False
    """The map also reads the user's content profile in the other domain (the blend's
    content rows, so it needs ``[blend]`` with content; without it the map reads the
    collaborative vector alone)."""
    ensemble: int = 1
    """Maps per domain pair, each from its own initialisation; a user's vector is the mean
    of their unit outputs (1 = one map)."""
    personal: int = 0
    """Personalise the map as PTUPCDR does: the hidden width of the meta-network that
    turns an attention pooling of the user's items in the other domain into their own
    d x d matrix (0 = one shared map for every user)."""
    seed: int = 0
    """Seed of the initialisation, batch order and held-back users."""

    def __post_init__(self) -> None:
        _at_least(self, hidden=0, personal=0, ensemble=1, epochs=1, patience=1, batch_users=1)
        _at_least(self, mse_weight=0.0, weight_decay=0.0)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class ItemMapConfig:
    """The content -> collaborative item map (model.nn.itemmap, model.itemmapfit), trained
    after the backbone on warm items. Every key is documented with its default."""

    enabled: bool = True
    """Train the map (needs content features); false leaves cold items to the graph's
    layer-0 vector."""
    hidden: int = 256
    """Width of the map's hidden layer."""
    epochs: int = 30
    """Passes over the training interactions at most (early stopping on a tenth of the
    warm items)."""
    patience: int = 4
    """Epochs without a better held-back loss before stopping."""
    lr: float = 2e-3
    """Adam learning rate."""
    batch_pairs: int = 1024
    """(user, item) training pairs per step; the batch's other items are the negatives."""
    distill_weight: float = 1.0
    """Weight of the squared distance to the warm item's own vector (the ranking loss
    has weight 1)."""
    weight_decay: float = 1e-4
    """Adam weight decay."""
    seed: int = 0
    """Seed of the initialisation, batch order and held-back items."""
    low_degree_k: tuple[float, ...] = (0.0,)
    """Pseudo-counts k tried for items with few interactions, which are served
    (d z_i + k m_i) / (k + d) of their collaborative vector z_i and item-map vector m_i
    (degree d); the blend fit keeps the k with the best validation objective of users
    with history, 0 (no mix) unless another is better. (0,) = no mix, the default: with
    (0, 1, 3, 10) it lifted items with 1-5 interactions on some domains but cost users new
    to a domain in most fits, a slice the choice does not see (docs/results/ablation/lowdeg.md)."""

    def __post_init__(self) -> None:
        self.low_degree_k = tuple(float(k) for k in self.low_degree_k)
        if not self.low_degree_k or any(not 0 <= k < 1e6 for k in self.low_degree_k):
            raise ValueError(f"low_degree_k must be values in [0, 1e6), got {self.low_degree_k}")
        _at_least(self, hidden=1, epochs=1, patience=1, batch_pairs=2)
        _at_least(self, distill_weight=0.0, weight_decay=0.0)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class TuneConfig:
    """The search budget of ``micrec train``. Every key is documented with its default."""

    trials: int = 8
    """Trainings tried at most (0 or 1 = train the configuration as given, no search).
    The first ones are the designed trials (model.tuning.designed_trials: up to 5)."""
    budget_trainings: float = 8.0
    """No new trial starts once the search has taken this many times its first trial."""
    timeout_s: float = 3600.0
    """No new trial starts after this many seconds (the running one finishes)."""
    seed: int | None = None
    """Seed of the TPE sampler; None = the run's ``[train] seed``."""
    blend_trials: int = 20
    """Blend-fit trials per domain and user type inside each tuning trial (the final
    model's blend is refitted with [blend] trials)."""
    baseline_floor: float = 0.0
    """A trial's objective loses the share by which any of its validation slices falls
    below this multiple of the best baseline there (most popular, content kNN;
    model.tuning.search_objective). 0 (the default) = the plain mean of the slices: at
    1.0 it never bound on amazon-arts-office and moved sparse office's choice without a
    gain on test (docs/results/quality.md, 2026-12-06 session 9)."""

    def __post_init__(self) -> None:
        _at_least(self, trials=0, blend_trials=3, budget_trainings=1.0, baseline_floor=0.0)
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


def _at_least(config: object, **bounds: float) -> None:
    """Raise ValueError naming the first field of ``config`` below its bound."""
    for name, low in bounds.items():
        value = getattr(config, name)
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
