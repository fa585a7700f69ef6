"""Tests of the raw Amazon dump importers (``micrec data import``).

The fixtures under ``fixtures/amazon2023`` and ``fixtures/amazon2018`` are tiny files in
the real formats (gzip and plain). Their contents are chosen so that every filter fires:

* 2023 food (9 reviews, gzip) / kitchen (8 reviews, plain): users A, B, C in both
  domains, D food only, E kitchen only; A reviewed B07FOOD001 twice (two colour variants,
  the *second* line is earlier); ``B0SHARED01`` is in both domains; ratings 1-3 occur;
  A reviewed B08KIT0001 twice.
* 2018 arts (ratings CSV, plain) / office (5-core JSON, gzip): ``B00SHARE99`` in both,
  one duplicate pair in arts, a legacy Python-literal metadata file for office.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest

from model.data.dataset import DatasetError
from model.data.importers import (
    DomainSource,
    ImporterError,
    ImportOptions,
    import_amazon2018,
    import_amazon2023,
    parse_domain_spec,
)
from model.data.importers.text import clean_text, truncate

FIX = Path(__file__).parent / "fixtures"
A23, A18 = FIX / "amazon2023", FIX / "amazon2018"
UA, UB, UC = (
    "AGBFYI2DDIKXC5Y4FARTYDTQBMFQ",
    "AFQLNQNQYFWQZPJQZS6V3NZU4QBQ",
    "AHITBJSS7KYUBVZPX7M2WJCOIVKQ",
)
UD, UE = "AEMP3A7IKW37CMWFXNKXWW6HGJHA", "AFKZENTNBQ7A7V7UXW5JJI6UGRYQ"

FOOD = DomainSource("food", A23 / "reviews_food.jsonl.gz", A23 / "meta_food.jsonl")
KITCHEN = DomainSource("kitchen", A23 / "reviews_kitchen.jsonl", A23 / "meta_kitchen.jsonl.gz")
ARTS = DomainSource("arts", A18 / "ratings_arts.csv", A18 / "meta_arts.json.gz")
OFFICE = DomainSource("office", A18 / "office_5.json.gz", A18 / "meta_office.json")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def by_item(out: Path) -> dict[str, dict[str, str]]:
    return {r["item_id"]: r for r in read_csv(out / "items.csv")}


def pairs(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    rows = read_csv(out / "interactions.csv")
    keyed = {(r["user_id"], r["item_id"]): r for r in rows}
    assert len(keyed) == len(rows), "duplicate (user, item) pairs in the output"
    return keyed


def check_format(out: Path) -> None:
    """The output follows ../shared/datasets/README.md (checked with the csv module)."""
    with open(out / "interactions.csv", encoding="utf-8", newline="") as fh:
        assert next(csv.reader(fh)) == ["user_id", "item_id", "domain", "timestamp", "rating"]
    with open(out / "items.csv", encoding="utf-8", newline="") as fh:
        assert next(csv.reader(fh)) == [
            "item_id", "domain", "title", "categories", "description", "image",
        ]  # fmt: skip
    items = read_csv(out / "items.csv")
    ids = [r["item_id"] for r in items]
    assert len(ids) == len(set(ids)), "item ids must be unique across the dataset"
    domain_of = {r["item_id"]: r["domain"] for r in items}
    for r in read_csv(out / "interactions.csv"):
        assert domain_of[r["item_id"]] == r["domain"]
        int(r["timestamp"])
        float(r["rating"])
    for r in items:
        if r["image"]:
            assert (out / r["image"]).is_file()


# ----------------------------------------------------------------------------- 2023


def test_amazon2023_two_domains(tmp_path: Path) -> None:
    report = import_amazon2023([FOOD, KITCHEN], tmp_path)
    check_format(tmp_path)
    got = pairs(tmp_path)
    food, kitchen = report.domains

    # food: 9 rows, A's second review of B07FOOD001 (a variant, earlier) wins the dedup.
    assert (food.rows_read, food.kept) == (9, 8)
    assert dict(food.dropped) == {"duplicate_user_item": 1}
    assert got[(UA, "B07FOOD001")]["timestamp"] == "1590000000"  # ms -> s
    assert got[(UA, "B07FOOD001")]["rating"] == "3"
    assert got[(UC, "B07FOOD003")]["timestamp"] == "1600000400"  # 1600000400500 ms, floored
    # kitchen: B0SHARED01 stays in food (first domain); A's repeated knife dropped.
    assert (kitchen.rows_read, kitchen.kept) == (8, 5)
    assert dict(kitchen.dropped) == {"item_in_earlier_domain": 2, "duplicate_user_item": 1}
    assert got[(UA, "B08KIT0001")]["timestamp"] == "1610000000"  # earliest of the two
    assert got[(UB, "B0SHARED01")]["domain"] == "food"
    assert (UE, "B0SHARED01") not in got

    # Users are matched across domains by reviewer id.
    assert (report.users, report.users_multi_domain) == (5, 3)
    assert (report.interactions, report.items) == (13, 8)
    assert (food.items, food.items_with_meta, kitchen.items, kitchen.items_with_meta) == (
        5,
        4,
        3,
        3,
    )

    items = by_item(tmp_path)
    assert items["B0SHARED01"]["domain"] == "food"
    assert items["B0SHARED01"]["title"] == "Food Shared Mug"  # not kitchen's metadata
    assert "B07FOOD999" not in items  # metadata without interactions is not an item
    assert items["B07FOOD004"]["title"] == ""  # interactions without metadata: empty text
    assert not any(r["image"] for r in items.values())

    summary = report.format()
    assert "food: 9 rows read, 8 kept; dropped: 1 duplicate user-item pair" in summary
    assert "2 item already in an earlier domain" in summary
    saved = json.loads((tmp_path / "import.json").read_text())
    assert saved["domains"][1]["dropped"] == {"item_in_earlier_domain": 2, "duplicate_user_item": 1}


def test_amazon2023_item_text(tmp_path: Path) -> None:
    import_amazon2023([FOOD, KITCHEN], tmp_path, ImportOptions(max_description_chars=200))
    items = by_item(tmp_path)
    coffee = items["B07FOOD001"]
    assert coffee["title"] == "Medium Roast Coffee Beans, 12 oz"  # <b> stripped
    assert coffee["categories"] == (
        "Grocery & Gourmet Food > Beverages > Coffee, Tea & Cocoa > Coffee"
        " | store: Seattle Roasters"
    )
    assert coffee["description"] == "Smooth & rich. Roasted in small batches."
    # No category path -> main_category; no store -> details["Brand"]; no description ->
    # features.
    tea = items["B07FOOD002"]
    assert tea["categories"] == "Grocery | brand: Leafy"
    assert tea["description"] == "Organic green tea 100 bags"
    chips = items["B07FOOD003"]["description"]
    assert len(chips) <= 200 and chips.endswith("...") and "<" not in chips
    assert items["B08KIT0003"]["categories"] == "Amazon Home"


def test_amazon2023_min_rating(tmp_path: Path) -> None:
    report = import_amazon2023([FOOD, KITCHEN], tmp_path, ImportOptions(min_rating=4))
    check_format(tmp_path)
    got = pairs(tmp_path)
    food, kitchen = report.domains
    assert (food.kept, dict(food.dropped)) == (6, {"below_min_rating": 3})
    assert kitchen.kept == 4
    assert kitchen.dropped["below_min_rating"] == 1
    assert all(float(r["rating"]) >= 4 for r in got.values())
    # The threshold applies before the dedup: A's early 3-star row goes, the 5-star stays.
    assert got[(UA, "B07FOOD001")]["rating"] == "5"
    assert got[(UA, "B07FOOD001")]["timestamp"] == "1600000000"
    assert report.users_multi_domain == 2  # B's only kept kitchen row was 3 stars


def test_amazon2023_min_user_domains(tmp_path: Path) -> None:
    report = import_amazon2023([FOOD, KITCHEN], tmp_path, ImportOptions(min_user_domains=2))
    check_format(tmp_path)
    users = {u for u, _ in pairs(tmp_path)}
    assert users == {UA, UB, UC}
    assert report.domains[0].dropped["user_too_few_domains"] == 2  # D's two food rows
    assert report.domains[1].dropped["user_too_few_domains"] == 1  # E's knife
    assert "B07FOOD004" not in by_item(tmp_path)  # only D had it
    assert report.users == report.users_multi_domain == 3


def test_domain_order_decides_shared_item(tmp_path: Path) -> None:
    report = import_amazon2023([KITCHEN, FOOD], tmp_path)
    items = by_item(tmp_path)
    assert items["B0SHARED01"]["domain"] == "kitchen"
    assert items["B0SHARED01"]["title"] == "Kitchen Shared Mug"
    assert report.domains[1].dropped["item_in_earlier_domain"] == 1


def test_reviews_without_meta(tmp_path: Path) -> None:
    import_amazon2023([DomainSource("food", FOOD.reviews)], tmp_path)
    check_format(tmp_path)
    assert all(r["title"] == "" for r in by_item(tmp_path).values())


# ----------------------------------------------------------------------------- 2018


def test_amazon2018_ratings_csv_and_5core_json(tmp_path: Path) -> None:
    report = import_amazon2018([ARTS, OFFICE], tmp_path)
    check_format(tmp_path)
    arts, office = report.domains
    assert (arts.rows_read, arts.kept, dict(arts.dropped)) == (8, 7, {"duplicate_user_item": 1})
    assert (office.rows_read, office.kept) == (5, 4)
    assert dict(office.dropped) == {"item_in_earlier_domain": 1}
    got = pairs(tmp_path)
    assert got[("A1QA985ULVCQOB", "B00ARTS001")]["timestamp"] == "1388534400"
    assert got[("A3KIQ5J0T0QX8V", "B00OFFI001")]["rating"] == "1"
    assert (report.users, report.users_multi_domain) == (5, 3)

    items = by_item(tmp_path)
    # HTML entity decoded, stray "</span>" category entry dropped, brand appended.
    assert items["B00ARTS001"]["title"] == "Winsor & Newton Cotman Watercolour Set"
    assert items["B00ARTS001"]["categories"] == (
        "Arts, Crafts & Sewing > Painting, Drawing & Art Supplies | brand: Winsor & Newton"
    )
    assert items["B00ARTS001"]["description"] == "12 half pans of colour. Travel size."
    # First metadata row wins; a brand equal to the last category is not repeated;
    # description given as a plain string.
    assert items["B00ARTS002"]["title"] == "Clover Wonder Clips"
    assert items["B00ARTS002"]["categories"] == "Arts, Crafts & Sewing > Sewing > Clover"
    assert items["B00ARTS002"]["description"] == "Holds fabric securely."
    # No category -> main_cat; no description -> feature.
    assert items["B00ARTS003"]["categories"] == "Arts, Crafts & Sewing"
    assert items["B00ARTS003"]["description"] == "Set of 12 Water based"
    # Legacy Python-literal metadata (2014 'categories' list of paths, 2018 'category').
    assert items["B00OFFI002"]["title"] == "Stapler, Black"
    assert items["B00OFFI002"]["categories"] == (
        "Office Products > Office & School Supplies > Staplers | brand: Swingline"
    )
    assert items["B00OFFI003"]["description"] == "A sturdy pad."
    assert items["B00SHARE99"]["title"] == "Arts Shared Planner"
    assert items["B00ARTS004"]["title"] == ""


def test_amazon2018_gzip_and_plain_are_equivalent(tmp_path: Path) -> None:
    """The same files, compressed the other way round, give byte-identical CSVs."""
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    ratings_gz = swapped / "ratings_arts.csv.gz"
    ratings_gz.write_bytes(gzip.compress(ARTS.reviews.read_bytes()))
    office_plain = swapped / "office_5.json"
    office_plain.write_bytes(gzip.decompress(OFFICE.reviews.read_bytes()))
    a, b = tmp_path / "a", tmp_path / "b"
    import_amazon2018([ARTS, OFFICE], a)
    import_amazon2018(
        [
            DomainSource("arts", ratings_gz, ARTS.meta),
            DomainSource("office", office_plain, OFFICE.meta),
        ],
        b,
    )
    for name in ("interactions.csv", "items.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_ratings_csv_header_tolerated(tmp_path: Path) -> None:
    src = tmp_path / "ratings.csv"
    src.write_text("item,user,rating,timestamp\n" + ARTS.reviews.read_text())
    report = import_amazon2018([DomainSource("arts", src)], tmp_path / "out")
    assert (report.domains[0].rows_read, report.domains[0].kept) == (8, 7)


# ----------------------------------------------------------------------------- images


def test_local_images_dir(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "raw_images"
    images.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(images / "B07FOOD001.jpg")
    Image.new("RGB", (8, 8), (10, 200, 10)).save(images / "B08KIT0001.PNG")
    # Two files for one item: .jpg is preferred over .webp (documented order).
    Image.new("RGB", (8, 8), (10, 10, 200)).save(images / "B07FOOD002.webp")
    Image.new("RGB", (8, 8), (10, 10, 200)).save(images / "B07FOOD002.jpg")
    (images / "notes.txt").write_text("not an image")
    (images / "B07FOOD999.jpg").write_bytes(b"unused: item has no interactions")
    out = tmp_path / "out"

    report = import_amazon2023([FOOD, KITCHEN], out, ImportOptions(images_dir=images))
    check_format(out)
    items = by_item(out)
    assert items["B07FOOD001"]["image"] == "images/B07FOOD001.jpg"
    assert items["B07FOOD002"]["image"] == "images/B07FOOD002.jpg"
    assert items["B08KIT0001"]["image"] == "images/B08KIT0001.png"
    assert items["B07FOOD003"]["image"] == ""
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "B07FOOD001.jpg", "B07FOOD002.jpg", "B08KIT0001.png",
    ]  # fmt: skip
    assert (out / "images" / "B07FOOD001.jpg").read_bytes() == (
        images / "B07FOOD001.jpg"
    ).read_bytes()
    assert (report.domains[0].items_with_image, report.domains[1].items_with_image) == (2, 1)


# ----------------------------------------------------------------------------- errors


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    bad = DomainSource("food", A23 / "reviews_bad.jsonl")
    with pytest.raises(DatasetError) as info:
        import_amazon2023([bad], tmp_path / "out")
    # Line 2 is blank: numbering counts physical lines.
    assert info.value.line == 4
    assert str(info.value).startswith(f"{A23 / 'reviews_bad.jsonl'}:4: not valid JSON")
    assert not (tmp_path / "out" / "interactions.csv").exists()


def test_skip_malformed_counts(tmp_path: Path) -> None:
    bad = DomainSource("food", A23 / "reviews_bad.jsonl")
    report = import_amazon2023([bad], tmp_path, ImportOptions(skip_malformed=True))
    assert (report.domains[0].rows_read, report.domains[0].kept) == (3, 2)
    assert report.domains[0].dropped["malformed"] == 1


def test_malformed_2018_meta(tmp_path: Path) -> None:
    bad = DomainSource("arts", ARTS.reviews, A18 / "meta_bad.json")
    with pytest.raises(DatasetError, match=r"meta_bad\.json:2: neither JSON nor a Python literal"):
        import_amazon2018([bad], tmp_path)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"rating": 5, "parent_asin": "B1", "timestamp": 1}', "missing or empty 'user_id'"),
        ('{"rating": 5, "user_id": "U", "parent_asin": "B1"}', "missing 'timestamp'"),
        ('{"rating": "five", "user_id": "U", "parent_asin": "B1", "timestamp": 1}', "not a number"),
        ('["not", "an", "object"]', "expected a JSON object"),
    ],
)
def test_invalid_2023_fields(tmp_path: Path, line: str, problem: str) -> None:
    src = tmp_path / "r.jsonl"
    src.write_text(line + "\n")
    with pytest.raises(DatasetError, match=rf"r\.jsonl:1: .*{problem}"):
        import_amazon2023([DomainSource("x", src)], tmp_path / "out")


def test_invalid_2018_csv_row(tmp_path: Path) -> None:
    src = tmp_path / "ratings.csv"
    src.write_text("B1,U1,5.0,1388534400\nB2,U1,5.0\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv:2: expected 4 fields"):
        import_amazon2018([DomainSource("x", src)], tmp_path / "out")


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    src = tmp_path / "r.jsonl"
    good = (A23 / "reviews_kitchen.jsonl").read_bytes().splitlines()[0]
    src.write_bytes(good + b"\n" + good.replace(b"Nice", b"N\xffce") + b"\n")
    with pytest.raises(DatasetError, match=r"r\.jsonl:2: not valid UTF-8"):
        import_amazon2023([DomainSource("x", src)], tmp_path / "out")


def test_byte_order_mark_ignored(tmp_path: Path) -> None:
    src = tmp_path / "ratings.csv"
    src.write_bytes(b"\xef\xbb\xbf" + ARTS.reviews.read_bytes())
    import_amazon2018([DomainSource("arts", src)], tmp_path / "out")
    assert "B00ARTS001" in by_item(tmp_path / "out")


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress((A23 / "reviews_kitchen.jsonl").read_bytes() * 50)
    src = tmp_path / "cut.jsonl.gz"
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.jsonl\.gz:\d+: cannot read gzip data"):
        import_amazon2023([DomainSource("x", src)], tmp_path / "out")


def test_argument_errors_before_reading(tmp_path: Path) -> None:
    missing = DomainSource("kitchen", tmp_path / "nope.jsonl")
    with pytest.raises(ImporterError, match="no such file"):
        import_amazon2023([FOOD, missing], tmp_path / "out")
    with pytest.raises(ImporterError, match="more than once"):
        import_amazon2023([FOOD, FOOD], tmp_path / "out")
    with pytest.raises(ImporterError, match="min-user-domains"):
        import_amazon2023([FOOD], tmp_path / "out", ImportOptions(min_user_domains=2))
    with pytest.raises(ImporterError, match="no interactions left"):
        import_amazon2023([FOOD], tmp_path / "out", ImportOptions(min_rating=6))
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    import_amazon2023([FOOD], tmp_path)
    with pytest.raises(ImporterError, match="--overwrite"):
        import_amazon2023([KITCHEN], tmp_path)
    import_amazon2023([KITCHEN], tmp_path, ImportOptions(overwrite=True))
    assert {r["domain"] for r in by_item(tmp_path).values()} == {"kitchen"}


def test_parse_domain_spec() -> None:
    assert parse_domain_spec("food=a.jsonl.gz:m.jsonl.gz") == DomainSource(
        "food", Path("a.jsonl.gz"), Path("m.jsonl.gz")
    )
    assert parse_domain_spec("food=a.jsonl") == DomainSource("food", Path("a.jsonl"))
    assert parse_domain_spec("food=a.jsonl:") == DomainSource("food", Path("a.jsonl"))
    for bad in ("food", "=a.jsonl", "food=", "fo od=a", "food=:m.jsonl", "food=a:b:c"):
        with pytest.raises(ImporterError):
            parse_domain_spec(bad)


def test_text_cleaning() -> None:
    assert clean_text("<p>A &amp; B</p>\n<br/>C  ") == "A & B C"
    assert clean_text("3 < 4 and 5 > 2") == "3 < 4 and 5 > 2"  # not a tag
    assert clean_text("x<script>var a = 1;</script>y<!-- c -->z") == "x y z"
    assert clean_text("A > B") == "A > B"
    assert truncate("short", 10) == "short"
    cut = truncate("alpha beta gamma delta epsilon", 20)
    assert cut == "alpha beta gamma..." and len(cut) <= 20


# ----------------------------------------------------------------------------- CLI + loader


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from model.commands.runner import run

    out = tmp_path / "ds"
    rc = run(
        [
            "--threads", "1", "data", "import", "amazon2023",
            "--domain", f"food={FOOD.reviews}:{FOOD.meta}",
            "--domain", f"kitchen={KITCHEN.reviews}:{KITCHEN.meta}",
            "--out", str(out), "--min-rating", "4",
        ]
    )  # fmt: skip
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "food: 9 rows read, 6 kept; dropped: 3 below --min-rating" in stdout
    assert "total: 10 interactions" in stdout
    check_format(out)

    bad = A23 / "reviews_bad.jsonl"
    rc = run(["data", "import", "amazon2023", "--domain", f"x={bad}", "--out", str(out / "2")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "Traceback" not in err

    rc = run(["data", "import", "amazon2018", "--domain", "x", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "NAME=INTERACTIONS[:META]" in capsys.readouterr().err


def test_output_loads_with_project_loader(tmp_path: Path) -> None:
    loading = pytest.importorskip("model.data.loading")
    if not hasattr(loading, "load_dataset"):
        pytest.skip("model.data.loading.load_dataset not available yet")
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "B00ARTS001.png")
    out = tmp_path / "ds"
    import_amazon2018([ARTS, OFFICE], out, ImportOptions(images_dir=images))
    ds = loading.load_dataset(out)
    assert ds.domains == ["arts", "office"]
    assert len(ds.interactions) == 11 and len(ds.items) == 8
    assert ds.items["B00ARTS001"].image == (out / "images" / "B00ARTS001.png").resolve()
    assert ds.interactions.timestamp is not None and ds.interactions.rating is not None

    out23 = tmp_path / "ds23"
    shutil.rmtree(out, ignore_errors=True)
    import_amazon2023([FOOD, KITCHEN], out23, ImportOptions(min_rating=4))
    ds23 = loading.load_dataset(out23)
    assert len(ds23.interactions) == 10
    assert ds23.items["B07FOOD001"].text().startswith("Medium Roast Coffee Beans, 12 oz. Grocery")
