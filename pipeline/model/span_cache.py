"""The champion's one-step predictions on the validation span, kept from one day to
the next (``SpanCache``).

Every run judges the champion on the newest span (its MASE decides whether it
drifted; on a fine-tune day the new network must beat it there): a forward pass over
every validation point of every ticker, 252,000 at 1,000 tickers of ten years. From
one day to the next only the newest point of each ticker is new; a prediction at a
target depends only on the model (its networks, scaler parameters and damping) and
the closes before the target. So the predictions are kept in one file,
``<home>/cache/champion-span.npz``, keyed by what the model is (version, the SHA-256
of its files, a digest of its parameters), and per ticker by the SHA-256 of the closes
they were made from: a revised close, another model or another file makes the run
predict afresh. The file is a cache, never trusted for more: unreadable, of another
model or not matching, it is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import sha256_json, write_atomically
from pipeline.model.span import SpanStep

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"
CHAMPION_SPAN_FILE = "champion-span.npz"


def champion_span_path(home: Path) -> Path:
    """Where the champion's span predictions are kept."""
    return home / CACHE_DIR / CHAMPION_SPAN_FILE


def model_key(version: int, files_sha256: str | None, description: Mapping[str, Any]) -> str:
    """What a model's predictions depend on: its version, files and parameters
    (``description``: its scaler parameters, damping, window, scaling...)."""
    return sha256_json({"version": version, "files": files_sha256, "model": description})


