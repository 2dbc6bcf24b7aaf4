"""What the engines' ``bulk_upsert`` statements share: quoted names, the NULL-safe
comparison, the replace rule, and the driver's errors raised as SQLAlchemy's.

The statements are SQL text run on the driver's cursor (``executemany``, COPY),
which SQLAlchemy does not see: ``sqlalchemy_errors`` gives callers the
exceptions ``Connection.execute`` would raise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection


class ReplaceRule(Protocol):
    """Builds the SQL condition under which an incoming row may replace a stored one.

    Called with ``new(column)`` and ``old(column)``, which return the SQL
    expressions of a column of the incoming and of the stored row, and the
    dialect name (``sqlite``, ``postgresql``, ``mysql`` or ``mariadb``).
    On MySQL/MariaDB the condition may read at most one updated column of
    the stored row (see ``pipeline.db.bulk.mysql``).
    """

    def __call__(self, new: Callable[[str], str], old: Callable[[str], str], dialect: str) -> str:
        """The condition, as SQL text."""
        ...


@contextlib.contextmanager
def sqlalchemy_errors(conn: Connection, statement: str) -> Iterator[None]:
    """Raise the driver's errors as SQLAlchemy's, as ``Connection.execute`` would."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, dbapi_error, dialect=conn.dialect
        ) from exc


@dataclass
class TableSql:
    """Quoted names and the dialect's NULL-safe comparison."""

    conn: Connection
    table: sa.Table

    def __post_init__(self) -> None:
        self.dialect = self.conn.dialect.name
        self.quote = self.conn.dialect.identifier_preparer.quote
        self.target = self.quote(self.table.name)
        self.full_target = self.conn.dialect.identifier_preparer.format_table(self.table)

    def names(self, names: Iterable[str], prefix: str = "") -> str:
        return ", ".join(prefix + self.quote(name) for name in names)

    def differs(self, left: str, right: str) -> str:
        if self.dialect == "sqlite":
            return f"{left} IS NOT {right}"
        if self.dialect == "postgresql":
            return f"{left} IS DISTINCT FROM {right}"
        return f"NOT ({left} <=> {right})"

    def update_condition(
        self, updated: Sequence[str], new: str, old: str, replace_if: ReplaceRule | None
    ) -> str:
        """``(some column differs) AND rule`` between rows aliased ``new`` and ``old``.

        The cheap comparison comes first: for unchanged rows, the usual case of a
        reload, the rule is never evaluated.
        """
        quote = self.quote
        changed = " OR ".join(
            self.differs(f"{new}.{quote(name)}", f"{old}.{quote(name)}") for name in updated
        )
        if replace_if is None:
            return f"({changed})"
        rule = replace_if(
            lambda name: f"{new}.{quote(name)}", lambda name: f"{old}.{quote(name)}", self.dialect
        )
        return f"({changed}) AND ({rule})"
