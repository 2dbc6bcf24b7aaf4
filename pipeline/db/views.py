"""The views SQL consumers query, one per file in the repository's ``sql/`` folder.

Views are kept in step with their SQL like repeatable migrations: every time
the schema is ensured, each view whose file changed (by SHA-256, recorded in
``consumer_views``) is dropped and created again, with the views that depend
on it, in one transaction. A new database gets them all on creation; a
database of an older release gets the new definitions on its first run.
The SQL is portable: SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.db.schema import consumer_views
from pipeline.errors import ConfigurationError
from pipeline.files import sha256_bytes

logger = logging.getLogger(__name__)

#: The folder of the view files: ``sql/`` beside the ``pipeline`` package.
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
#: Views in dependency order: each may read the ones before it.
VIEWS = ("latest_forecasts", "forecast_accuracy", "model_leaderboard")


def view_sql(name: str) -> str:
    """The ``select`` that defines view ``name``, comments removed.

    Raises:
        ConfigurationError: the file is missing (pricecast must run from its source tree).
    """
    path = SQL_DIR / f"{name}.sql"
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"view definition {path} is missing; install pricecast from its source tree "
            "(pip install -e .)"
        ) from exc
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return re.sub(r";\s*$", "", body.strip())


def sync_views(conn: Connection) -> list[str]:
    """Create or replace the views whose SQL changed; returns the names recreated."""
    wanted = {name: sha256_bytes(view_sql(name).encode()) for name in VIEWS}
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
    conn.execute(sa.delete(consumer_views).where(consumer_views.c.name.in_(changed)))
    conn.execute(
        sa.insert(consumer_views), [{"name": name, "sha256": wanted[name]} for name in changed]
    )
    logger.info("created views %s", ", ".join(changed))
    return list(changed)
