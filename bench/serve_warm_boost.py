"""What the co-purchase stage for users with history in the domain (``[blend]
copurchase_warm``) costs the service under HTTP load: an interleaved A/B
(bench/serve_ab.py's parts) of one padded bundle served as it is and with that stage on.

    python bench/serve_warm_boost.py --items 100000 --concurrency 1 32 --rounds 4 \\
        --window 6 --out /tmp/micrec-warm-boost

The demo bundle is padded to ``--items`` items per domain (serve_bundles.ensure_bundle,
reused under ``--work``; ``--padded`` names an existing padded copy instead). A second copy
of it (``<padded>-warm``: the tensor files hard-linked, or copied across filesystems, and
a new manifest.json) gives every domain's ``blend.weights[domain].inductive`` a
``copurchase`` weight: ``--weight``, or else the domain's own ``cross_domain`` one. The
weight decides the order, not the work: every user with history in the domain and
co-purchased items in another gets their boosted items scored exactly and merged
(app/serving/copurchase.py), whatever its value. The loader checks the sha256 of the files
the manifest lists, not of manifest.json itself (model.bundle.verify_bundle), so the copy
loads; the script checks it does (verify_bundle + model.bundle_blend.read_blend) and that
the serving cache, keyed by the manifest's bytes, is the copy's own.

Variants, on this source tree, one worker each: ``off`` (the padded bundle) and ``warm``
(the copy), both with the default top-N cache, which answers a known user's repeated
request from the list computed at their first one; and, unless ``--no-cache-off-pair``,
``off-nocache`` / ``warm-nocache`` with ``MICREC_TOPN_CACHE_ITEMS=0``, where every known
request runs the stage. Each round visits the bare endpoint, then every variant (in an
order rotated per round) with the recommend mix of bench/serve.py (known, inductive,
cross-domain users in equal shares) and with known users alone. Before the timed rounds
every known user's request is sent to every variant and the answers compared: the run
stops if ``warm`` answers no known user differently from ``off`` (a variant that silently
does nothing), or if a cached answer differs from the uncached one of the same bundle.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from machine import busy_processes, git_commit, host_facts
from serve_ab import point_row, start_bare, start_variant
from serve_bench import Bench
from serve_bundles import ensure_bundle, staged_dir
from serve_common import ROOT, log
from serve_http import http_json, seed_and_warm
from serve_procs import ServerProcess
from serve_requests import build_requests, recommend_mix

NOCACHE = {"MICREC_TOPN_CACHE_ITEMS": "0"}
SCORE_TOL = 1e-4
"""Scores closer than this count as equal when two variants' answers are compared."""


