"""What recording served lists costs the store: bytes per record (SQLite file, Redis memory
and append-only file) and records written per second by one writer, in the batches a
worker's recording thread writes (``record_flush_s`` = 0.2 s at 1e3 rps: 200 records).

    PYTHONPATH=$PWD python bench/online_records.py --records 20000 --out docs/results/online-records

Each record is a list of ``--items`` items served to a named user (ids shaped like the demo
bundle's), as POST /v1/recommend records it; half of them then get an impression and a
click (the feedback kept with the record). The extrapolation to 1e3 rps is arithmetic on
the measured bytes per record, labelled as such in the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from redis_server import RedisServer  # bench/, the script's directory

from app.api.schemas import HistoryReport, RecommendedItem, RecommendResponse
from app.feedback.recording import RecommendationRecorder
from app.runtime.telemetry import Metrics
from app.settings import Settings
from app.store.base import Store
from app.store.online import RecommendationRecord
from app.store.redis import RedisStore
from app.store.sqlite import SQLiteStore

VERSION = "micrec-20261206-bfc6e1f8a6"


def records_of(n: int, items: int, start: int) -> list[RecommendationRecord]:
    now = time.time()
    return [
        RecommendationRecord(
            f"{(start + k) * 2654435761 % (1 << 64):016x}{start + k:016x}",
            f"u{(start + k) % 50_000:05d}",
            None,
            "office",
            VERSION,
            now,
            tuple((f"office_{(start + k * 7 + j) % 5000:04d}", "model") for j in range(items)),
            5000,
        )
        for k in range(n)
    ]


def fill(store: Store, n: int, items: int, batch: int, feedback: bool) -> dict[str, float]:
    """Write ``n`` records in batches (timed: wall and this thread's CPU, the GIL time a
    worker's recording thread takes from its requests), then feedback on half of them."""
    written = cpu = 0.0
    for start in range(0, n, batch):
        recs = records_of(min(batch, n - start), items, start)
        t0, c0 = time.perf_counter(), time.thread_time()
        store.put_recommendations(recs, 86_400, 10 * n)
        written += time.perf_counter() - t0
        cpu += time.thread_time() - c0
        if feedback:
            for r in recs[::2]:
                item = r.items[1][0]
                store.add_feedback(
                    r.recommendation_id, [(item, "impression"), (item, "click")], {"click"}
                )
    return {"write_s": written, "records_per_s": n / written, "cpu_us_per_record": cpu / n * 1e6}


def hot_path(items: int, calls: int = 200_000) -> dict[str, float]:
    """What a recommend pays on the request path: ``RecommendationRecorder.record`` (an id,
    a record appended to the queue), per call."""
    settings = Settings.model_validate({})
    recorder = RecommendationRecorder(settings, cast(Store, None), Metrics(), cast(Any, None))
    answer = RecommendResponse(
        domain="office",
        n=items,
        model_version=VERSION,
        user_embedding="inductive",
        items=[
            RecommendedItem(item_id=f"office_{j:04d}", score=1.0, source="model")
            for j in range(items)
        ],
        history=HistoryReport(stored="ok", known_user=True, items_used=5),
    )
    queue = recorder._queue
    spent = 0.0
    for _ in range(calls // 200):  # 200 per flush: 0.2 s at 1e3 rps
        t0 = time.perf_counter()
        for _ in range(200):
            recorder.record(answer, user_id="u00425", session_id=None, catalogue_size=5000)
        spent += time.perf_counter() - t0
        queue.clear()
    return {"record_us_per_call": spent / (calls // 200 * 200) * 1e6}


def sqlite_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def measure_sqlite(n: int, items: int, batch: int, feedback: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="micrec-online-") as tmp:
        path = Path(tmp) / "state.db"
        store = SQLiteStore(path)
        store.put_recommendations(records_of(1, items, 10 * n), 86_400, 10 * n)
        store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        before = sqlite_bytes(path)
        out = fill(store, n, items, batch, feedback)
        store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        after = sqlite_bytes(path)
        store.close()
    return {**out, "bytes_per_record": (after - before) / n}


def measure_redis(n: int, items: int, batch: int, feedback: bool) -> dict[str, Any]:
    with RedisServer() as server:
        store = RedisStore(server.url)
        store.put_recommendations(records_of(1, items, 10 * n), 86_400, 10 * n)
        r = store._r
        r.bgrewriteaof()
        time.sleep(1.0)
        mem0 = int(r.info("memory")["used_memory"])
        aof0 = sum(p.stat().st_size for p in server.data_dir.rglob("*.aof"))
        out = fill(store, n, items, batch, feedback)
        mem1 = int(r.info("memory")["used_memory"])
        aof1 = sum(p.stat().st_size for p in server.data_dir.rglob("*.aof"))
        sample = r.memory_usage(store._rec(records_of(1, items, 0)[0].recommendation_id))
        store.close()
    return {
        **out,
        "memory_bytes_per_record": (mem1 - mem0) / n,
        "record_key_bytes": int(sample or 0),
        "aof_bytes_per_record": (aof1 - aof0) / n,
    }


def markdown(report: dict[str, Any]) -> str:
    s, r, a = report["sqlite"], report["redis"], report["args"]
    per_day = 1000 * 86_400
    cap = 1_000_000
    rows = [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; {a['records']:,} records of {a['items']} items, a named user "
        f"each, written {a['batch']} per store call; half of them with an impression and a "
        "click.",
        "",
        "| store | bytes per record | records written per second (one writer) | writer CPU "
        "µs per record |",
        "|---|---:|---:|---:|",
        f"| SQLite (file, after a WAL checkpoint) | {s['bytes_per_record']:,.0f} | "
        f"{s['records_per_s']:,.0f} | {s['cpu_us_per_record']:.0f} |",
        f"| Redis (used_memory) | {r['memory_bytes_per_record']:,.0f} | "
        f"{r['records_per_s']:,.0f} | {r['cpu_us_per_record']:.0f} |",
        f"| Redis (append-only file) | {r['aof_bytes_per_record']:,.0f} | | |",
        "",
        f"On the request path (`RecommendationRecorder.record`: id + queue append): "
        f"{report['hot_path']['record_us_per_call']:.1f} µs per recommend.",
        "",
        "Extrapolated to 1e3 recommends per second (arithmetic on the bytes above, not a "
        "measured run):",
        "",
        "| kept | records | SQLite file | Redis memory |",
        "|---|---:|---:|---:|",
    ]
    for label, count in (
        (f"the default cap ({cap:,} records = {cap / 1000 / 60:.0f} min at 1e3 rps)", cap),
        ("one hour", 3_600_000),
        ("a day (the default TTL)", per_day),
    ):
        rows.append(
            f"| {label} | {count:,} | {count * s['bytes_per_record'] / 1e9:,.2f} GB | "
            f"{count * r['memory_bytes_per_record'] / 1e9:,.2f} GB |"
        )
    return "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--out", default="/tmp/micrec-online-records")
    a = ap.parse_args()
    report: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": vars(a),
        "sqlite": measure_sqlite(a.records, a.items, a.batch, True),
        "redis": measure_redis(a.records, a.items, a.batch, True),
        "hot_path": hot_path(a.items),
    }
    Path(a.out).with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report)
    Path(a.out).with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
