"""The views SQL consumers query, one per file in the repository's ``sql/`` folder.

The package carries that folder as ``pipeline/sql`` (in the source tree a
symbolic link to ``../sql``, in a wheel the files themselves) and reads it
with ``importlib.resources``, so an installed pricecast creates its views
wherever it runs, without a checkout beside it.

Views are kept in step with their SQL like repeatable migrations: every time
the schema is ensured, each view whose file changed (by SHA-256, recorded in
``consumer_views``) is dropped and created again, with the views that depend
on it, in one transaction. A new database gets them all on creation; a
database of an older release gets the new definitions on its first run.
The SQL is portable: SQLite, PostgreSQL and MariaDB.

Each file's header documents the view and its columns (``view_docs``). On
PostgreSQL those texts become the view's and its columns' comments, so a
consumer browsing the database (psql, a BI tool's catalogue) reads them;
SQLite has no comments, and MariaDB none on views.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.db.schema import consumer_views
from pipeline.errors import ConfigurationError
from pipeline.files import sha256_bytes

logger = logging.getLogger(__name__)

#: The folder of the view files, inside the ``pipeline`` package.
SQL_DIR = resources.files("pipeline") / "sql"
#: Views in dependency order: each may read the ones before it.
VIEWS = ("latest_forecasts", "forecast_accuracy", "model_leaderboard")


def _read(name: str) -> str:
    """The text of view ``name``'s file.

    Raises:
        ConfigurationError: the file is missing: a package built without its views, or
            a checkout made without symbolic links (``pipeline/sql`` is then a text file).
    """
    path = SQL_DIR / f"{name}.sql"
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ConfigurationError(
            f"view definition {path} is missing; reinstall pricecast, or in a checkout "
            "make pipeline/sql the symbolic link to ../sql that git records "
            "(git config core.symlinks true, then git checkout pipeline/sql)"
        ) from exc


def view_sql(name: str) -> str:
    """The ``select`` that defines view ``name``, comments removed."""
    text = _read(name)
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return re.sub(r";\s*$", "", body.strip())


def view_docs(name: str) -> tuple[str, dict[str, str]]:
    """The view's description and each column's, read from its file's header.

    The header is ``-- name: what it is``, more lines of description, then
    ``-- Columns:`` and one entry per column (or per comma-separated group of
    columns, which may run over lines ending in a comma), each
    ``--   column   description`` with indented continuation lines.
    """
    lines = []
    for line in _read(name).splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[3:] if line.startswith("-- ") else line[2:])
    split = next((i for i, line in enumerate(lines) if line.strip() == "Columns:"), len(lines))
    about = " ".join(" ".join(lines[:split]).split()).removeprefix(f"{name}:").strip()
    columns: dict[str, str] = {}
    names: list[str] = []
    continuing = False
    for line in lines[split + 1 :]:
        if re.match(r"^ {2}\S", line):
            head, text = _entry(line)
            new = [part.strip() for part in head.split(",") if part.strip()]
            names = names + new if continuing else new
            continuing = head.endswith(",")
            for column in names:
                columns[column] = text
        elif line.strip() and names:
            for column in names:
                columns[column] = f"{columns[column]} {line.strip()}".strip()
    return about, columns


def _entry(line: str) -> tuple[str, str]:
    """A column entry's names and its description (split at the first run of 2+ spaces)."""
    match = re.match(r"^(.*?\S)(?:\s{2,}(.*))?$", line.strip())
    assert match is not None
    return match.group(1), (match.group(2) or "").strip()


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comment_views(conn: Connection, names: list[str] | tuple[str, ...]) -> None:
    """On PostgreSQL, set each view's comment and its columns' from ``view_docs``."""
    if conn.dialect.name != "postgresql":
        return
    for name in names:
        about, columns = view_docs(name)
        conn.execute(sa.text(f"COMMENT ON VIEW {name} IS {_quoted(about)}"))
        present = {column["name"] for column in sa.inspect(conn).get_columns(name)}
        for column, text in columns.items():
            if column in present:
                conn.execute(sa.text(f"COMMENT ON COLUMN {name}.{column} IS {_quoted(text)}"))


def sync_views(conn: Connection) -> list[str]:
    """Create or replace the views whose SQL or documentation changed; returns the names
    recreated."""
    wanted = {name: sha256_bytes(_read(name).encode()) for name in VIEWS}
    stored = dict(conn.execute(sa.select(consumer_views.c.name, consumer_views.c.sha256)).all())
    existing = set(sa.inspect(conn).get_view_names())
    first_changed = next(
        (
            index
            for index, name in enumerate(VIEWS)
            if stored.get(name) != wanted[name] or name not in existing
        ),
        None,
    )
    if first_changed is None:
        return []
    changed = VIEWS[first_changed:]
    for name in reversed(changed):
        conn.execute(sa.text(f"DROP VIEW IF EXISTS {name}"))
    for name in changed:
        conn.execute(sa.text(f"CREATE VIEW {name} AS\n{view_sql(name)}"))
    comment_views(conn, changed)
    conn.execute(sa.delete(consumer_views).where(consumer_views.c.name.in_(changed)))
    conn.execute(
        sa.insert(consumer_views), [{"name": name, "sha256": wanted[name]} for name in changed]
    )
    logger.info("created views %s", ", ".join(changed))
    return list(changed)
