"""Raw batches: the rows of one file or one response, as text, with where each came from.

Every source turns its input into ``RawBatch`` objects in the same long
layout (one row per ticker and date, every value still the text the source
held), so that validation, quarantine and accounting are the same for files
and feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import columns as c
from pipeline.errors import InputFileError

#: Column of a raw batch holding the line (CSV) or row (Parquet) number of each row.
LINE = "line"
#: Column holding the raw date text.
DATE = "date"
#: Column holding a problem the reader found with the row's shape (e.g. field count).
SHAPE_ERROR = "shape_error"
#: Column holding the row's original fields, as a dictionary, for the quarantine.
RAW = "raw"
#: Text value columns of a raw batch, in order.
VALUE_COLUMNS = (c.TICKER, DATE, c.CLOSE, c.OPEN, c.HIGH, c.LOW, c.ADJ_CLOSE, c.VOLUME)
RAW_COLUMNS = (LINE, *VALUE_COLUMNS, SHAPE_ERROR, RAW)

#: Origins of feed rows contain this; file rows are named by their file name.
FEED_MARK = "://"


class BatchRejected(InputFileError):
    """A whole file or response cannot be read; it names the origin and, where known, the line."""

    def __init__(self, origin: str, problem: str, line: int | None = None) -> None:
        where = f"{origin}, line {line}" if line else origin
        super().__init__(f"{where}: {problem}")
        self.origin = origin
        self.problem = problem
        self.line = line


class InputTooLarge(BatchRejected):
    """An input over the size limit of ``limit`` bytes (``PRICECAST_MAX_INPUT_BYTES``)."""

    def __init__(self, origin: str, problem: str, limit: int) -> None:
        super().__init__(origin, problem)
        self.limit = limit


@dataclass
class RawBatch:
    """The rows of one input, as text.

    Attributes:
        origin: where the rows came from, for people: a file path or a URL.
        source: the name stored in ``prices.source``: the file name, or the
            URL for feeds (which always contains ``://``).
        version: the SHA-256 of the input's bytes.
        layout: ``long``, ``single`` or ``wide``.
        frame: one row per price, columns ``RAW_COLUMNS``; values are text,
            ``""`` where the input had none.
    """

    origin: str
    source: str
    version: str
    layout: str
    frame: pd.DataFrame
    #: The input's fields by header name, aligned with ``frame``'s rows, where the
    #: reader left ``frame[RAW]`` empty (``None``) rather than build a dictionary for
    #: every row: only rejected rows need theirs (``raw_of``).
    fields: dict[str, pd.Series | np.ndarray] | None = None
    #: Whether every value of ``frame`` is already stripped of surrounding white space
    #: (the readers strip them; validation then need not strip them again).
    stripped: bool = False

    @property
    def rows(self) -> int:
        return len(self.frame)

    def raw_of(self, positions: np.ndarray) -> list[dict[str, str]]:
        """The original fields of the rows at ``positions`` (of ``frame``), for the quarantine."""
        stored = self.frame[RAW].to_numpy()
        rows = [stored[position] for position in positions]
        built = [index for index, row in enumerate(rows) if row is None]
        if self.fields is None or not built:
            return rows
        # Column by column: a field looked up row by row costs 20 µs in a pandas Series.
        at = np.asarray(positions, dtype=np.int64)[built]
        columns = {
            name: [str(value) for value in _values_at(values, at)]
            for name, values in self.fields.items()
        }
        for number, index in enumerate(built):
            rows[index] = {name: column[number] for name, column in columns.items()}
        return rows

    @property
    def is_feed(self) -> bool:
        return FEED_MARK in self.source


def _values_at(values: pd.Series | np.ndarray, positions: np.ndarray) -> list:
    """The values at ``positions`` (of a Series, by position), as Python objects."""
    if isinstance(values, pd.Series):
        return values.iloc[positions].tolist()
    return np.asarray(values, dtype=object)[positions].tolist()


def empty_frame() -> pd.DataFrame:
    """A raw frame with no rows."""
    return pd.DataFrame({name: pd.Series(dtype=object) for name in RAW_COLUMNS})
