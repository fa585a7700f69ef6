"""Interactions: append users' events to their stored histories and to item popularity
(no HTTP; app/http/routers/interactions.py calls this through ``InteractionsDep``).

Popularity counts distinct users per item, and at most ``popularity_key_cap`` of them per
API key (``source``, a pseudonym of the key): one key can post any user ids it likes, so
without the cap a key posting 2 x 1,000 rows of made-up users made any item the most
popular one (issue 22). Rows beyond the cap are stored in the histories as usual; only
their count is left out. The cost and the figures are in docs/results/reliability.md."""

from __future__ import annotations

import time
from collections.abc import Sequence

from app.api.errors import InvalidInput, PayloadTooLarge
from app.api.schemas import InteractionIn, InteractionsResponse, RejectedRow
from app.api.timestamps import in_range
from app.api.validation import shown
from app.lifecycle.parts import Resource
from app.store.base import Interaction, StoreUnavailable


class Interactions(Resource):
    def add(self, rows: Sequence[InteractionIn], *, source: str = "") -> InteractionsResponse:
        """Append valid rows to user histories + popularity; reject the others per row.
        ``source``: who posted them (``app.api.ids.key_source`` of the API key)."""
        if len(rows) > self.settings.max_batch:
            raise PayloadTooLarge(
                f"batch has {len(rows)} rows; the limit is max_batch={self.settings.max_batch}"
            )
        state = self.require_state()
        now = time.time()
        self._check_timestamps(rows, now)
        accepted: list[Interaction] = []
        rejected: list[RejectedRow] = []
        looked_up: dict[str, str | None] = {}
        for k, row in enumerate(rows):
            domain = state.item_domain(row.item_id)
            if domain is None:
                if row.item_id not in looked_up:
                    looked_up[row.item_id] = self._store_item_domain(row.item_id)
                domain = looked_up[row.item_id]
            if domain is None:
                rejected.append(RejectedRow(index=k, item_id=row.item_id, reason="unknown item_id"))
                continue
            if row.domain is not None and row.domain != domain:
                rejected.append(
                    RejectedRow(
                        index=k,
                        item_id=row.item_id,
                        reason=f"domain mismatch: item is in {shown(domain)}, not {shown(row.domain)}",
                    )
                )
                continue
            ts = row.timestamp if row.timestamp is not None else now
            accepted.append(Interaction(row.user_id, row.item_id, domain, ts))
        if accepted:
            with self.popularity.local_write() as book:
                try:
                    increments = self.store.add_interactions(
                        accepted,
                        self.settings.history_cap,
                        source=source,
                        source_cap=self.settings.popularity_key_cap,
                    )
                except StoreUnavailable as err:
                    raise self.health.unavailable("interactions", err) from None
                book.add(increments)
            self.health.ok()
        return InteractionsResponse(accepted=len(accepted), rejected=rejected)

    def _check_timestamps(self, rows: Sequence[InteractionIn], now: float) -> None:
        """422 for the whole batch (nothing written) if a row's stamp is out of range: a
        far-future stamp would sit among the newest rows for ever (the retrain window)."""
        skew = self.settings.max_timestamp_skew_s
        latest = now + skew
        for k, row in enumerate(rows):
            if row.timestamp is not None and not in_range(row.timestamp, latest):
                # The value is not echoed (it may be 1e308): the bound says what to send.
                raise InvalidInput(
                    f"interactions[{k}].timestamp is out of range: unix seconds from 0 to "
                    f"{latest:.0f} (the server's clock plus max_timestamp_skew_s={skew:g})"
                )

    def _store_item_domain(self, item_id: str) -> str | None:
        """Domain of an item another replica registered that we have not synced yet."""
        try:
            item = self.store.get_item(item_id)
        except StoreUnavailable as err:
            raise self.health.unavailable("interactions", err, attempted=False) from None
        return item.domain if item is not None else None
