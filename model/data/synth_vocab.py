"""Words of the synthetic catalogue: the shared styles (adjectives, a phrase, a palette
hue), the neutral words of hidden-style items, and each domain's topic vocabularies
(hand-written for food/kitchen/office/arts, deterministic pseudo-words otherwise)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    """A latent aesthetic shared by all domains: its words and its palette."""

    name: str
    adjectives: tuple[str, ...]
    phrase: str
    hue: float  # palette base hue in [0, 1)


# Hues are spread around the colour wheel so that an image encoder can tell styles apart.
STYLES: tuple[Style, ...] = (
    Style("rustic", ("rustic", "farmhouse", "weathered"), "Warm farmhouse character", 0.07),
    Style("modern", ("modern", "sleek", "minimalist"), "Clean lines and a sleek finish", 0.62),
    Style("vintage", ("vintage", "retro", "antique"), "A retro look inspired by the past", 0.14),
    Style("playful", ("playful", "colorful", "whimsical"), "Bright and cheerful fun", 0.88),
    Style("elegant", ("elegant", "luxe", "refined"), "Refined detail for special days", 0.75),
    Style("organic", ("organic", "natural", "earthy"), "Natural and earthy by design", 0.30),
    Style("industrial", ("industrial", "rugged", "utilitarian"), "Built rugged to last", 0.0),
    Style("coastal", ("coastal", "breezy", "nautical"), "Breezy seaside spirit", 0.50),
)

# Neutral words for items whose style is not told by their text (hidden_style_share).
NEUTRAL_ADJECTIVES = ("premium", "everyday", "essential", "deluxe", "value", "assorted")
NEUTRAL_PHRASE = "A dependable choice for every day"


@dataclass(frozen=True)
class Topic:
    """A product family of one domain: its category and title words."""

    category: str
    modifiers: tuple[str, ...]  # materials / flavours
    nouns: tuple[str, ...]


def _t(category: str, modifiers: str, nouns: str) -> Topic:
    return Topic(category, tuple(modifiers.split("|")), tuple(nouns.split("|")))


# Hand-written topic vocabularies. Modifiers and nouns avoid the style adjectives and each
# other across the default domains, so the words shared across domains are (almost only)
# the style words: the designed cross-domain signal, not an accident of the vocabulary.
_DOMAIN_TOPICS: dict[str, tuple[Topic, ...]] = {
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


def domain_topics(domain: str, n_topics: int) -> list[Topic]:
    """The domain's topic vocabularies; topics beyond the hand-written ones get pseudo-words."""
    known = list(_DOMAIN_TOPICS.get(domain, ()))
    out = known[:n_topics]
    for k in range(len(out), n_topics):
        w = _pseudo_word(f"{domain}/{k}")
        mods = tuple(_pseudo_word(f"{domain}/{k}/m{j}", 2) for j in range(4))
        nouns = tuple(_pseudo_word(f"{domain}/{k}/n{j}", 3) for j in range(4))
        out.append(Topic(w.capitalize(), mods, nouns))
    return out
