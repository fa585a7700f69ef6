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
"""

from __future__ import annotations

import colorsys
import csv
import functools
import json
import math
import os
import re
import shutil
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, ImageDraw

FORMAT_VERSION = 1
"""Version of the synthetic generator recorded in ``synth.json``; bump when output changes."""

# spawn_key prefix of the per-image seeds (0 and 1 are the catalogue and simulation streams).
_IMAGE_STREAM = 2

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
        if self.n_styles > len(_STYLES):
            raise bad(f"n_styles must be <= {len(_STYLES)}")
        if self.collab_dim < 1:
            raise bad("collab_dim must be >= 1")
        if self.image_size < 8:
            raise bad("image_size must be >= 8")
        if self.min_per_domain < 1 or self.max_per_domain < self.min_per_domain:
            raise bad("need 1 <= min_per_domain <= max_per_domain")
        if self._cap() < self.min_per_domain:
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

    def _cap(self) -> int:
        return min(self.max_per_domain, self.items_per_domain // 3)


# --- vocabularies -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    name: str
    adjectives: tuple[str, ...]
    phrase: str
    hue: float  # palette base hue in [0, 1)


# Hues are spread around the colour wheel so that an image encoder can tell styles apart.
_STYLES: tuple[_Style, ...] = (
    _Style("rustic", ("rustic", "farmhouse", "weathered"), "Warm farmhouse character", 0.07),
    _Style("modern", ("modern", "sleek", "minimalist"), "Clean lines and a sleek finish", 0.62),
    _Style("vintage", ("vintage", "retro", "antique"), "A retro look inspired by the past", 0.14),
    _Style("playful", ("playful", "colorful", "whimsical"), "Bright and cheerful fun", 0.88),
    _Style("elegant", ("elegant", "luxe", "refined"), "Refined detail for special days", 0.75),
    _Style("organic", ("organic", "natural", "earthy"), "Natural and earthy by design", 0.30),
    _Style("industrial", ("industrial", "rugged", "utilitarian"), "Built rugged to last", 0.0),
    _Style("coastal", ("coastal", "breezy", "nautical"), "Breezy seaside spirit", 0.50),
)

# Neutral words for items whose style is not told by their text (hidden_style_share).
_NEUTRAL_ADJECTIVES = ("premium", "everyday", "essential", "deluxe", "value", "assorted")
_NEUTRAL_PHRASE = "A dependable choice for every day"


@dataclass(frozen=True)
class _Topic:
    category: str
    modifiers: tuple[str, ...]  # materials / flavours
    nouns: tuple[str, ...]


def _t(category: str, modifiers: str, nouns: str) -> _Topic:
    return _Topic(category, tuple(modifiers.split("|")), tuple(nouns.split("|")))


# Hand-written topic vocabularies. Modifiers and nouns avoid the style adjectives and each
# other across the default domains, so the words shared across domains are (almost only)
# the style words: the designed cross-domain signal, not an accident of the vocabulary.
_DOMAIN_TOPICS: dict[str, tuple[_Topic, ...]] = {
    "food": (
        _t(
            "Coffee & Tea",
            "arabica|dark roast|chai|espresso",
            "coffee beans|tea bags|coffee pods|loose leaf tea",
        ),
        _t(
            "Snacks",
            "sea salt|cheddar|honey roasted|barbecue",
            "potato chips|trail mix|pretzels|popcorn",
        ),
        _t("Baking", "almond|whole wheat|cane sugar|vanilla", "flour|baking mix|cake mix|yeast"),
        _t(
            "Spices & Seasonings",
            "smoked|cajun|garlic|cinnamon",
            "paprika|spice rub|peppercorns|curry powder",
        ),
        _t(
            "Pasta & Grains",
            "durum|brown rice|quinoa|semolina",
            "spaghetti|penne|couscous|rolled oats",
        ),
        _t(
            "Sauces & Condiments",
            "tomato|chipotle|balsamic|dijon",
            "pasta sauce|hot sauce|vinegar|mustard",
        ),
        _t(
            "Candy & Chocolate",
            "dark chocolate|caramel|peppermint|fruit",
            "truffles|chocolate bar|gummies|toffee",
        ),
        _t("Beverages", "sparkling|citrus|ginger|coconut", "soda|juice|lemonade|kombucha"),
    ),
    "kitchen": (
        _t(
            "Drinkware",
            "ceramic|crystal|stainless steel|stoneware",
            "travel mug|tumbler|water bottle|teacup",
        ),
        _t("Cookware", "cast iron|nonstick|copper|carbon steel", "skillet|saucepan|dutch oven|wok"),
        _t(
            "Cutlery & Knives",
            "high-carbon|forged|serrated|damascus",
            "chef knife|paring knife|knife block|kitchen shears",
        ),
        _t("Bakeware", "silicone|aluminum|enamel|fluted", "loaf pan|muffin tin|sheet pan|pie dish"),
        _t(
            "Storage & Containers",
            "airtight|stackable|vacuum sealed|bamboo lid",
            "canister|mason jar|bento|meal prep containers",
        ),
        _t(
            "Small Appliances",
            "electric|cordless|digital|compact",
            "blender|toaster|kettle|hand mixer",
        ),
        _t(
            "Tableware",
            "porcelain|melamine|bone china|terracotta",
            "dinner plate|serving bowl|platter|salad bowl",
        ),
        _t(
            "Kitchen Linens",
            "cotton|linen|waffle weave|quilted",
            "dish towel|apron|oven mitt|tablecloth",
        ),
    ),
    "office": (
        _t(
            "Writing Instruments",
            "gel|fountain|ballpoint|fine tip",
            "pen|pencil|marker|highlighter",
        ),
        _t(
            "Paper & Notebooks",
            "dotted|ruled|recycled|hardcover",
            "notebook|journal|legal pad|sticky notes",
        ),
        _t(
            "Desk Organizers",
            "mesh|wooden|acrylic|rotating",
            "desk organizer|pen holder|letter tray|monitor stand",
        ),
        _t(
            "Filing",
            "expanding|hanging|color-coded|letter-size",
            "file folder|binder|file box|accordion file",
        ),
        _t(
            "Office Furniture",
            "ergonomic|adjustable|swivel|standing",
            "office chair|desk|footrest|bookshelf",
        ),
        _t(
            "Tape & Adhesives",
            "double-sided|clear|washi|masking",
            "tape|glue stick|tape dispenser|mounting putty",
        ),
        _t(
            "Calendars & Planners",
            "weekly|monthly|undated|academic",
            "planner|wall calendar|desk calendar|agenda",
        ),
        _t(
            "Desk Accessories",
            "magnetic|brass|leather|marble",
            "stapler|paper clips|desk lamp|bookends",
        ),
    ),
    "arts": (
        _t("Painting", "tempera|watercolor|oil|gouache", "paint set|brush set|canvas|easel"),
        _t(
            "Drawing",
            "graphite|charcoal|pastel|pigment",
            "sketchbook|drawing pencils|blending stumps|erasers",
        ),
        _t(
            "Sewing",
            "polyester|embroidery|quilting|needlepoint",
            "sewing kit|thread spools|needles|thimble",
        ),
        _t(
            "Knitting & Crochet",
            "merino|chunky|alpaca|wool blend",
            "yarn|knitting needles|crochet hooks|stitch markers",
        ),
        _t(
            "Scrapbooking",
            "glitter|kraft|patterned|holographic",
            "stickers|cardstock|photo album|craft punch",
        ),
        _t(
            "Beading & Jewelry",
            "glass bead|gemstone|sterling|seed bead",
            "bead kit|jewelry pliers|wire spool|clasps",
        ),
        _t(
            "Clay & Sculpting",
            "air-dry|polymer|modeling|sculpting",
            "clay brick|sculpting tools|kiln|armature wire",
        ),
        _t(
            "Craft Organization",
            "rolling|portable|compartment|tiered",
            "craft caddy|tote|drawer cart|bin set",
        ),
    ),
}

_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ren",
    "tu",
    "sa",
    "vo",
    "pel",
    "dri",
    "nu",
    "ga",
    "zi",
    "mor",
    "te",
    "qua",
    "bi",
)


def _pseudo_word(key: str, n_syll: int = 3) -> str:
    """A pronounceable deterministic word from ``key`` (crc32, not ``hash``, which is salted)."""
    h = zlib.crc32(key.encode())
    parts = []
    for _ in range(n_syll):
        parts.append(_SYLLABLES[h % len(_SYLLABLES)])
        h //= len(_SYLLABLES)
    return "".join(parts)


def _domain_topics(domain: str, n_topics: int) -> list[_Topic]:
    """The domain's topic vocabularies; topics beyond the hand-written ones get pseudo-words."""
    known = list(_DOMAIN_TOPICS.get(domain, ()))
    out = known[:n_topics]
    for k in range(len(out), n_topics):
        w = _pseudo_word(f"{domain}/{k}")
        mods = tuple(_pseudo_word(f"{domain}/{k}/m{j}", 2) for j in range(4))
        nouns = tuple(_pseudo_word(f"{domain}/{k}/n{j}", 3) for j in range(4))
        out.append(_Topic(w.capitalize(), mods, nouns))
    return out


