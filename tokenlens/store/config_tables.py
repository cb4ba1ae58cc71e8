"""The configuration sections shared through a store (`config_section`, model `ConfigSection`; see
`tokenlens.config_sync`): one row per section changed through a gateway's API, with a version that every
change raises by one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import peewee as pw

from tokenlens.store.models import ConfigSection

if TYPE_CHECKING:
    from tokenlens.store.queries import Store


class ConfigTable:
    """The `config_section` rows of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.model = store.bound(ConfigSection)

    def put(self, name: str, data: str, now: float) -> int:
        """Keep `data` (JSON text) as section `name`: version 1 for a new section, else one more than the
        stored one; returns the version (one write transaction)."""
        m = self.model
        upsert = m.insert(name=name, version=1, data=data, updated_at=now).on_conflict(
            conflict_target=[m.name],
            update={m.version: m.version + 1, m.data: pw.EXCLUDED.data, m.updated_at: pw.EXCLUDED.updated_at},
        )
        with self.store.connection(), self.store.write_transaction():
            upsert.execute()
            return int(m.select(m.version).where(m.name == name).scalar())

    def all(self) -> list[tuple[str, int, str]]:
        """Every section: (name, version, data as JSON text)."""
        m = self.model
        with self.store.connection():
            rows: list[tuple[str, int, str]] = list(m.select(m.name, m.version, m.data).tuples())  # type: ignore[arg-type]
        return [(str(name), int(version), str(data)) for name, version, data in rows]
