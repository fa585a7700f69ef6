"""What ``popularity_key_cap`` costs legitimate popularity and what it leaves an attacker.

The "popular" fallback ranks items by bundle popularity + API count, the API count being
distinct users per item, of which one API key counts at most ``cap`` (app/users/interactions.py;
the stores' ``source_cap``). This replays a workload through that rule, per domain of a
bundle:

* legitimate traffic: the bundle dataset's interactions posted again through the API
  (each user's rows by one key; ``--keys`` keys, users spread over them by hash), the
  whole history or its newest ``--recent`` fraction (a few weeks' traffic between
  retrains);
* the attack of issue 22: 2 x 1,000 rows from made-up users on the domain's median item,
  from one key.

For each cap it reports how much of the uncapped popular list survives (overlap of the
top 10 and top 50, averaged over domains) and the attacked item's rank (1 = shown first
to every cold user). The count rule is the stores' (min(users, cap) per item and key,
summed over keys); the stores themselves are tested in tests/app/store.

    python bench/popularity_cap.py --bundle artifacts/demo-bundle > docs/results/popularity-cap.md
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

ATTACK_USERS = 2 * 1000


def load(
    bundle: Path, recent: float
) -> tuple[dict[str, dict[str, int]], list[tuple[str, str, str]]]:
    """(domain -> item -> bundle popularity, legitimate rows (user, item, domain))."""
    catalogue = json.loads((bundle / "catalogue.json").read_text())
    base = {
        d: dict(zip(c["item_ids"], (int(p) for p in c["popularity"]), strict=True))
        for d, c in catalogue.items()
    }
    dataset = Path(json.loads((bundle / "manifest.json").read_text())["data"]["dataset"])
    with (dataset / "interactions.csv").open(newline="") as f:
        rows = [
            (r["user_id"], r["item_id"], r["domain"], float(r["timestamp"]))
            for r in csv.DictReader(f)
        ]
    rows.sort(key=lambda r: r[3])
    rows = rows[int(len(rows) * (1 - recent)) :]
    return base, [(u, i, d) for u, i, d, _ in rows if d in base and i in base[d]]


def key_of(user: str, keys: int) -> int:
    return int(hashlib.sha256(user.encode()).hexdigest(), 16) % keys


def api_counts(
    rows: list[tuple[str, str, str]], keys: int, cap: int, extra: dict[tuple[str, str, str], int]
) -> dict[str, dict[str, int]]:
    """domain -> item -> counted users under the cap; ``extra``: (domain, item, key) ->
    users that key adds (the attack)."""
    users: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for u, i, d in rows:
        users[(d, i, f"k{key_of(u, keys)}")].add(u)
    per_key = {k: len(v) for k, v in users.items()}
    for k, n in extra.items():
        per_key[k] = per_key.get(k, 0) + n
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (d, i, _), n in per_key.items():
        out[d][i] += min(n, cap) if cap > 0 else n
    return out


def ranking(base: dict[str, int], api: dict[str, int]) -> list[str]:
    return sorted(base, key=lambda i: (-(base[i] + api.get(i, 0)), i))


def overlap(a: list[str], b: list[str], k: int) -> float:
    return len(set(a[:k]) & set(b[:k])) / k


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path("artifacts/demo-bundle"))
    p.add_argument("--caps", default="0,20,50,100,200")
    p.add_argument("--keys", default="1,4", help="legitimate traffic spread over this many keys")
    p.add_argument("--recent", default="1.0,0.1", help="fractions of the history replayed")
    args = p.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    print("| legitimate traffic | keys | cap | top-10 kept | top-50 kept | attacked item's rank |")
    print("|---|---:|---:|---:|---:|---:|")
    for recent in (float(x) for x in args.recent.split(",")):
        base, rows = load(args.bundle, recent)
        median = {d: sorted(b, key=lambda i: (b[i], i))[len(b) // 2] for d, b in base.items()}
        for keys in (int(k) for k in args.keys.split(",")):
            free = api_counts(rows, keys, 0, {})
            truth = {d: ranking(base[d], free[d]) for d in base}
            for cap in caps:
                legit = api_counts(rows, keys, cap, {})
                attack = {(d, median[d], "attacker"): ATTACK_USERS for d in base}
                attacked = api_counts(rows, keys, cap, attack)
                top10 = sum(overlap(truth[d], ranking(base[d], legit[d]), 10) for d in base)
                top50 = sum(overlap(truth[d], ranking(base[d], legit[d]), 50) for d in base)
                ranks = [ranking(base[d], attacked[d]).index(median[d]) + 1 for d in base]
                label = f"{len(rows):,} rows ({recent:.0%} of the history)"
                print(
                    f"| {label} | {keys} | {cap or 'none'} | {top10 / len(base):.0%} "
                    f"| {top50 / len(base):.0%} | {', '.join(map(str, ranks))} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