# --- images -----------------------------------------------------------------------------

_SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "bars", "star")
_TEXTURES = ("stripes", "dots", "gradient", "checker")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


@functools.cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1) (cached: read-only, shared by threads)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _render_image(size: int, style: _Style, topic: int, rng: np.random.Generator) -> Image.Image:
    """One item image: palette from the style, shape + texture from the topic, item noise."""
    hue = style.hue + rng.normal(0.0, 0.02)
    bg = _hsv(hue, 0.35 + rng.normal(0, 0.05), 0.92 + rng.normal(0, 0.03)) * 255
    fg = _hsv(hue + 0.04, 0.75 + rng.normal(0, 0.05), 0.70 + rng.normal(0, 0.05)) * 255
    accent = _hsv(hue + 0.5, 0.8, 0.55 + rng.normal(0, 0.05)) * 255  # complementary shape

    yy, xx = _grid(size)
    texture = _TEXTURES[(topic * 3 + topic // len(_TEXTURES)) % len(_TEXTURES)]
    angle = (topic * 0.7) + rng.normal(0.0, 0.15)  # topic-specific direction, jittered
    u = xx * math.cos(angle) + yy * math.sin(angle)
    freq = 4 + (topic % 3) * 2
    if texture == "stripes":
        mix = (np.sin(u * freq * 2 * math.pi + rng.uniform(0, 6.3)) > 0).astype(np.float32)
    elif texture == "dots":
        p = 1.0 / freq
        dx = (xx + rng.uniform(0, p)) % p - p / 2
        dy = (yy + rng.uniform(0, p)) % p - p / 2
        mix = ((dx * dx + dy * dy) < (0.3 * p) ** 2).astype(np.float32)
    elif texture == "gradient":
        mix = np.clip(u - u.min(), 0, None) / max(float(np.ptp(u)), 1e-6)
    else:  # checker
        p = 1.0 / freq
        mix = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float32)
    mix = mix[..., None] * 0.6  # keep the texture lighter than the shape
    arr = bg * (1 - mix) + fg * mix
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(img)
    shape = _SHAPES[topic % len(_SHAPES)]
    cx, cy = (0.5 + rng.normal(0, 0.06, 2)) * size
    r = size * (0.28 + rng.normal(0, 0.03))
    col = tuple(int(c) for c in np.clip(accent, 0, 255))
    width = max(1, size // 12)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=col)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=col)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=2 * width)
    elif shape == "cross":
        draw.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=col)
        draw.rectangle([cx - r / 3, cy - r, cx + r / 3, cy + r], fill=col)
    elif shape == "bars":
        for j in range(3):
            x0 = cx - r + j * (2 * r / 3)
            draw.rectangle([x0, cy - r * (0.4 + 0.3 * j), x0 + r / 2, cy + r], fill=col)
    else:  # star
        pts = []
        for j in range(10):
            rr = r if j % 2 == 0 else r * 0.45
            a = -math.pi / 2 + j * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        draw.polygon(pts, fill=col)

    # Per-item pixel noise: two images of one topic/style are similar, never identical.
    out = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 6.0, (size, size, 3))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


