"""The synthetic catalogue's config (:class:`SynthConfig`, every knob with its default)
and its validation. The generative story the knobs control is in :mod:`model.data.synth`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from model.data.synth_vocab import STYLES

_DOMAIN_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class SynthConfigError(ValueError):
    """A synthetic-catalogue config is invalid (unknown key, bad value)."""


@dataclass
class SynthConfig:
    """Every knob of the synthetic catalogue. Defaults give the demo catalogue.

    Build from a dict with :meth:`from_dict` (unknown keys are rejected). All shares are
    fractions in [0, 1].
    """

    seed: int = 0
    """Master seed; the output is a pure function of the whole config."""
    domains: list[str] = field(default_factory=lambda: ["food", "kitchen", "office"])
    """Domain names (lower-case identifiers). food/kitchen/office/arts have hand-written
    vocabularies; any other name gets deterministic pseudo-words."""
    users: int = 2000
    """Number of users."""
    items_per_domain: int = 600
    """Number of items in every domain."""
    topics_per_domain: int = 8
    """Latent topics (product families) per domain."""
    n_styles: int = 8
    """Shared cross-domain latent styles (at most 8: each has words and a palette)."""
    overlap: float = 0.5
    """Share of users active in 2+ domains (exact, up to rounding); must be 0 with 1 domain."""
    extra_domain_prob: float = 0.3
    """An overlapping user joins each further domain beyond 2 with this probability."""
    min_per_domain: int = 5
    """Minimum interactions of a user in each of their domains (survives a 5-core)."""
    mean_per_domain: float = 12.0
    """Mean interactions of a user in one domain before the cap (activity x density)."""
    max_per_domain: int = 120
    """Cap on a user's interactions in one domain (also at most a third of the items)."""
    activity_sigma: float = 0.9
    """Lognormal sigma of user activity: larger = heavier heavy users, more light ones."""
    domain_density: list[float] = field(default_factory=list)
    """Per-domain multiplier on the mean above (empty = 1.0 everywhere); e.g. make one
    domain sparse to mimic the data-scarce target domain."""
    style_weight: float = 1.8
    """Utility weight of the shared style taste (content-visible, transfers across domains)."""
    topic_weight: float = 0.7
    """Utility weight of the per-domain topic taste (content-visible, domain-specific)."""
    collab_weight: float = 2.0
    """Utility weight of the hidden user x item collaborative term (only IDs can learn it)."""
    collab_dim: int = 3
    """Dimension of the hidden collaborative vectors. Low rank on purpose: with ~12
    interactions per user and domain, a strong low-rank term is what co-occurrence (and a
    graph model) can actually recover; 8+ dims at this weight are mostly noise."""
    zipf_exponent: float = 0.3
    """Zipf-like head of the popularity utility: ``-zipf_exponent * log(1 + rank)`` over a
    random item rank."""
    popularity_sigma: float = 1.0
    """Lognormal part of the popularity utility, ``popularity_sigma * N(0, 1)``: gives the
    low-degree tail that a pure Zipf term (flat in its tail) lacks."""
    style_concentration: float = 0.3
    """Dirichlet concentration of user style taste (small = peaked on 1-2 styles)."""
    topic_concentration: float = 0.5
    """Dirichlet concentration of a user's per-domain topic taste."""
    domain_taste_noise: float = 0.3
    """Sigma of the multiplicative lognormal noise that makes a user's style taste differ
    per domain (0 = identical taste in every domain)."""
    style_purity: float = 0.75
    """Probability that an item takes its topic's primary style."""
    hidden_style_share: float = 0.15
    """Share of items described with neutral words (style only visible in the image)."""
    no_image_share: float = 0.1
    """Share of items (per domain) with no image (text only)."""
    no_text_share: float = 0.1
    """Share of items (per domain) with empty title, categories and description (image only)."""
    no_content_share: float = 0.03
    """Share of items (per domain) with neither text nor image (pure collaborative)."""
    images: bool = True
    """Render PNG images; False leaves every ``image`` empty (much faster, for tests)."""
    image_size: int = 64
    """Side of the square PNG images in pixels."""
    start_time: int = 1_600_000_000
    """Unix time of the earliest possible interaction."""
    time_span_days: int = 365
    """Interactions are spread over this many days."""

    def __post_init__(self) -> None:
        self.validate()

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SynthConfig:
        """Build from a mapping (e.g. parsed ``synth.json``); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SynthConfigError(
                f"unknown synth config key(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        kwargs = dict(data)
        for key in ("domains", "domain_density"):
            if isinstance(kwargs.get(key), tuple):  # a str stays a str (and fails validation)
                kwargs[key] = list(kwargs[key])
        return cls(**kwargs)

    @classmethod
    def tiny(cls, **overrides: Any) -> SynthConfig:
        """Small preset for unit tests: ~300 users, 120 items per domain, 32px images."""
        base: dict[str, Any] = {
            "users": 300,
            "items_per_domain": 120,
            "image_size": 32,
            "max_per_domain": 40,
        }
        base.update(overrides)
        return cls.from_dict(base)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (round-trips through :meth:`from_dict`)."""
        return asdict(self)

    def validate(self) -> None:
        """Raise :class:`SynthConfigError` on an inconsistent or out-of-range value."""

        def bad(msg: str) -> SynthConfigError:
            return SynthConfigError(f"synth config: {msg}")

        # Types first: configs come from JSON and the command line, not only from code.
        for f in fields(self):
            v = getattr(self, f.name)
            ok = {
                "int": isinstance(v, int) and not isinstance(v, bool),
                "float": isinstance(v, int | float) and not isinstance(v, bool),
                "bool": isinstance(v, bool),
                "list[str]": isinstance(v, list) and all(isinstance(x, str) for x in v),
                "list[float]": isinstance(v, list)
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v),
            }[str(f.type)]
            if not ok:
                raise bad(f"{f.name} must be {f.type}, got {v!r}")
        if not self.domains:
            raise bad("domains must not be empty")
        for d in self.domains:
            if not isinstance(d, str) or not _DOMAIN_RE.match(d):
                raise bad(f"domain {d!r} must match {_DOMAIN_RE.pattern}")
        if len(set(self.domains)) != len(self.domains):
            raise bad("domains must be distinct")
        for name in ("users", "items_per_domain", "topics_per_domain", "n_styles"):
            if int(getattr(self, name)) < 1:
                raise bad(f"{name} must be >= 1")
        if self.n_styles > len(STYLES):
            raise bad(f"n_styles must be <= {len(STYLES)}")
        if self.collab_dim < 1:
            raise bad("collab_dim must be >= 1")
        if self.image_size < 8:
            raise bad("image_size must be >= 8")
        if self.min_per_domain < 1 or self.max_per_domain < self.min_per_domain:
            raise bad("need 1 <= min_per_domain <= max_per_domain")
        if self.cap_per_domain() < self.min_per_domain:
            raise bad(
                f"items_per_domain={self.items_per_domain} is too small for "
                f"min_per_domain={self.min_per_domain} (a user may take at most a third)"
            )
        if self.mean_per_domain < self.min_per_domain:
            raise bad("mean_per_domain must be >= min_per_domain")
        shares = (
            "overlap",
            "extra_domain_prob",
            "style_purity",
            "hidden_style_share",
            "no_image_share",
            "no_text_share",
            "no_content_share",
        )
        for name in shares:
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise bad(f"{name} must be in [0, 1], got {v}")
        if self.no_image_share + self.no_text_share + self.no_content_share > 1.0:
            raise bad("no_image_share + no_text_share + no_content_share must be <= 1")
        if len(self.domains) == 1 and self.overlap > 0:
            raise bad("overlap must be 0 with a single domain")
        if self.domain_density and len(self.domain_density) != len(self.domains):
            raise bad("domain_density needs one value per domain (or none)")
        if any(x <= 0 for x in self.domain_density):
            raise bad("domain_density values must be > 0")
        for name in ("style_concentration", "topic_concentration"):
            if getattr(self, name) <= 0:
                raise bad(f"{name} must be > 0")
        for name in ("activity_sigma", "domain_taste_noise", "zipf_exponent", "popularity_sigma"):
            if getattr(self, name) < 0:
                raise bad(f"{name} must be >= 0")
        if self.time_span_days < 1:
            raise bad("time_span_days must be >= 1")

    def cap_per_domain(self) -> int:
        """Most interactions of a user in one domain (also at most a third of the items)."""
        return min(self.max_per_domain, self.items_per_domain // 3)
