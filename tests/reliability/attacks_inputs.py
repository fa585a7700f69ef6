"""The input findings of issue 22 ("Round 3: inputs") as attacks for
``python -m tests.reliability.attacks``: a catalogue picture too large to decode, interaction
timestamps out of range (and what they do to a retrain), a user id holding "/", a 4,200-digit
``n``, look-alike item ids. Each takes the running service and a client and returns the
answer it is judged by plus notes (docs/results/reliability.md, "Round 3: inputs").
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from PIL import Image

from tests.reliability.procs import AUTH

if TYPE_CHECKING:
    from tests.reliability.attacks import Attack, Served

Result = tuple[httpx.Response | None, dict[str, Any]]


def _big_jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "JPEG", quality=10)
    return buf.getvalue()


def _get(http: httpx.Client, path: str, **params: Any) -> httpx.Response | str:
    """The answer, or what went wrong on the connection (a dropped one is a finding too)."""
    try:
        return http.get(path, params=params or None, headers=AUTH)
    except httpx.HTTPError as err:
        return type(err).__name__


def _status(r: httpx.Response | str) -> int | str:
    return r if isinstance(r, str) else r.status_code


def _catalogue_picture(s: Served, http: httpx.Client) -> Result:
    """A 5200x5000 JPEG (a few hundred KB) as a bundle item's picture: its picture and
    every page that lists the item."""
    data = _big_jpeg(5200, 5000)
    (s.images / f"{s.item}.jpg").write_bytes(data)
    picture = _get(http, f"/v1/items/{quote(s.item, safe='')}/image")
    listed = _get(http, "/v1/items", domain=s.domain, limit=100)
    found = _get(http, "/v1/items", ids=s.item)
    flag = None
    if isinstance(found, httpx.Response) and found.status_code == 200:
        flag = found.json()["items"][0]["image"]
    return picture if isinstance(picture, httpx.Response) else None, {
        "file_bytes": len(data),
        "picture": _status(picture),
        "list_page": _status(listed),
        "ids_page": _status(found),
        "image_flag": flag,
        "detail": picture.json().get("detail") if isinstance(picture, httpx.Response) else None,
    }


RETRAIN_SPLIT = """
import json, sys, tempfile
from pathlib import Path
from app.learning.export import export_dataset
from app.store.sqlite import SQLiteStore
from model.data.writer import bundle_training_data
from model.retrain import Window, split_by_time
db, bundle, user = sys.argv[1:4]
out = {}
with tempfile.TemporaryDirectory() as tmp:
    try:
        exp = export_dataset(SQLiteStore(Path(db)), Path(bundle), Path(tmp) / "export", progress=False)
        out["export_skipped_bad_timestamp"] = exp.counts.get("rows_skipped_bad_timestamp")
        until = bundle_training_data(Path(bundle)).trained_until()
        cut = split_by_time(Path(tmp) / "export", Path(tmp) / "train", Window(0.1), until)
        hold = (Path(tmp) / "train" / "holdout.csv").read_text().splitlines()
        out["retrain_split"] = "ok"
        out["window_rows"] = cut.n_window
        out["window_rows_of_attacker"] = sum(line.startswith(user + ",") for line in hold)
    except Exception as err:
        out["retrain_split"] = f"{type(err).__name__}: {str(err)[:80]}"
print(json.dumps(out))
"""


def _retrain_split(s: Served, user: str) -> dict[str, Any]:
    return retrain_split(s.repo, s.db, s.bundle, user)


def retrain_split(repo: Path, db: Path, bundle: Path, user: str) -> dict[str, Any]:
    """Export the store ``db`` and cut the retrain window (what `micrec retrain` does
    first) with the code in ``repo``, in a child process; how many window rows are
    ``user``'s."""
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", RETRAIN_SPLIT, str(db), str(bundle), user]
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"retrain_split": f"exit {done.returncode}: {done.stderr[-200:]}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _timestamp(name: str, stamp: Any) -> Attack:
    def attack(s: Served, http: httpx.Client) -> Result:
        # 40 honest rows of the last minutes, then the attacker's 4: the window (the newest
        # 10 % of new rows) should be honest rows
        now = time.time()
        honest = [
            {"user_id": f"honest-{name}-{k}", "item_id": s.item, "timestamp": now - 60 * k}
            for k in range(40)
        ]
        http.post("/v1/interactions", json={"interactions": honest}, headers=AUTH)
        user = f"stamp-{name}"
        ts = stamp() if callable(stamp) else stamp
        rows = [{"user_id": user, "item_id": s.item, "timestamp": ts}] * 4
        r = http.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
        return r, _retrain_split(s, user)

    return attack


