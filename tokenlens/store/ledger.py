"""The shared ledger's table (`ledger_bucket`, model `LedgerBucket`): one row per cap bucket (scope, day or
month, period key) with the spend and calls recorded and the headroom leased to gateways
(`tokenlens.shared_ledger`). Every statement goes through the model; a lease is one conditional UPDATE, so
that gateways sharing the store never lease past a cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from tokenlens.store.models import LedgerBucket

if TYPE_CHECKING:
    import peewee as pw

    from tokenlens.store.queries import Store

Key = tuple[str, str, str]  # (scope, period, period key)


class LedgerRow(NamedTuple):
    spent_usd: float
    reserved_usd: float
    calls: int
    reserved_calls: int


class LedgerTable:
    """The `ledger_bucket` rows of one store. Each method opens the store's connection for its block (wrap
    several in `store.connection()` to share one); the writes run in one write transaction each."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.model = store.bound(LedgerBucket)

    def _at(self, key: Key) -> pw.Expression:
        m = self.model
        scope, period, period_key = key
        return (m.scope == scope) & (m.period == period) & (m.period_key == period_key)

    def check(self) -> int:
        """The number of rows (raises when the table cannot be read)."""
        with self.store.connection():
            return int(self.model.select().count())

    def row(self, key: Key) -> LedgerRow | None:
        m = self.model
        query = m.select(m.spent_usd, m.reserved_usd, m.calls, m.reserved_calls).where(self._at(key)).tuples()
        with self.store.connection():
            found = query.first()
        if found is None:
            return None
        return LedgerRow(float(found[0]), float(found[1]), int(found[2]), int(found[3]))

    def rows(self, keys: Iterable[Key]) -> dict[Key, LedgerRow]:
        """The rows of `keys` that exist."""
        out = {}
        with self.store.connection():
            for key in keys:
                found = self.row(key)
                if found is not None:
                    out[key] = found
        return out

    def create(self, key: Key, spent_usd: float, calls: int, now: float) -> None:
        """The bucket's row with what is already spent, unless it exists (the first gateway wins)."""
        scope, period, period_key = key
        insert = self.model.insert(
            scope=scope,
            period=period,
            period_key=period_key,
            spent_usd=spent_usd,
            reserved_usd=0,
            calls=calls,
            reserved_calls=0,
            updated_at=now,
        ).on_conflict_ignore()
        with self.store.connection():
            insert.execute()

    def lease(
        self,
        key: Key,
        usd: float,
        calls: int,
        now: float,
        *,
        limit_usd: float | None = None,
        below_usd: float | None = None,
        limit_calls: int | None = None,
    ) -> tuple[bool, LedgerRow | None]:
        """Reserve (usd, calls) more in the row of `key` if it stays within the limits: spent + reserved + usd
        <= `limit_usd`, spent + reserved < `below_usd`, calls + reserved calls + calls <= `limit_calls` (None:
        no such limit). Whether it was granted, and the row after it (one write transaction)."""
        m = self.model
        update = m.update(
            reserved_usd=m.reserved_usd + usd, reserved_calls=m.reserved_calls + calls, updated_at=now
        ).where(self._at(key))
        if below_usd is not None:
            update = update.where(m.spent_usd + m.reserved_usd < below_usd)
        elif limit_usd is not None:
            update = update.where(m.spent_usd + m.reserved_usd + usd <= limit_usd)
        if limit_calls is not None:
            update = update.where(m.calls + m.reserved_calls + calls <= limit_calls)
        with self.store.connection(), self.store.write_transaction():
            granted = update.execute() == 1
            return granted, self.row(key)

    def settle(self, deltas: Mapping[Key, tuple[float, int, float, int]], now: float) -> None:
        """Per key (spent usd, calls, leased usd, leased calls): add the spend and calls, take the leased
        amounts off the reservations (one write transaction for all)."""
        m = self.model
        with self.store.connection(), self.store.write_transaction():
            for key, (spent, counted, lease_usd, lease_calls) in deltas.items():
                m.update(
                    spent_usd=m.spent_usd + spent,
                    calls=m.calls + int(counted),
                    reserved_usd=m.reserved_usd - lease_usd,
                    reserved_calls=m.reserved_calls - int(lease_calls),
                    updated_at=now,
                ).where(self._at(key)).execute()
