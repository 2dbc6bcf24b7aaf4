"""PostgreSQL's binary format, written and read with NumPy: COPY data out, arrays in.

Written by hand because psycopg, the library that would otherwise do it,
takes one Python value at a time, and a million rows is where that shows.
``benchmarks/pgbinary.py`` measures both against psycopg on the million rows
of ``benchmarks/upsert_prices.py`` (2 cores shared with other work, medians
of 3, two runs):

- **COPY data** (``CopyEncoder``), into an ``UNLOGGED`` table without index so
  that the client's part shows: 0.8 to 1.2 s, of which 0.2 s of client CPU,
  against 1.3 to 2.2 s, of which 0.8 to 1.6 s of client CPU, for psycopg's
  ``Copy.write_row`` (its C implementation) of tuples built from the same
  arrays (the tuples alone: 0.7 to 0.85 s of CPU). Both store the same rows.
  In ``upsert_prices`` itself, replacing ``write_row`` by this encoder took a
  first load from 2.8 to 3.2 s to 2.0 to 2.4 s (``benchmarks/README.md``,
  "What was tried").
- **Arrays** (``read_array``, the answers of ``array_send``): a million
  ``int8`` or ``float8`` in 0.01 s of client CPU, against 0.05 to 0.09 s for
  psycopg's binary array loader, which builds a Python list, then
  ``np.array``; reading back a second load's stored rows takes eight such
  arrays per million rows.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from pipeline.db.bulk.rows import DATE, FLOAT, STRING, Rows

#: Rows encoded at once for PostgreSQL's COPY (about 100 bytes each).
_COPY_CHUNK_ROWS = 100_000
#: Contiguous runs of same-shaped rows in a COPY chunk above which the rows are
#: sent shape by shape instead of in key order (see ``CopyEncoder``).
_COPY_MAX_RUNS_SHARE = 64
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_UNIX_DAYS_AT_PG_EPOCH = 10_957  # 2000-01-01, PostgreSQL's day zero, in days since 1970-01-01


class CopyEncoder:
    """Rows as PostgreSQL binary COPY data, built with NumPy, NULL written as NULL.

    The columns go dates and floats first, then text (``names``). A row's record
    has a fixed layout once its NULLs and the length of its text are known, so
    the rows sharing both (usually all of them, or a few large groups) become
    one NumPy structured array. The records keep the rows' order (the key's,
    which keeps the primary key's inserts local), unless the shapes alternate
    too often, when they are sent shape by shape.
    """

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.fixed = [column for column in rows.columns if column.kind != STRING]
        self.strings = [column for column in rows.columns if column.kind == STRING]
        if len(self.fixed) > 62:
            raise TypeError("bulk_upsert writes at most 62 date and float columns to PostgreSQL")
        self.names = [column.name for column in self.fixed + self.strings]
        # Each text value as a COPY field (length, then UTF-8); the last one is NULL,
        # so that the code -1 picks it.
        self.fields = [
            [
                *(struct.pack("!i", len(data)) + data for data in map(str.encode, column.labels)),
                struct.pack("!i", -1),
            ]
            for column in self.strings
        ]

    def payload(self, positions: np.ndarray | slice) -> Iterator[Any]:
        """The whole COPY data of the rows at ``positions`` (an array or a slice)."""
        if isinstance(positions, slice):
            positions = np.arange(positions.start, positions.stop)
        yield _COPY_HEADER
        for start in range(0, len(positions), _COPY_CHUNK_ROWS):
            chunk = positions[start : start + _COPY_CHUNK_ROWS]
            if len(chunk) and chunk[-1] - chunk[0] == len(chunk) - 1:  # contiguous: no gather
                chunk = slice(int(chunk[0]), int(chunk[-1]) + 1)
            yield from self._encode(chunk)
        yield _COPY_TRAILER

    def _encode(self, selection: np.ndarray | slice) -> list[Any]:
        fixed = [column.values[selection] for column in self.fixed]
        count = len((fixed or [self.strings[0].values[selection]])[0])
        nulls = np.zeros(count, dtype=np.int64)
        for bit, (column, values) in enumerate(zip(self.fixed, fixed, strict=True)):
            if column.kind == FLOAT:
                nulls |= np.isnan(values).astype(np.int64) << bit
        texts, which = self._texts(selection, count)
        widths = np.array([len(text) for text in texts], dtype=np.int64)[which]
        null_code, null_kinds = pd.factorize(nulls)
        width_code, width_kinds = pd.factorize(widths)
        if len(null_kinds) == 1 and len(width_kinds) == 1:
            records = self._records(int(null_kinds[0]), int(width_kinds[0]), fixed, texts, which)
            return [records.view(np.uint8).data]
        shape = null_code * len(width_kinds) + width_code
        blocks, rank = [], np.empty(count, dtype=np.int64)
        for code in range(len(null_kinds) * len(width_kinds)):
            members = np.flatnonzero(shape == code)
            if not len(members):
                blocks.append(None)
                continue
            rank[members] = np.arange(len(members))
            blocks.append(
                self._records(
                    int(null_kinds[code // len(width_kinds)]),
                    int(width_kinds[code % len(width_kinds)]),
                    [values[members] for values in fixed],
                    texts,
                    which[members],
                )
            )
        starts = np.flatnonzero(np.diff(shape)) + 1
        if len(starts) + 1 > max(16, count // _COPY_MAX_RUNS_SHARE):
            return [block.view(np.uint8).data for block in blocks if block is not None]
        starts = np.concatenate([[0], starts])
        stops = np.append(starts[1:], count)
        return [
            b"".join(
                blocks[code][first : first + stop - start].view(np.uint8).data
                for code, first, start, stop in zip(
                    shape[starts].tolist(),
                    rank[starts].tolist(),
                    starts.tolist(),
                    stops.tolist(),
                    strict=True,
                )
            )
        ]

    def _records(
        self,
        nulls: int,
        width: int,
        fixed: list[np.ndarray],
        texts: list[bytes],
        which: np.ndarray,
    ) -> np.ndarray:
        """Records sharing one layout: the columns that are NULL, the width of the text."""
        layout: list[tuple[str, str]] = [("count", ">i2")]
        for index, column in enumerate(self.fixed):
            layout.append((f"size{index}", ">i4"))
            if not nulls >> index & 1:
                layout.append((f"value{index}", ">i4" if column.kind == DATE else ">f8"))
        if self.strings:
            layout.append(("text", f"S{width}"))
        records = np.empty(len(which), dtype=layout)
        records["count"] = len(self.names)
        for index, (column, values) in enumerate(zip(self.fixed, fixed, strict=True)):
            if nulls >> index & 1:
                records[f"size{index}"] = -1
            elif column.kind == DATE:
                records[f"size{index}"] = 4
                records[f"value{index}"] = values - _UNIX_DAYS_AT_PG_EPOCH
            else:
                records[f"size{index}"] = 8
                records[f"value{index}"] = values
        if self.strings:
            records["text"] = np.array(texts, dtype=f"S{width}")[which]
        return records

    def _texts(self, selection: np.ndarray | slice, count: int) -> tuple[list[bytes], np.ndarray]:
        """The text fields of each distinct combination of text values, and each row's."""
        if not self.strings:
            return [b""], np.zeros(count, dtype=np.int64)
        codes = [column.values[selection] + 1 for column in self.strings]  # 0 is NULL
        sizes = [len(column.labels) + 1 for column in self.strings]
        if int(np.prod(sizes, dtype=object)) < 2**62:
            combined = np.zeros(count, dtype=np.int64)
            for values, size in zip(codes, sizes, strict=True):
                combined = combined * size + values
            which, distinct = pd.factorize(combined)
            combos = []
            for value in distinct.tolist():
                parts = []
                for size in reversed(sizes):
                    value, code = divmod(value, size)
                    parts.append(code)
                combos.append(parts[::-1])
        else:  # pragma: no cover - more distinct text combinations than an int64 holds
            distinct, which = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
            combos = distinct.tolist()
        texts = [
            b"".join(fields[code - 1] for fields, code in zip(self.fields, combo, strict=True))
            for combo in combos
        ]
        return texts, np.asarray(which).reshape(-1)


def read_array(data: bytes, kind: str) -> np.ndarray:
    """A one-dimensional array without NULLs, from PostgreSQL's binary format (``array_send``)."""
    dimensions, _, _ = struct.unpack_from("!iiI", data)
    if dimensions == 0:
        return np.zeros(0, dtype=kind)
    (count,) = struct.unpack_from("!i", data, 12)
    items = np.frombuffer(data, dtype=[("size", ">i4"), ("value", kind)], count=count, offset=20)
    if dimensions != 1 or (items["size"] != np.dtype(kind).itemsize).any():
        raise RuntimeError("unexpected array from PostgreSQL")  # pragma: no cover
    return items["value"]