def _slash_user(s: Served, http: httpx.Client) -> Result:
    """A user id with "/" is written, read back and erased through its URL-encoded path."""
    user = "acme/42"
    rows = [{"user_id": user, "item_id": s.item}]
    posted = http.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    path = "/v1/users/" + quote(user, safe="")
    before = http.get(path + "/history", headers=AUTH)
    erase = http.delete(path, headers=AUTH)
    after = http.get(path + "/history", headers=AUTH)
    recommend = http.post("/v1/recommend", json={"user_id": user, "domain": s.domain}, headers=AUTH)
    return erase, {
        "write": posted.status_code,
        "read_back": before.status_code,
        "read_back_known_user": before.json().get("known_user") if before.is_success else None,
        "history_after_erase": after.status_code,
        "known_user_after_erase": recommend.json()["history"]["known_user"]
        if recommend.is_success
        else None,
    }


def _huge_n(s: Served, http: httpx.Client) -> Result:
    body = '{"domain": "%s", "n": %s}' % (s.domain, "7" * 4200)  # noqa: UP031 - raw JSON
    r = http.post("/v1/recommend", content=body, headers={"Content-Type": "application/json"})
    return r, {"request_bytes": len(body), "echoed": "7" * 100 in r.text}


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _look_alike(kind: str) -> Attack:
    forms = {"trailing-space": lambda i: i + " ", "fullwidth": _fullwidth, "upper": str.upper}

    def attack(s: Served, http: httpx.Client) -> Result:
        item_id = forms[kind](s.item)
        body = {"item_id": item_id, "domain": s.domain, "title": "look-alike"}
        r = http.post("/v1/items", json=body, headers=AUTH)
        answer = r.json()
        return r, {
            "sent": item_id,
            "item_id": answer.get("item_id"),
            "detail": answer.get("detail"),
        }

    return attack


INPUT_ATTACKS: dict[str, Attack] = {
    # the far-future row first: on the code before, a 1e308 row stops every later split
    "interactions-timestamp-far-future": _timestamp(
        "future", lambda: time.time() + 10 * 365 * 86400
    ),
    "interactions-timestamp-1e308": _timestamp("1e308", 1e308),
    "user-id-with-slash": _slash_user,
    "recommend-n-4200-digits": _huge_n,
    "item-id-trailing-space": _look_alike("trailing-space"),
    "item-id-fullwidth": _look_alike("fullwidth"),
    "item-id-upper-case": _look_alike("upper"),
    # last: on the code before, uvicorn drops the keep-alive connection after each 500
    "catalogue-picture-5200x5000": _catalogue_picture,
}
"""Issue 22's input findings, in the order they run (after the issue 13 attacks)."""


def images_dir(workdir: Path) -> Path:
    """The served ``MICREC_ITEM_IMAGES_DIR``: empty until an attack writes a picture."""
    d = workdir / "images"
    d.mkdir(exist_ok=True)
    return d


if __name__ == "__main__":
    # python -m tests.reliability.attacks_inputs DB BUNDLE USER: the split with this tree's
    # code on a store an attack run kept (attacks.py --workdir), e.g. one the code before
    # filled with out-of-range timestamps
    from tests.reliability.procs import REPO

    db_arg, bundle_arg, user_arg = sys.argv[1:4]
    print(json.dumps(retrain_split(REPO, Path(db_arg), Path(bundle_arg), user_arg)))
