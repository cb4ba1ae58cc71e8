"""The database is reached only through `tokenlens.store`: no module outside it imports peewee (or
playhouse), runs SQL (`execute_sql`) or takes a store's database handle or bound models (`store.db`,
`store.models`). Every query lives in `tokenlens/store/`; the others call its functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "tokenlens" / "store"
FOLDERS = (ROOT / "tokenlens", ROOT / "addons", ROOT / "web")


def _outside_store() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in folder.rglob("*.py") if STORE not in p.parents)


def _ends_with_store(node: ast.expr) -> bool:
    """`store`, `self.store`, `deps().store`, `self._store`..."""
    if isinstance(node, ast.Name):
        return node.id.lstrip("_").endswith("store")
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_").endswith("store")
    return False


def problems(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("peewee", "playhouse"):
                    found.append(f"{line}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and not node.level:
            if (node.module or "").split(".")[0] in ("peewee", "playhouse"):
                found.append(f"{line}: imports from {node.module}")
        elif isinstance(node, ast.Attribute):
            if node.attr == "execute_sql":
                found.append(f"{line}: runs SQL (execute_sql)")
            elif node.attr in ("db", "models") and _ends_with_store(node.value):
                found.append(f"{line}: takes the store's {node.attr}")
    return found


@pytest.mark.parametrize("path", _outside_store(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_database_access_outside_the_store(path: Path) -> None:
    assert problems(path.read_text("utf-8")) == []


def test_the_check_finds_each_kind_of_access() -> None:
    source = (
        "import peewee as pw\n"
        "from playhouse.migrate import migrate\n"
        "def f(store, deps):\n"
        "    store.db.execute_sql('SELECT 1')\n"
        "    deps().store.models.Call.select()\n"
        "    self._store.db\n"
    )
    assert sorted(problems(source)) == [
        "1: imports peewee",
        "2: imports from playhouse.migrate",
        "4: runs SQL (execute_sql)",
        "4: takes the store's db",
        "5: takes the store's models",
        "6: takes the store's db",
    ]


def _project_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tokenlens"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tokenlens"):
            found.add(node.module or "")
    return found


@pytest.mark.parametrize("name", ["writer.py", "journal.py"])
def test_the_writer_knows_nothing_of_what_a_record_holds(name: str) -> None:
    """The database writer and its journal take built records (or a `build` callable): they import the
    record type and the store, nothing of usage, pricing, configuration or the per-call analyses."""
    imports = _project_imports(STORE / name)
    allowed = {
        "tokenlens.records",
        "tokenlens.store.batches",
        "tokenlens.store.journal",
        "tokenlens.store.queries",
    }
    assert imports <= allowed, imports
