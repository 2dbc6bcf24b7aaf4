"""The windows the sequences stage just built, handed to the train stage of the same process.

In the daily run (``pipeline.run.daily_run``) the sequences stage writes every
ticker's file, and the train stage, next in the same process, read them all back:
5,000 ten-year files took 17.7 s on one thread, nearly all of it decoding them
(``benchmarks/README.md``, ``sequence_reads``). The sequences stage has each ticker's
windows in hand when it writes the file (the closes and dates the file is made of),
so, asked to (``build_sequences(..., hand_off=True)``, as ``pipeline.stages.sequences``
does), it keeps them here (``keep``) and ``read_sequences`` takes them (``take``)
instead of decoding the file again.

Why what is taken is what the file holds:

* the windows are built from the same closes and dates as the file's bytes, and are
  what ``read_sequence_windows`` reads back from them (tested field by field, bit for
  bit, after a build from every close and after one from a file and the closes
  after it);
* they are kept under the file's path and the SHA-256 of those bytes, the digest
  ``sequence_files`` records; ``read_sequences`` takes them only for a row of the same
  path and digest, and only once the file is found to still hold those bytes
  (``sequence_file_bytes``: reading and hashing a ten-year file is 0.13 ms of the
  3.7 ms reading it whole took), so a file changed or replaced since is reported and
  rebuilt as before, and a row that records another file is read from its file;
* any other process (``pricecast train`` run alone, the next day's run) finds the
  digest recorded and reads the file, checked against it.

Bounded and explicit: at most one build's windows are kept. Every ``build_sequences``
call drops what was kept before it starts; ``take`` hands over everything kept and
keeps nothing, so once the train stage has read, the windows live only in what it
read (the same objects: 40 MB for 1,000 ten-year tickers, which the train stage held
anyway; between the stages they are memory the process did not hold before). The
sharded sequences (``pipeline.stages.sequences_shard``) keep nothing: they may run in
other processes (Dask workers) that never read, and each shard's build would drop the
one before. A lock guards the store: stages may run on threads (Prefect's task runner).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from pipeline.sequences.windows import TickerWindows

#: A sequence file: its path (as ``sequence_files.file_path``) and its bytes' SHA-256.
FileKey = tuple[str, str]

_lock = threading.Lock()
_kept: dict[FileKey, TickerWindows] = {}


def keep(windows: Mapping[FileKey, TickerWindows]) -> None:
    """Keep one build's windows, by file, instead of whatever was kept."""
    global _kept
    with _lock:
        _kept = dict(windows)


def take() -> dict[FileKey, TickerWindows]:
    """Everything kept, by file; nothing is kept after."""
    global _kept
    with _lock:
        taken, _kept = _kept, {}
    return taken


def clear() -> None:
    """Keep nothing."""
    take()


def kept() -> int:
    """How many files' windows are kept."""
    with _lock:
        return len(_kept)
