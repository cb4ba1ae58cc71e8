"""A gateway's parts built as the daemon builds them (`tokenlens.runtime.build_runtime`), on a real store in a
temporary directory, for the addon, web and CLI tests that run without the proxy."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tokenlens.app import AppDeps
from tokenlens.config import Settings
from tokenlens.records import CallRecord
from tokenlens.runtime import build_runtime


def records_as_they_are(record: CallRecord) -> CallRecord:
    """A writer input for tests that submit finished records."""
    return record


@contextlib.contextmanager
def app_deps(
    home: Path,
    settings: Settings,
    *,
    prepare: Callable[[Any], CallRecord] | None = records_as_they_are,
    web_port: int = 0,
    shared: bool = False,
    readonly: bool = False,
    config_file: Path | None = None,
) -> Iterator[AppDeps]:
    """Deps with `settings` and the store `home/tokenlens.db` (or `settings.storage.url`); the background
    services are not started. `prepare`: how the writer turns what is submitted into a record (default: records
    are submitted finished; None: the daemon's record builder, which takes an Exchange). Closed after."""
    runtime = build_runtime(
        settings, home, config_file, shared=shared, web_port=web_port, prepare=prepare, readonly=readonly
    )
    try:
        yield runtime.deps
    finally:
        runtime.close()