# --- generation -------------------------------------------------------------------------


@dataclass
class _DomainCatalogue:
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


def _make_domain(cfg: SynthConfig, d: int, rng: np.random.Generator) -> _DomainCatalogue:
    name = cfg.domains[d]
    n, k_topics = cfg.items_per_domain, cfg.topics_per_domain
    topics = _domain_topics(name, k_topics)
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
        st = _STYLES[style[i]]
        mod = tp.modifiers[pick[i, 0] % len(tp.modifiers)]
        noun = tp.nouns[pick[i, 1] % len(tp.nouns)]
        if hidden[i]:
            adj = _NEUTRAL_ADJECTIVES[pick[i, 2] % len(_NEUTRAL_ADJECTIVES)]
            adj2 = _NEUTRAL_ADJECTIVES[pick[i, 3] % len(_NEUTRAL_ADJECTIVES)]
            phrase = _NEUTRAL_PHRASE
        else:
            adj = st.adjectives[pick[i, 2] % len(st.adjectives)]
            adj2 = st.adjectives[pick[i, 3] % len(st.adjectives)]
            phrase = st.phrase
        titles.append(f"{adj} {mod} {noun}")
        cats.append(f"{name.capitalize()} > {tp.category}")
        pack = ("", " (pack of 2)", " (set of 4)", " (large)")[pick[i, 4] % 4]
        descs.append(f"{adj2.capitalize()} {noun} in {mod}{pack}. {phrase}.")
    return _DomainCatalogue(
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
class _Interactions:
    user: np.ndarray  # [n] int user index
    domain: np.ndarray  # [n] int domain index
    item: np.ndarray  # [n] int local item index
    timestamp: np.ndarray  # [n] int64


def _simulate(
    cfg: SynthConfig, cats: list[_DomainCatalogue], rng: np.random.Generator
) -> _Interactions:
    n_users, n_styles = cfg.users, cfg.n_styles
    user_domains = _assign_domains(cfg, rng)
    taste = rng.dirichlet(np.full(n_styles, cfg.style_concentration), size=n_users)
    # Lognormal activity normalised to mean 1: few heavy users, many light ones.
    activity = rng.lognormal(0.0, cfg.activity_sigma, n_users)
    activity /= math.exp(cfg.activity_sigma**2 / 2)
    density = cfg.domain_density or [1.0] * len(cfg.domains)
    cap = cfg._cap()
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
    return _Interactions(
        user=np.concatenate(users_l),
        domain=np.concatenate(doms_l),
        item=np.concatenate(items_l),
        timestamp=np.concatenate(ts_l).astype(np.int64),
    )


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
    cats = [_make_domain(config, d, cat_rng) for d in range(len(config.domains))]
    inter = _simulate(config, cats, sim_rng)

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
            style = _STYLES[int(cat.style[i])]
            img = _render_image(
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
