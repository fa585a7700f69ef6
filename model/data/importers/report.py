"""What an import kept and dropped, per domain and in total (printed by ``micrec data
import`` and written to ``import.json``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DomainReport:
    """Counts of one domain's import (printed by :meth:`ImportReport.format`)."""

    name: str
    reviews: str
    meta: str | None
    rows_read: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    users: int = 0
    items: int = 0
    meta_rows_read: int = 0
    meta_malformed: int = 0
    items_with_meta: int = 0
    items_with_image: int = 0

    def format(self) -> str:
        # In pipeline order, so the counts read as the successive filters.
        dropped = ", ".join(
            f"{self.dropped[k]:,} {label}" for k, label in DROP_REASONS.items() if self.dropped[k]
        )
        lines = [
            f"{self.name}: {self.rows_read:,} rows read, {self.kept:,} kept"
            + (f"; dropped: {dropped}" if dropped else ""),
            f"  {self.users:,} users, {self.items:,} items "
            f"({self.items_with_meta:,} with metadata, {self.items_with_image:,} with image)",
        ]
        if self.meta is not None:
            bad = f", {self.meta_malformed:,} malformed skipped" if self.meta_malformed else ""
            lines.append(f"  metadata: {self.meta_rows_read:,} rows read{bad}")
        return "\n".join(lines)


# Keys of DomainReport.dropped and how the summary names them.
DROP_REASONS = {
    "malformed": "malformed (skipped)",
    "below_min_rating": "below --min-rating",
    "item_in_earlier_domain": "item already in an earlier domain",
    "duplicate_user_item": "duplicate user-item pair",
    "user_too_few_domains": "user in too few domains",
}


@dataclass
class ImportReport:
    """Result of an import: where it was written and what was kept/dropped."""

    format_name: str
    out: Path
    domains: list[DomainReport]
    users: int = 0
    users_multi_domain: int = 0
    interactions: int = 0
    items: int = 0

    def format(self) -> str:
        """Human-readable summary, one block per domain then a total line."""
        blocks = [d.format() for d in self.domains]
        blocks.append(
            f"total: {self.interactions:,} interactions, {self.users:,} users "
            f"({self.users_multi_domain:,} in 2+ domains), {self.items:,} items -> {self.out}"
        )
        return "\n".join(blocks)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (written to ``import.json`` next to the CSV files)."""
        # Not dataclasses.asdict: it rebuilds the Counter from (key, value) pairs.
        domains = [{**vars(d), "dropped": dict(d.dropped)} for d in self.domains]
        return {
            "format": self.format_name,
            "out": str(self.out),
            "users": self.users,
            "users_multi_domain": self.users_multi_domain,
            "interactions": self.interactions,
            "items": self.items,
            "domains": domains,
        }
