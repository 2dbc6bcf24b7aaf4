"""The documentation names everything an operator or a SQL consumer can set or read.

A setting, a table, a view or a migration added without a word in the README (or
``docs/``) fails here, so the docs cannot silently fall behind the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.db.schema import metadata
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _docs() -> str:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return "\n".join(page.read_text() for page in pages if page.exists())


DOCS = _docs()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`PRICECAST_{name.upper()}`" in DOCS


@pytest.mark.parametrize("name", sorted(metadata.tables))
def test_every_table_is_documented(name: str) -> None:
    assert f"`{name}`" in DOCS


@pytest.mark.parametrize("path", sorted((ROOT / "sql").glob("*.sql")), ids=lambda p: p.stem)
def test_every_view_is_documented(path: Path) -> None:
    assert f"`{path.stem}`" in DOCS


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "pipeline" / "db" / "migrations" / "versions").glob("0*.py")),
    ids=lambda p: p.stem,
)
def test_every_migration_is_documented(path: Path) -> None:
    assert f"`{path.stem}`" in DOCS
