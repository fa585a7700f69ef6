"""``micrec export``: the serving bundle's training data plus what the store learned since,
as a dataset folder in the project format (model/data/writer.py), for ``micrec train``,
``micrec retrain`` and outside tools.

What is written:

* items: every item the store holds (API registrations: title, categories, description;
  the service keeps no image file, only the encoder output, so these have no image),
  then the bundle data's items not overridden by a store item (with their image);
* interactions: the bundle's training data (its dataset folder, else its serving
  histories; :func:`model.data.writer.bundle_training_data`), then every stored
  interaction (the capped histories) with its timestamp;
* erased users (``Store.erased_users()``) are left out of the bundle rows entirely and
  out of stored rows up to their erasure time (later rows are new data, app/users/erasure.py);
* rows whose item is no longer registered are skipped and counted (export.json);
* stored rows whose timestamp is not finite, negative or more than
  ``max_timestamp_skew_s`` past the export's clock are skipped and counted
  (``rows_skipped_bad_timestamp``, app/api/timestamps.py): stored before the API bounded
  timestamps, they would crash the retrain (1e308 is no int64) or fill its window.

Everything streams: the store is read in pages (``iter_items`` / ``iter_interactions``)
and rows are written as they come; memory holds the item ids and the erased-user ids.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.api.timestamps import DEFAULT_TIMESTAMP_SKEW_S, in_range
from app.store.base import Store
from model.data.dataset import ItemRecord
from model.data.writer import STORE, DatasetWriter, Row, bundle_training_data

log = logging.getLogger("micrec.export")


@dataclass
class ExportResult:
    path: Path
    meta: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.meta["counts"])


def export_dataset(
    store: Store,
    bundle_dir: Path,
    out: Path,
    *,
    replace: bool = False,
    progress: bool = True,
    batch: int = 1000,
    max_timestamp_skew_s: float = DEFAULT_TIMESTAMP_SKEW_S,
) -> ExportResult:
    """Write the export of ``bundle_dir`` + ``store`` to ``out`` (atomically)."""
    started = time.time()
    latest = started + max_timestamp_skew_s
    base = bundle_training_data(Path(bundle_dir))
    erased = store.erased_users()
    writer = DatasetWriter(out, replace=replace)
    skipped_erased = skipped_time = 0
    try:
        for it in store.iter_items(batch=batch // 2 or 1):
            writer.add_item(
                ItemRecord(it.item_id, it.domain, it.title, it.categories, it.description), STORE
            )
        for rec in base.items():
            writer.add_item(rec, "bundle")
        bar = tqdm(desc="export", unit=" rows", disable=not progress)
        for row in base.rows():
            if row.user_id in erased:
                skipped_erased += 1
            else:
                writer.add_row(row)
            bar.update()
        for r in store.iter_interactions(batch=batch):
            gone = erased.get(r.user_id)
            if not in_range(r.timestamp, latest):
                skipped_time += 1
            elif gone is not None and r.timestamp <= gone:
                skipped_erased += 1
            else:
                writer.add_row(Row(r.user_id, r.item_id, r.domain, int(r.timestamp), STORE))
            bar.update()
        bar.close()
        writer.counts["rows_skipped_erased"] = skipped_erased
        writer.counts["rows_skipped_bad_timestamp"] = skipped_time
        if skipped_time:
            log.warning(
                "export: skipped %d stored interaction(s) whose timestamp is not within "
                "0..%.0f (max_timestamp_skew_s=%g past the export's clock)",
                skipped_time,
                latest,
                max_timestamp_skew_s,
            )
        meta = {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "bundle": str(Path(bundle_dir).resolve()),
            "base": base.description,
            "base_fallback_time": base.fallback_time,
            "erased_users": len(erased),
            "max_timestamp_skew_s": max_timestamp_skew_s,
            "seconds": round(time.time() - started, 3),
        }
        path = writer.commit(meta)
    except BaseException:
        writer.abort()
        raise
    return ExportResult(path, {**meta, "counts": dict(writer.counts)})
