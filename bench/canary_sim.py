"""A simulated population against real service replicas during a canary
(app/lifecycle/canary.py): who sees which version, what they click, what the rule decides.

Each simulated user has a known preference (``Population.liked``: the items they like);
shown a list, they see every item (an ``impression``) and click a liked one with
probability ``p_liked``, any other with ``p_other`` (``POST /v1/feedback``). A user's
requests alternate between the replicas (the first one drawn at random), so every user
with two requests before the decision was answered by both; every answer's
``model_version`` is recorded per user and replica, so a user who saw two versions while
the canary ran is found. The canary is
started through the admin API of one replica; the run goes on until it is decided (and a
little after, to see the switch), counting every request that did not succeed.

    python bench/canary_sim.py --out docs/results/online-sim.json

runs the whole scenario on real tiny bundles (trained here: the current one, one that
learned the population's pattern, one trained on random items) with two ``micrec serve``
replicas on a private Redis: the better candidate is promoted, then a random-item candidate
is rolled back. ``tests/reliability/test_canary_sim.py`` drives the same code (small, fake
engines; a real-bundle variant is slow).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

DECISION_MARGIN_S = 0.05
"""Answers this close before the registry's event of the decision are not checked for a
stable version: the decision is recorded in the store just before that event."""


@dataclass
class Population:
    domain: str
    liked: dict[str, set[str]]
    """user id -> the items they like (the known preference)."""
    p_liked: float = 0.5
    p_other: float = 0.02
    anonymous_share: float = 0.0
    """Share of requests sent with a ``session_id`` instead of the ``user_id``."""

    @property
    def users(self) -> list[str]:
        return sorted(self.liked)


@dataclass
class SimRun:
    """What one canary run saw (JSON-able through :meth:`to_json`)."""

    version: str
    share: float
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    answers: list[tuple[float, str, int, str]] = field(default_factory=list)
    """(wall time, user id or session id, replica, model version) of every answer."""
    decided_at: float | None = None
    """Wall time of the decision (the registry's event; the store's record is written
    a moment before it)."""
    shown: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    clicks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    requests_until_decided: int | None = None
    outcome: str | None = None
    decision: str | None = None
    seconds: float = 0.0

    @property
    def seen(self) -> dict[str, dict[int, set[str]]]:
        """user or session -> replica -> model versions answered before the decision."""
        out: dict[str, dict[int, set[str]]] = defaultdict(dict)
        end = self.decided_at if self.decided_at is not None else float("inf")
        for t, user, k, version in self.answers:
            if t < end - DECISION_MARGIN_S:
                out[user].setdefault(k, set()).add(version)
        return out

    def flipped(self) -> list[str]:
        """Users answered by more than one version while the canary ran."""
        return [u for u, r in self.seen.items() if len(set().union(*r.values())) > 1]

    def to_json(self) -> dict[str, Any]:
        seen = self.seen
        both = [u for u, r in seen.items() if len(r) > 1]
        return {
            "version": self.version,
            "share": self.share,
            "requests": self.requests,
            "failures": len(self.failures),
            "failure_examples": self.failures[:5],
            "users_seen": len(seen),
            "users_seen_on_both_replicas": len(both),
            "users_flipped": len(self.flipped()),
            "impressions_by_version": dict(self.shown),
            "clicks_by_version": dict(self.clicks),
            "ctr_by_version": {v: round(self.clicks[v] / n, 4) for v, n in self.shown.items() if n},
            "requests_until_decided": self.requests_until_decided,
            "outcome": self.outcome,
            "decision": self.decision,
            "seconds": round(self.seconds, 2),
        }


class Simulator:
    """Drives ``clients`` (one per replica, with the API key) and ``admin`` (one replica,
    with the admin key)."""

    def __init__(
        self,
        clients: Sequence[httpx.Client],
        admin: httpx.Client,
        population: Population,
        *,
        n: int = 10,
        seed: int = 0,
        feedback_delay_s: float = 0.3,
    ) -> None:
        self.clients = list(clients)
        self.admin = admin
        self.pop = population
        self.n = n
        self.rng = np.random.default_rng(seed)
        self._next_replica: dict[str, int] = {}
        self.feedback_delay_s = feedback_delay_s
        """Feedback is sent this long after its answer: records are written off the
        request path (record_flush_s) and a 404 before that is expected."""
        self._pending: list[tuple[float, list[dict[str, Any]]]] = []

    def canary_status(self) -> dict[str, Any] | None:
        r = self.admin.get("/v1/admin/bundles/canary")
        r.raise_for_status()
        status: dict[str, Any] | None = r.json()["canary"]
        return status

    def wait_loaded(self, timeout: float = 120.0) -> None:
        """Until every replica has the canary loaded (before that, its share gets the
        current version: the check of stable routing starts after)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = [c.get("/readyz").json().get("bundle") or {} for c in self.clients]
            if all((b.get("canary") or {}).get("loaded") for b in ready):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the canary was not loaded on every replica: {ready}")

    def run_canary(
        self,
        version: str,
        share: str,
        *,
        max_requests: int,
        after: int = 100,
        poll_every: int = 10,
        on_request: Callable[[SimRun], None] | None = None,
    ) -> SimRun:
        """Start ``version`` as a canary for ``share`` ("50%"), drive traffic until it is
        decided (at most ``max_requests``), then ``after`` more requests."""
        t0 = time.monotonic()
        r = self.admin.post("/v1/admin/bundles/promote", json={"version": version, "canary": share})
        r.raise_for_status()
        run = SimRun(version, float(r.json()["canary"]["share"]))
        self.wait_loaded()
        left_after = after
        while run.requests < max_requests and left_after > 0:
            self._request(run)
            if on_request is not None:
                on_request(run)
            if run.requests_until_decided is None and run.requests % poll_every == 0:
                status = self.canary_status()
                if status is None or status["decided"] is not None:
                    run.requests_until_decided = run.requests
            elif run.requests_until_decided is not None:
                left_after -= 1
        self.flush(wait=True)
        self._finish(run)
        run.seconds = time.monotonic() - t0
        return run

    def _request(self, run: SimRun) -> None:
        user = str(self.rng.choice(self.pop.users))
        body: dict[str, Any] = {"domain": self.pop.domain, "n": self.n}
        if self.rng.random() < self.pop.anonymous_share:
            body["session_id"] = f"session-{user}"
        else:
            body["user_id"] = user
        ident = body.get("user_id") or body["session_id"]  # what the replicas route by
        # alternate: a random replica per request left half the users on one replica
        # before a quick decision, and the flip check saw too few of them
        first = int(self.rng.integers(len(self.clients)))
        k = self._next_replica.get(ident, first)
        self._next_replica[ident] = (k + 1) % len(self.clients)
        run.requests += 1
        try:
            r = self.clients[k].post("/v1/recommend", json=body)
        except httpx.HTTPError as err:
            run.failures.append(f"recommend: {type(err).__name__}: {err}")
            return
        if r.status_code != 200:
            run.failures.append(f"recommend {r.status_code}: {r.text[:200]}")
            return
        answer = r.json()
        version = answer["model_version"]
        run.answers.append((time.time(), ident, k, version))
        events = []
        for item in answer["items"]:
            iid = item["item_id"]
            run.shown[version] += 1
            rid = answer["recommendation_id"]
            events.append({"recommendation_id": rid, "item_id": iid, "event": "impression"})
            p = self.pop.p_liked if iid in self.pop.liked[user] else self.pop.p_other
            if self.rng.random() < p:
                run.clicks[version] += 1
                events.append({"recommendation_id": rid, "item_id": iid, "event": "click"})
        if events:
            self._pending.append((time.monotonic(), events))
        self.flush(wait=False, run=run)

    def flush(self, *, wait: bool, run: SimRun | None = None) -> None:
        """Send the feedback whose delay has passed (all of it with ``wait``)."""
        if wait and self._pending:
            time.sleep(max(0.0, self._pending[-1][0] + self.feedback_delay_s - time.monotonic()))
        now = time.monotonic()
        due = [e for t, evs in self._pending if now - t >= self.feedback_delay_s for e in evs]
        self._pending = [(t, evs) for t, evs in self._pending if now - t < self.feedback_delay_s]
        for start in range(0, len(due), 200):
            k = int(self.rng.integers(len(self.clients)))
            r = self.clients[k].post("/v1/feedback", json={"events": due[start : start + 200]})
            if r.status_code != 200 and run is not None:
                run.failures.append(f"feedback {r.status_code}: {r.text[:200]}")

    def _finish(self, run: SimRun) -> None:
        """The outcome and the rule's reason, from the registry's history."""
        r = self.admin.get("/v1/admin/bundles")
        r.raise_for_status()
        body = r.json()
        for event in reversed(body["history"]):
            if event.get("version") != run.version:
                continue
            run.decided_at = float(event.get("time", 0.0))
            if event.get("event") == "refuse":
                run.outcome = "rolled back"
                run.decision = str((event.get("report") or {}).get("reason"))
            elif event.get("event") == "promote":
                run.outcome = "promoted"
                run.decision = str(event.get("reason"))
            break


def events_at_decision(decision: str | None) -> int | None:
    """The candidate's event count the rule decided on ("... after N events")."""
    if not decision or " after " not in decision:
        return None
    return int(decision.rsplit(" after ", 1)[1].split()[0])


def main() -> int:
    import argparse

    from canary_sim_real import run_real

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=str)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--min-events", type=int, default=2000)
    ap.add_argument("--share", default="50%")
    a = ap.parse_args()
    result = run_real(users=a.users, min_events=a.min_events, share=a.share)
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
