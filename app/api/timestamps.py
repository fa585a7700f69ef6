"""Interaction timestamps: the one rule for what the API accepts and what exports keep.

A timestamp is unix seconds, finite, at least 0 and at most ``max_timestamp_skew_s``
(default one day) past the clock of whoever checks it. The API refuses anything else
with a 422 (app/users/interactions.py; the finite and >= 0 parts are in the schema). Exports
(app/learning/export.py), and so retraining, drop stored rows that break it and count them: rows
stored before the rule existed must neither crash a retrain (``1e308`` does not fit the
int64 the training data uses) nor, stamped far in the future, make up the newest rows,
the ones the evaluation window is taken from.
"""

from __future__ import annotations

import math

DEFAULT_TIMESTAMP_SKEW_S = 86_400.0
"""Default of ``max_timestamp_skew_s``: clients' clocks may run ahead by up to a day."""


def in_range(ts: float, latest: float) -> bool:
    """``ts`` is finite, >= 0 and <= ``latest`` (NaN fails every comparison)."""
    return math.isfinite(ts) and 0 <= ts <= latest
