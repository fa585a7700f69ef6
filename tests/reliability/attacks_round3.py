"""The attacks of issue 22 (round 3: privacy and smaller findings), for
``python -m tests.reliability.attacks`` (which runs them after issue 13's; see its
docstring for the server they run against).

Each returns (last response, note) like the others; a note may carry ``answers_5xx`` (5xx
answers among its requests) and ``acknowledged_lost`` (acknowledged writes not found
again), which the run's summary adds up. Run against the code before the fixes
(``--repo``) they show the findings; against the fixed code, that they are gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from tests.reliability.attacks import ADMIN, EXTRA_KEYS, Attack, Served
from tests.reliability.procs import AUTH, wait_for

Result = tuple[httpx.Response | None, dict[str, Any]]
PURGE_WAIT_S = 15.0
"""How long the erasure attack waits for the files to lose the id (SQLite: at once after
the fix; Redis: one AOF rewrite, well under a second on this data)."""


def _store_files_holding(s: Served, needle: bytes) -> list[str]:
    # SQLite: the store's files are state.db* of the work directory; Redis: its data dir
    sqlite = s.store_dir == s.workdir
    files = sorted(p for p in s.store_dir.rglob("*") if p.is_file())
    files = [p for p in files if not sqlite or p.name.startswith("state.db")]
    return [str(p.relative_to(s.store_dir)) for p in files if needle in p.read_bytes()]


def _erasure_copies(s: Served, http: httpx.Client) -> Result:
    """A user with a keyed interaction batch (its key naming the user, as clients' keys
    often do) is erased; which of the store's files still hold the id, and for how long,
    and whether a retry of the keyed batch is still answered from its stored record."""
    victim, friend = (f"{who}-{uuid.uuid4().hex[:10]}" for who in ("erase-me", "keep-me"))
    rows = [{"user_id": victim, "item_id": s.item}, {"user_id": friend, "item_id": s.item}]
    body = {"interactions": rows}
    keyed = {**AUTH, "Idempotency-Key": f"batch-of-{victim}"}
    first = http.post("/v1/interactions", json=body, headers=keyed)
    if first.status_code == 200:
        s.acked.append((friend, s.item))
    held_before = _store_files_holding(s, victim.encode())
    t0 = time.perf_counter()
    r = http.delete(f"/v1/users/{victim}", headers=AUTH)
    erase_ms = (time.perf_counter() - t0) * 1000
    purged = wait_for(lambda: not _store_files_holding(s, victim.encode()), PURGE_WAIT_S, 0.05)
    purged_after_s = time.perf_counter() - t0
    held_after = _store_files_holding(s, victim.encode())
    retry = http.post("/v1/interactions", json=body, headers=keyed)
    statuses = [first.status_code, r.status_code, retry.status_code]
    return r, {
        "erase_ms": round(erase_ms, 1),
        "files_holding_id_before": held_before,
        "files_holding_id_after": held_after,
        "purged_within_s": round(purged_after_s, 2) if purged else None,
        "keyed_retry_replayed": retry.headers.get("Idempotent-Replayed") == "true",
        "answers_5xx": sum(st >= 500 for st in statuses),
    }


def _stats_admin_routes(s: Served, http: httpx.Client) -> Result:
    """Admin traffic, then ``GET /v1/stats`` without a key: which admin routes it shows."""
    key = ADMIN if s.admin else AUTH
    admin = http.get("/v1/admin/reload", headers=key)
    r = http.get("/v1/stats")
    shown = []
    if r.status_code == 200:
        shown = sorted(
            {x["route"] for x in r.json()["latency"] if x["route"].startswith("/v1/admin")}
        )
    with_admin = http.get("/v1/stats", headers=ADMIN) if s.admin else None
    return r, {
        "admin_call": admin.status_code,
        "admin_routes_shown_without_key": shown,
        "admin_routes_shown_to_admin_key": None
        if with_admin is None
        else sorted(
            {x["route"] for x in with_admin.json()["latency"] if x["route"].startswith("/v1/admin")}
        ),
    }


def _api_docs(s: Served, http: httpx.Client) -> Result:
    """``/docs`` and ``/redoc``: served? from a CDN? with a Content-Security-Policy?"""
    note: dict[str, Any] = {}
    r = None
    for path in ("/docs", "/redoc"):
        r = http.get(path)
        note[path] = {
            "status": r.status_code,
            "cdn_scripts": "cdn.jsdelivr.net" in r.text,
            "csp": "content-security-policy" in r.headers,
        }
    return r, note


def _bundle_link_out(s: Served, http: httpx.Client) -> Result:
    """A bundle inside ``bundles_dir`` whose weights file is a symlink to a file outside
    it (a valid one: only the link is wrong), reloaded with the admin key."""
    if not s.admin:
        return None, {"skipped": "needs --admin-key"}
    bundle = s.workdir / "bundles" / "linked"
    outside = s.workdir / "outside"
    if not bundle.exists():
        outside.mkdir(exist_ok=True)
        shutil.copytree(s.bundle, bundle, ignore=shutil.ignore_patterns("serving-cache"))
        (bundle / "weights.safetensors").rename(outside / "weights.safetensors")
        (bundle / "weights.safetensors").symlink_to(outside / "weights.safetensors")
    r = http.post("/v1/admin/reload", json={"bundle_path": "linked"}, headers=ADMIN)
    wait_for(lambda: http.get("/v1/admin/reload", headers=ADMIN).json()["status"] != "loading", 120)
    status = http.get("/v1/admin/reload", headers=ADMIN).json()
    serving = http.get("/readyz").status_code
    return r, {
        "reload": status.get("status"),
        "error": (status.get("error") or "")[:160],
        "readyz": serving,
        "answers_5xx": int(serving >= 500),
    }


def _micrec(s: Served, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**s.env, "PYTHONPATH": str(s.repo)}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=s.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _registry_link_out(s: Served, http: httpx.Client) -> Result:
    """A registry with one real version, and ``versions/v0002`` planted as a symlink to a
    (valid) version directory outside the registry: ``micrec bundles promote v0002``."""
    registry = s.workdir / "registry"
    planted = s.workdir / "planted-version"
    shutil.rmtree(registry, ignore_errors=True)
    shutil.rmtree(planted, ignore_errors=True)
    added = _micrec(s, "bundles", "--registry", str(registry), "add", str(s.bundle))
    shutil.copytree(registry / "versions" / "v0001", planted)
    os.symlink(planted, registry / "versions" / "v0002")
    promote = _micrec(s, "bundles", "--registry", str(registry), "promote", "v0002")
    current = os.readlink(registry / "current") if (registry / "current").is_symlink() else None
    return None, {
        "add_exit": added.returncode,
        "promote_exit": promote.returncode,
        "promote_says": (promote.stderr.strip().splitlines() or [""])[-1][:200],
        "current": current,
    }


def _popular(http: httpx.Client, domain: str) -> list[tuple[str, float]]:
    r = http.post("/v1/recommend", json={"domain": domain, "n": 500})
    return [(i["item_id"], i["score"]) for i in r.json()["items"] if i["source"] == "popular"]


def _popularity_fake_users(s: Served, http: httpx.Client) -> Result:
    """2 x 1,000 rows from made-up distinct users on the domain's median item, from one
    key; then 3 keys x 30 users on another item (legitimate traffic from several
    clients). Where both items rank among the popular, and whether every row is stored."""
    ranked = _popular(http, s.domain)
    target = ranked[len(ranked) // 2][0]
    control = ranked[(3 * len(ranked)) // 4][0]
    before = {i: (k + 1, sc) for k, (i, sc) in enumerate(ranked)}
    tag = uuid.uuid4().hex[:6]
    statuses = []
    for batch in range(2):
        users = [f"fake-{tag}-{batch}-{k}" for k in range(1000)]
        rows = [{"user_id": u, "item_id": target} for u in users]
        r = http.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
        statuses.append(r.status_code)
        if r.status_code == 200:
            s.acked += [(u, target) for u in users]
    for n, key in enumerate((AUTH["X-API-Key"], *EXTRA_KEYS)):
        users = [f"client-{tag}-{n}-{k}" for k in range(30)]
        rows = [{"user_id": u, "item_id": control} for u in users]
        r = http.post("/v1/interactions", json={"interactions": rows}, headers={"X-API-Key": key})
        statuses.append(r.status_code)
        if r.status_code == 200:
            s.acked += [(u, control) for u in users]
    after = {i: (k + 1, sc) for k, (i, sc) in enumerate(_popular(http, s.domain))}
    return r, {
        "target_rank_before": before[target][0],
        "target_rank_after": after[target][0],
        "target_score": [before[target][1], after[target][1]],
        "top_score": ranked[0][1],
        "control_score": [before[control][1], after[control][1]],
        "answers_5xx": sum(st >= 500 for st in statuses),
    }


def _acknowledged_kept(s: Served, http: httpx.Client) -> Result:
    """Every interaction the attacks above had acknowledged is in its user's history."""
    lost, r = 0, None
    for user, item in s.acked:
        r = http.get(f"/v1/users/{user}/history", headers=AUTH)
        if r.status_code != 200 or not any(item in ids for ids in r.json()["domains"].values()):
            lost += 1
    return r, {"acknowledged": len(s.acked), "acknowledged_lost": lost}


ROUND3: dict[str, Attack] = {
    "erasure-copies-in-store-files": _erasure_copies,
    "stats-admin-routes-without-key": _stats_admin_routes,
    "api-docs-from-cdn": _api_docs,
    "bundle-weights-linked-out": _bundle_link_out,
    "registry-version-linked-out": _registry_link_out,
    "popularity-2x1000-fake-users": _popularity_fake_users,
    "acknowledged-writes-kept": _acknowledged_kept,
}