def closes_digest(closes: np.ndarray, salt: str) -> str:
    """The SHA-256 of ``salt`` (what else a ticker's predictions depend on: its scaler
    parameters, its damping) and the closes as float64 bytes."""
    digest = hashlib.sha256(salt.encode())
    digest.update(np.ascontiguousarray(closes, dtype=np.float64).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Known:
    covered: int  # closes the predictions were made from: those before the last target
    digest: str  # closes_digest of those closes
    targets: np.ndarray  # positions of the targets in the ticker's closes, ascending
    predicted: np.ndarray
    spread: np.ndarray


@dataclass(frozen=True)
class SpanCache:
    """A model's one-step predictions at validation targets, per ticker; ``salts``: per
    ticker, what its predictions depend on besides its closes (``closes_digest``)."""

    key: str
    tickers: dict[str, _Known]
    salts: Mapping[str, str]

    def lookup(self, name: str, closes: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
        """For each of ``targets`` (positions in ``closes``), the row of its kept
        prediction in ``self.tickers[name]``, or -1; None when nothing is kept for this
        ticker or its closes changed since."""
        known = self.tickers.get(name)
        if known is None or not len(known.targets) or len(closes) < known.covered:
            return None
        salt = self.salts.get(name)
        if salt is None or closes_digest(closes[: known.covered], salt) != known.digest:
            return None
        rows = np.minimum(np.searchsorted(known.targets, targets), len(known.targets) - 1)
        return np.where(known.targets[rows] == targets, rows, -1)

    def fill(
        self,
        step_names: list[str],
        owner: np.ndarray,
        positions: np.ndarray,
        closes: Mapping[str, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kept predictions for the points of a span: a mask of the points found, and
        their predictions and spreads (undefined where not found).

        Args:
            step_names: the tickers of the points, ``owner`` each point's index in them.
            positions: each point's target position in its ticker's closes.
            closes: each ticker's closes.
        """
        found = np.zeros(len(positions), dtype=bool)
        predicted = np.empty(len(positions))
        spread = np.empty(len(positions))
        bounds = np.searchsorted(owner, np.arange(len(step_names) + 1))
        for index, name in enumerate(step_names):
            rows = slice(bounds[index], bounds[index + 1])
            kept = self.lookup(name, closes[name], positions[rows])
            if kept is None:
                continue
            hit = kept >= 0
            known = self.tickers[name]
            found[rows] = hit
            predicted[rows][hit] = known.predicted[kept[hit]]
            spread[rows][hit] = known.spread[kept[hit]]
        return found, predicted, spread


@dataclass(frozen=True)
class SpanPredictions:
    """A model's one-step predictions at the validation points of some tickers, by
    ticker (``names[k]``'s are the next ``counts[k]`` rows), without the digests that
    key them in a ``SpanCache``: what a fit worker sends back of the network it judged,
    so that the new champion's predictions are kept (``predictions_cache``) without
    being made again on the next day that judges it."""

    names: tuple[str, ...]
    counts: np.ndarray
    targets: np.ndarray  # each point's target position in its ticker's closes
    predicted: np.ndarray
    spread: np.ndarray


def span_predictions(step: SpanStep) -> SpanPredictions:
    """``step``'s predictions, by ticker (copies: nothing of the step is kept alive)."""
    points = step.points
    return SpanPredictions(
        names=tuple(points.names),
        counts=np.array(points.counts, dtype=np.int64),
        targets=(points.ends - points.first).astype(np.int64),
        predicted=np.array(step.predicted, dtype=float),
        spread=np.array(step.spread, dtype=float),
    )


def predictions_cache(
    key: str,
    predictions: Iterable[SpanPredictions],
    closes: Mapping[str, np.ndarray],
    salts: Mapping[str, str],
) -> SpanCache:
    """The cache of a model's ``predictions`` (one-step predictions at validation
    points), keyed ``key``; each ticker's keyed by the digest of its ``closes`` before
    its last target and its salt. Tickers without a salt or closes are left out."""
    tickers = {}
    for part in predictions:
        bounds = np.concatenate([[0], np.cumsum(part.counts)])
        for index, name in enumerate(part.names):
            if name not in salts or name not in closes:
                continue
            rows = slice(int(bounds[index]), int(bounds[index + 1]))
            targets = part.targets[rows]
            covered = int(targets.max()) if len(targets) else 0
            # Copies: a view would keep every ticker's arrays alive with each one's (at
            # 5,000 tickers, a temporary of 1.26 million positions kept per ticker took
            # 22 GB).
            tickers[name] = _Known(
                covered=covered,
                digest=closes_digest(closes[name][:covered], salts[name]),
                targets=np.array(targets, dtype=np.int64),
                predicted=np.array(part.predicted[rows], dtype=float),
                spread=np.array(part.spread[rows], dtype=float),
            )
    return SpanCache(key, tickers, salts)


def span_cache(key: str, step: SpanStep, salts: Mapping[str, str]) -> SpanCache:
    """The cache of a model's predictions ``step`` (one-step predictions at every
    validation point), keyed ``key``; tickers without a salt are left out."""
    points = step.points
    closes = {
        name: points.closes[points.first[points.starts[index]] :]
        for index, name in enumerate(points.names)
        if points.counts[index]
    }
    return predictions_cache(key, [span_predictions(step)], closes, salts)


def save_span_cache(path: Path, cache: SpanCache) -> None:
    """Write ``cache`` to ``path`` atomically (NumPy arrays, no pickles)."""
    names = sorted(cache.tickers)
    known = [cache.tickers[name] for name in names]
    counts = np.array([len(k.targets) for k in known], dtype=np.int64)

    def joined(attribute: str, dtype: Any) -> np.ndarray:
        parts = [np.asarray(getattr(k, attribute), dtype=dtype) for k in known]
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    buffer = io.BytesIO()
    np.savez(
        buffer,
        key=np.array(cache.key),
        names=np.array(names, dtype=str),
        covered=np.array([k.covered for k in known], dtype=np.int64),
        digests=np.array([k.digest for k in known], dtype=str),
        counts=counts,
        targets=joined("targets", np.int64),
        predicted=joined("predicted", float),
        spread=joined("spread", float),
    )
    payload = buffer.getvalue()
    write_atomically(path, lambda temporary: temporary.write_bytes(payload), "train")


def load_span_cache(path: Path, key: str, salts: Mapping[str, str]) -> SpanCache | None:
    """The cache at ``path`` if it holds the predictions of the model ``key``; None when
    there is none, it is another model's, or it cannot be read as one (then it is only
    a slower run: the predictions are made again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            names = [str(name) for name in data["names"]]
            counts = data["counts"]
            targets, predicted, spread = data["targets"], data["predicted"], data["spread"]
            covered, digests = data["covered"], data["digests"]
            if not (len(names) == len(counts) == len(covered) == len(digests)) or not (
                len(targets) == len(predicted) == len(spread) == int(counts.sum())
            ):
                raise ValueError("its arrays do not match")
            starts = np.concatenate([[0], np.cumsum(counts)])
            tickers = {
                name: _Known(
                    covered=int(covered[index]),
                    digest=str(digests[index]),
                    targets=targets[starts[index] : starts[index + 1]],
                    predicted=predicted[starts[index] : starts[index + 1]],
                    spread=spread[starts[index] : starts[index + 1]],
                )
                for index, name in enumerate(names)
            }
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring the champion's kept predictions at %s: %s", path, exc)
        return None
    return SpanCache(key, tickers, salts)
