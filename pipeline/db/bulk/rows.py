"""The rows of a ``bulk_upsert``: a data frame turned into key-sorted NumPy columns, once.

Every engine's path writes from these arrays: strings as codes into their
distinct values, dates as day numbers, floats with NaN for NULL. Building them
costs about 0.06 s for the million rows of ``benchmarks/upsert_prices.py``, and
each engine then builds only what its driver takes (tuples of Python values for
SQLite and MySQL, binary COPY data for PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

#: The kinds of column ``bulk_upsert`` writes.
STRING, DATE, FLOAT = "string", "date", "float"


@dataclass
class Column:
    """One column of the rows to write, as a NumPy array.

    ``values`` holds int64 codes into ``labels`` (-1 for NULL) for strings,
    int64 days since 1970-01-01 for dates, and float64 (NaN for NULL) for floats.
    """

    name: str
    kind: str
    values: np.ndarray
    labels: list[str] = field(default_factory=list)


@dataclass
class Rows:
    """The rows to write: de-duplicated, sorted by key, column by column."""

    columns: list[Column]
    key: list[str]
    count: int

    def by_name(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)


def _column_kind(table: sa.Table, column: sa.Column) -> str:
    kind = column.type
    if isinstance(kind, sa.Date) and not isinstance(kind, sa.DateTime):
        return DATE
    if isinstance(kind, sa.Float):
        return FLOAT
    if isinstance(kind, sa.String):
        return STRING
    raise TypeError(
        f"bulk_upsert handles string, date and float columns; "
        f"{table.name}.{column.name} is {kind!r}, use upsert_rows"
    )


def _extract(table: sa.Table, column: sa.Column, series: pd.Series) -> Column:
    kind = _column_kind(table, column)
    if kind == STRING:
        codes, uniques = pd.factorize(series, sort=True)
        return Column(column.name, kind, codes.astype(np.int64), [str(u) for u in uniques])
    if kind == FLOAT:
        try:
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {column.name} must hold numbers: {exc}") from exc
        return Column(column.name, kind, values)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        days = series.to_numpy().astype("datetime64[D]")
    else:  # datetime.date objects, or text: convert each distinct value once
        codes, uniques = pd.factorize(series)
        known = pd.to_datetime(pd.Index(uniques)).to_numpy().astype("datetime64[D]")
        days = np.append(known, np.datetime64("NaT"))[codes]
    if np.isnat(days).any():
        raise ValueError(f"column {column.name} has missing dates")
    return Column(column.name, kind, days.astype(np.int64))


def packed_key(keys: list[np.ndarray]) -> np.ndarray | None:
    """The key columns (codes and day numbers) packed into one int64, order kept.

    The last column varies fastest, by one per unit. ``None`` when the values
    span too much for an int64.
    """
    combined = np.zeros(len(keys[0]), dtype=np.int64)
    if not len(combined):
        return combined
    scale = 1
    for values in reversed(keys):  # the first key column is the most significant
        low = int(values.min())
        span = int(values.max()) - low + 1
        if scale * span >= 2**62:
            return None
        combined += (values - low) * scale
        scale *= span
    return combined


def _key_order(keys: list[np.ndarray]) -> np.ndarray | None:
    """Positions that sort the rows by key, keeping the last row of each key.

    Returns ``None`` when the rows are already sorted with unique keys.
    """
    count = len(keys[0])
    combined = packed_key(keys)
    if combined is not None:
        if np.all(combined[1:] > combined[:-1]):
            return None
        order = np.argsort(combined, kind="stable")
        ordered = combined[order]
        last = np.ones(count, dtype=bool)
        last[:-1] = ordered[1:] != ordered[:-1]
        return order[last]
    # Too many distinct keys for one int64: sort on the columns, position breaking ties.
    order = np.lexsort([np.arange(count), *reversed(keys)])
    differs = np.zeros(count - 1, dtype=bool)
    for values in keys:
        ordered = values[order]
        differs |= ordered[1:] != ordered[:-1]
    return order[np.append(differs, True)]


def prepare_rows(table: sa.Table, frame: pd.DataFrame, names: Sequence[str]) -> Rows:
    key = [column.name for column in table.primary_key.columns]
    missing = [name for name in key if name not in names]
    if missing:
        raise ValueError(f"rows for {table.name} lack key column(s) {', '.join(missing)}")
    columns = [_extract(table, table.c[name], frame[name]) for name in names]
    rows = Rows(columns, key, len(frame))
    for name in key:
        column = rows.by_name(name)
        if column.kind == STRING and (column.values < 0).any():
            raise ValueError(f"key column {name} has missing values")
    order = _key_order([rows.by_name(name).values for name in key])
    if order is not None:
        for column in columns:
            column.values = column.values[order]
        rows.count = len(order)
    return rows


def _python_values(column: Column, start: int, stop: int) -> list[Any]:
    """The values of a slice as Python objects: NULL as ``None``, dates as ``YYYY-MM-DD`` text."""
    values = column.values[start:stop]
    if column.kind == FLOAT:
        missing = np.isnan(values)
        if not missing.any():
            return values.tolist()
        boxed = values.astype(object)
        boxed[missing] = None
        return boxed.tolist()
    if column.kind == STRING:
        labels = np.array([*column.labels, None], dtype=object)
        return labels[values].tolist()  # code -1 picks the trailing None
    distinct, positions = np.unique(values, return_inverse=True)
    days = distinct.astype("datetime64[D]")
    labels = np.array(np.datetime_as_string(days, unit="D"), dtype=object)
    return labels[positions].tolist()


def row_tuples(rows: Rows, start: int, stop: int) -> Iterator[tuple]:
    """Rows ``start:stop`` as tuples of Python values, in column order."""
    values = [_python_values(column, start, stop) for column in rows.columns]
    return zip(*values, strict=True)