def warm_manifest(
    manifest: dict[str, Any], weight: float | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """A copy of ``manifest`` whose blend gives users with history in each domain
    (``weights[domain]["inductive"]``) a co-purchase weight: ``weight``, or else the
    domain's ``cross_domain`` one. Returns it and the weight per domain. Its model_version
    gets a ``-warm`` suffix; ``data.warm_boost`` records where it came from.

    ValueError when the bundle has no co-purchase transitions (a weight would do nothing)
    or when no domain gets a positive weight."""
    out = copy.deepcopy(manifest)
    blend = out.get("blend") or {}
    if not blend.get("copurchase"):
        raise ValueError("the bundle has no co-purchase transitions (blend.copurchase)")
    chosen: dict[str, float] = {}
    for domain, types in blend.get("weights", {}).items():
        if "inductive" not in types:
            continue
        w = weight if weight is not None else types.get("cross_domain", {}).get("copurchase", 0)
        if w and w > 0:
            types["inductive"]["copurchase"] = float(w)
            chosen[domain] = float(w)
    if not chosen:
        raise ValueError("no domain has a positive co-purchase weight to use; give --weight")
    out["data"] = {
        **out.get("data", {}),
        "warm_boost": {"from_model_version": manifest["model_version"], "weights": chosen},
    }
    out["model_version"] = f"{manifest['model_version']}-warm"
    return out, chosen


def write_warm_copy(src: Path, dst: Path, weight: float | None = None) -> dict[str, float]:
    """``src`` with :func:`warm_manifest`'s manifest at ``dst`` (the files ``src``'s
    manifest lists hard-linked, or copied where a link is not possible), checked as the
    service loads it; returns the weight per domain. A ``dst`` whose manifest is already
    that one is kept (with its serving cache)."""
    from model.bundle import read_manifest, verify_bundle
    from model.bundle_blend import read_blend

    src, dst = Path(src), Path(dst)
    manifest, chosen = warm_manifest(read_manifest(src), weight)
    text = json.dumps(manifest, indent=1)
    if (dst / "manifest.json").is_file() and (dst / "manifest.json").read_text() == text:
        log(f"reusing {dst}")
    else:
        with staged_dir(dst, ".warm-") as tmp:
            for name in manifest["sha256"]:
                try:
                    os.link(src / name, tmp / name)
                except OSError:
                    shutil.copyfile(src / name, tmp / name)
            (tmp / "manifest.json").write_text(text)
    checked = verify_bundle(dst)  # the listed files' sha256, as the loader checks them
    blend = read_blend(dst, checked["blend"])
    assert blend is not None and blend.copurchase is not None
    for domain, w in chosen.items():
        got = blend.weights[domain]["inductive"].copurchase
        if got != w:
            raise RuntimeError(f"{dst}: {domain} inductive copurchase reads {got}, wrote {w}")
    return chosen


def answers(server: ServerProcess, bodies: list[str]) -> list[dict[str, Any]]:
    """Each body's /v1/recommend answer (items as [id, score]), in order."""
    out = []
    for body in bodies:
        status, resp = http_json(server.base_url, "POST", "/v1/recommend", body)
        if status != 200:
            raise RuntimeError(f"{body} -> {status} {resp}")
        out.append(
            {
                "user_embedding": resp["user_embedding"],
                "cached": resp.get("cached"),
                "items": [[it["item_id"], it["score"]] for it in resp["items"]],
            }
        )
    return out


def differ(a: dict[str, Any], b: dict[str, Any]) -> dict[str, bool]:
    """Whether two answers differ in their item order, and in their scores."""
    ids_a, ids_b = [i for i, _ in a["items"]], [i for i, _ in b["items"]]
    scores = ids_a != ids_b or any(
        abs(x - y) > SCORE_TOL for (_, x), (_, y) in zip(a["items"], b["items"], strict=True)
    )
    return {"ids": ids_a != ids_b, "scores": scores}


def compare(
    servers: dict[str, ServerProcess], bodies: list[str], pairs: list[tuple[str, str]]
) -> dict[str, Any]:
    """Every known body sent to every variant; per pair (a, b), how many answers differ
    (item order; order or score), and one example of a differing answer."""
    got = {name: answers(server, bodies) for name, server in servers.items()}
    out: dict[str, Any] = {"requests": len(bodies), "pairs": {}}
    for a, b in pairs:
        diffs = [differ(x, y) for x, y in zip(got[a], got[b], strict=True)]
        k = next((k for k, d in enumerate(diffs) if d["ids"]), None)
        example = None
        if k is not None:
            example = {
                "body": json.loads(bodies[k]),
                a: [i for i, _ in got[a][k]["items"][:5]],
                b: [i for i, _ in got[b][k]["items"][:5]],
            }
        out["pairs"][f"{a} vs {b}"] = {
            "ids_differ": sum(d["ids"] for d in diffs),
            "ids_or_scores_differ": sum(d["scores"] for d in diffs),
            "example": example,
        }
        log(f"{a} vs {b}: {out['pairs'][f'{a} vs {b}']}")
    return out


def check_comparison(result: dict[str, Any], cache_pair: bool) -> None:
    """The run's preconditions: the stage changes answers; the cache changes none."""
    pairs = result["pairs"]
    if pairs["off vs warm"]["ids_or_scores_differ"] == 0:
        raise RuntimeError("warm answers every known user as off does: the stage did not run")
    if cache_pair:
        if pairs["off-nocache vs warm-nocache"]["ids_or_scores_differ"] == 0:
            raise RuntimeError("warm-nocache answers every known user as off-nocache does")
        for same in ("off vs off-nocache", "warm vs warm-nocache"):
            if pairs[same]["ids_or_scores_differ"]:
                raise RuntimeError(f"{same}: the top-N cache changed answers")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--bundle", default="artifacts/demo-bundle")
    ap.add_argument("--work", default="artifacts/serve-work")
    ap.add_argument("--padded", default=None, help="an existing padded bundle to use")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--weight", type=float, default=None)
    ap.add_argument("--cache-off-pair", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=6.0, help="seconds per point")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--out", default="/tmp/micrec-warm-boost")
    a = ap.parse_args()
    started = time.time()
    src = Path(a.bundle)
    padded = Path(a.padded) if a.padded else ensure_bundle(src, Path(a.work), a.items)
    warm = padded.with_name(padded.name + "-warm")
    weights = write_warm_copy(padded, warm, a.weight)
    log(f"{warm}: inductive copurchase weights {weights}")
    a.bundle_padded = str(padded)
    bench = Bench(argparse.Namespace(**vars(a), source_root=None))
    reqs = build_requests(src, a.items)
    bodies = reqs["bodies"]
    sets = {"mix": recommend_mix(bodies), "known": bodies["known"]}
    variants: list[tuple[str, Path, dict[str, str]]] = [
        ("off", ROOT, {}),
        ("warm", ROOT, {"MICREC_BUNDLE_PATH": str(warm.resolve())}),
    ]
    if a.cache_off_pair:
        variants += [
            ("off-nocache", ROOT, dict(NOCACHE)),
            ("warm-nocache", ROOT, {"MICREC_BUNDLE_PATH": str(warm.resolve()), **NOCACHE}),
        ]
    names = [v[0] for v in variants]
    report: dict[str, Any] = {
        "command": shlex.join(["python", *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            **host_facts(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "other_busy_processes_at_start": busy_processes("serve_warm_boost"),
        },
        "padded": str(padded),
        "warm": str(warm),
        "items_per_domain": a.items,
        "weights": weights,
        "variants": {n: s for n, _, s in variants},
        "rounds": [],
    }
    with ExitStack() as stack:
        bare = start_bare(bench, stack, a.workers)
        servers = {v[0]: start_variant(bench, stack, v, a) for v in variants}
        bare.wait_ready("/docs", a.workers, 60)
        for name, server in servers.items():
            server.wait_ready("/readyz", a.workers, a.ready_timeout)
            seed_and_warm(server, reqs, a.workers, a.ready_timeout)
            log(f"{name} ready")
        pairs = [("off", "warm")]
        if a.cache_off_pair:
            pairs += [
                ("off-nocache", "warm-nocache"),
                ("off", "off-nocache"),
                ("warm", "warm-nocache"),
            ]
        report["comparison"] = compare(servers, bodies["known"], pairs)
        check_comparison(report["comparison"], a.cache_off_pair)
        for server in servers.values():  # the cached variants start every round warm
            answers(server, bodies["cross"])
        for r in range(a.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for c in a.concurrency:
                row: dict[str, Any] = {"round": r, "concurrency": c, "order": order}
                body = [json.dumps({"user_id": "u1", "domain": "office"})]
                g = {"name": "bare", "tasks": c, "path": "/v1/recommend", "bodies": body}
                p = bench.run_point(bare, {"kind": "bare", "concurrency": c}, [g], a.window)
                row["bare"] = p["groups"]["bare"]["throughput_rps"]
                for name in order:
                    for set_name, set_bodies in sets.items():
                        g = {
                            "name": set_name,
                            "tasks": c,
                            "path": "/v1/recommend",
                            "bodies": set_bodies,
                        }
                        meta = {"kind": name, "set": set_name, "concurrency": c}
                        p = bench.run_point(servers[name], meta, [g], a.window)
                        row[f"{name}/{set_name}"] = point_row(p, set_name, row["bare"])
                report["rounds"].append(row)
    bench.loadavg.stop()
    report["loadavg_samples"] = bench.loadavg.samples
    report["minutes"] = round((time.time() - started) / 60, 1)
    md = markdown(report, names, list(sets), a)
    Path(a.out).with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    Path(a.out).with_suffix(".md").write_text(md)
    print(md)
    return 0


def markdown(report: dict[str, Any], names: list[str], sets: list[str], a: Any) -> str:
    """The tables: median over rounds per variant and request set; warm over off per round."""
    loads = [v for _, v in report["loadavg_samples"]]
    out = [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}, commit {report['commit']}, {report['minutes']} min; "
        f"{report['machine']['nproc']} cores ({report['machine']['cpu_model']}); workers "
        f"{a.workers}; {a.rounds} rounds of {a.window:.0f} s per point; load average (1 min) "
        f"at start {report['machine']['loadavg_start'][0]}, during the run "
        f"{min(loads):.1f}-{max(loads):.1f}  ",
        f"Inductive co-purchase weights of the warm copy: {report['weights']}",
        "",
        "Median over rounds (each round: bare, then every variant, back to back):",
        "",
        "| variant | requests | c | rps | x bare | p50 ms | p99 ms | server CPU ms/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in a.concurrency:
        rows = [r for r in report["rounds"] if r["concurrency"] == c]
        bare = statistics.median(r["bare"] for r in rows)
        out.append(f"| bare | | {c} | {bare:,.0f} | 1 | | | | |")
        for s in sets:
            for name in names:
                key = f"{name}/{s}"

                def med(field: str, rows: list[dict[str, Any]] = rows, key: str = key) -> float:
                    return statistics.median(r[key][field] for r in rows)

                errors = sum(r[key]["errors"] for r in rows)
                out.append(
                    f"| {name} | {s} | {c} | {med('rps'):,.0f} | {med('x_bare'):.3f} | "
                    f"{med('p50_ms'):.1f} | {med('p99_ms'):.0f} | "
                    f"{med('cpu_ms_per_req'):.2f} | {errors} |"
                )
    out += [
        "",
        "Warm over off, per round (rps ratio; p50 difference in ms), median over rounds:",
        "",
        "| pair | requests | c | rps warm / off | p50 warm - off (ms) | every round (rps) |",
        "|---|---|---:|---:|---:|---|",
    ]
    pairs = [("off", "warm")] + ([("off-nocache", "warm-nocache")] if len(names) > 2 else [])
    for off, on in pairs:
        for s in sets:
            for c in a.concurrency:
                rows = [r for r in report["rounds"] if r["concurrency"] == c]
                ratios = [r[f"{on}/{s}"]["rps"] / r[f"{off}/{s}"]["rps"] for r in rows]
                deltas = [r[f"{on}/{s}"]["p50_ms"] - r[f"{off}/{s}"]["p50_ms"] for r in rows]
                out.append(
                    f"| {on} / {off} | {s} | {c} | {statistics.median(ratios):.3f} | "
                    f"{statistics.median(deltas):+.2f} | "
                    f"{', '.join(f'{x:.3f}' for x in ratios)} |"
                )
    comp = report["comparison"]
    out += [
        "",
        f"Answers compared before the timed rounds ({comp['requests']} known users, "
        "one request each, same body to every variant):",
        "",
        "| pair | item order differs | order or score differs |",
        "|---|---:|---:|",
    ]
    for pair, res in comp["pairs"].items():
        out.append(f"| {pair} | {res['ids_differ']} | {res['ids_or_scores_differ']} |")
    example = comp["pairs"]["off vs warm"]["example"]
    if example:
        out += [
            "",
            f"Example ({json.dumps(example['body'])}), top 5: off {example['off']}, "
            f"warm {example['warm']}",
        ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
