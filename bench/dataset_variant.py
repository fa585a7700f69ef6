"""A variant of a dataset folder for robustness runs of bench/quality.py.

    python bench/dataset_variant.py --dataset ../shared/datasets/amazon-arts-office \
        --keep-text title --out /tmp/arts-office-titles

Writes ``OUT/items.csv`` with only the named text columns kept (the others emptied, so
every item's text is shorter: a stand-in for a catalogue with short item texts) and a
copy of ``interactions.csv``. The item-text composition itself is untouched: the model
reads the variant as any other dataset (model.data.dataset.item_text). Held-out data sets
that a user will run the benchmark on differ from ours in ways we can only imitate; this
is one of them (partial user overlap is another: ``bench/quality.py --overlap-ratio``).
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

TEXT_COLUMNS = ("title", "categories", "description")


def write_variant(src: Path, out: Path, keep_text: tuple[str, ...]) -> dict[str, int]:
    """Copy ``src`` to ``out`` keeping only the text columns in ``keep_text``; returns the
    number of items and their mean text length (characters) before and after."""
    unknown = sorted(set(keep_text) - set(TEXT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown text columns {unknown}; known: {list(TEXT_COLUMNS)}")
    if not (src / "items.csv").is_file() or not (src / "interactions.csv").is_file():
        raise FileNotFoundError(f"{src} needs items.csv and interactions.csv")
    out.mkdir(parents=True, exist_ok=True)
    n = before = after = 0
    with (
        (src / "items.csv").open(newline="") as f_in,
        (out / "items.csv").open("w", newline="") as f_out,
    ):
        reader = csv.DictReader(f_in)
        fields = list(reader.fieldnames or [])
        writer = csv.DictWriter(f_out, fieldnames=fields)
        writer.writeheader()
        for row in reader:
            n += 1
            before += sum(len(row.get(c) or "") for c in TEXT_COLUMNS)
            for c in TEXT_COLUMNS:
                if c in row and c not in keep_text:
                    row[c] = ""
            after += sum(len(row.get(c) or "") for c in TEXT_COLUMNS)
            writer.writerow(row)
    shutil.copyfile(src / "interactions.csv", out / "interactions.csv")
    return {
        "items": n,
        "mean_chars_before": before // max(n, 1),
        "mean_chars_after": after // max(n, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument(
        "--keep-text",
        default="title",
        help="comma-separated text columns to keep (title, categories, description)",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    keep = tuple(c.strip() for c in args.keep_text.split(",") if c.strip())
    try:
        stats = write_variant(args.dataset, args.out, keep)
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    print(stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
