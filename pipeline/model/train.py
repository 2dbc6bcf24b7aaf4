"""The train stage: retrain from fresh weights, fine-tune the current model, or reuse it.

One global network is trained on the windows of every ticker, each ticker
scaled by its own fitted scaler.

**Which model is current.** The newest registered version whose
``data_through`` is on or before the as-of date: a run as of a past date
never uses a model that saw later prices.

**Mode ``auto``** retrains when there is no current model, when the
current one's architecture (window, scaling, price field, units) differs from the
requested one, when it does not cover every requested ticker, or when the
newest full retrain in its lineage is more than ``retrain_after_days``
behind the as-of date. Otherwise it fine-tunes when there are windows newer
than the current model's data, and reuses the current model when there are
none.

**No new version when nothing changed.** Every training has a fingerprint:
the SHA-256 of its inputs (the content of each sequence file, the
hyperparameters, the seed, the mode and, for a fine-tune, the parent's
fingerprint). When a registered version has the same fingerprint, it is
reused rather than trained again, so rerunning any mode with the same
inputs registers nothing new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.models import (
    current_model,
    find_model_by_fingerprint,
    lineage,
    model_scalers,
    next_version,
    register_model,
)
from pipeline.db.sequences import read_sequence_files
from pipeline.db.tickers import inactive_tickers
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.config import ModelConfig
from pipeline.model.network import as_inputs, build_model, epoch_logger, seed_everything
from pipeline.model.store import load_model, model_path, save_model
from pipeline.sequences.build import read_sequence_file
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.scaling import get_scaler, rescale

logger = logging.getLogger(__name__)

Mode = Literal["auto", "retrain", "finetune"]
MODES: tuple[str, ...] = ("auto", "retrain", "finetune")
RETRAIN, FINETUNE, REUSE = "retrain", "finetune", "reuse"


@dataclass(frozen=True)
class TrainResult:
    """The model version a run will forecast with, and how it came to be."""

    version: int
    action: str
    reason: str
    created: bool
    data_through: dt.date
    tickers: list[str]
    val_loss: float | None
    samples_per_second: float | None = None

    def summary(self) -> dict[str, object]:
        """Fields for logs and flow results."""
        return {
            "model_version": self.version,
            "action": self.action,
            "reason": self.reason,
            "created": self.created,
            "data_through": self.data_through.isoformat(),
            "tickers": self.tickers,
            "val_loss": self.val_loss,
        }


@dataclass
class _Windows:
    """Training and validation arrays pooled over tickers, with each ticker's scaler."""

    x_train: list[np.ndarray] = field(default_factory=list)
    y_train: list[np.ndarray] = field(default_factory=list)
    x_validation: list[np.ndarray] = field(default_factory=list)
    y_validation: list[np.ndarray] = field(default_factory=list)
    scalers: list[dict[str, Any]] = field(default_factory=list)

    def stacked(self, window: int) -> tuple[np.ndarray, ...]:
        def stack(parts: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.empty(shape)

        return (
            stack(self.x_train, (0, window)),
            stack(self.y_train, (0,)),
            stack(self.x_validation, (0, window)),
            stack(self.y_validation, (0,)),
        )


def hyperparameters(sequence_config: SequenceConfig, model_config: ModelConfig) -> dict[str, Any]:
    """Everything that shaped a model, as recorded in the registry."""
    return {**sequence_config.to_dict(), **model_config.to_dict()}


def _architecture(params: dict[str, Any]) -> dict[str, Any]:
    defaults = {"price_field": "close"}  # versions before it was a setting used closes
    return {
        key: params.get(key, defaults.get(key))
        for key in ("window", "scaling", "price_field", "units")
    }


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of a JSON-ready description of a training's inputs."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _load_sequence_rows(
    conn: Connection,
    as_of: dt.date,
    tickers: Sequence[str] | None,
    config: SequenceConfig,
) -> list[dict[str, Any]]:
    rows = read_sequence_files(conn, as_of, tickers)
    if tickers is None:
        inactive = inactive_tickers(conn)
        rows = [row for row in rows if row[c.TICKER] not in inactive]
    found = {row[c.TICKER] for row in rows}
    missing = sorted(set(tickers or []) - found)
    if missing or not rows:
        which = ", ".join(missing) if missing else "any ticker"
        raise MissingDataError(
            f"no sequences built as of {as_of} for {which}; run `pricecast sequences "
            f"--as-of {as_of}` first"
        )
    for row in rows:
        built = {
            key: row[key] for key in ("window", "scaling", "validation_fraction", "price_field")
        }
        if built != {key: getattr(config, key) for key in built}:
            raise MissingDataError(
                f"sequences of {row[c.TICKER]} as of {as_of} were built with {built}, "
                f"not {config.to_dict()}; rebuild them with `pricecast sequences`"
            )
    return rows


def decide(
    requested: str,
    current: dict[str, Any] | None,
    last_retrain: dict[str, Any] | None,
    rows: Sequence[dict[str, Any]],
    params: dict[str, Any],
    as_of: dt.date,
    retrain_after_days: int,
) -> tuple[str, str]:
    """Choose ``retrain``, ``finetune`` or ``reuse``, and say why.

    Raises:
        ConfigurationError: ``finetune`` was requested but the current model cannot be fine-tuned.
        MissingDataError: ``finetune`` was requested but there is no current model.
    """
    if requested not in MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(MODES)}, got {requested!r}")
    if requested == RETRAIN:
        return RETRAIN, "retrain requested"
    if current is None:
        if requested == FINETUNE:
            raise MissingDataError(
                f"no model trained on data up to {as_of} to fine-tune; use --mode retrain"
            )
        return RETRAIN, f"no model trained on data up to {as_of}"
    version = current["version"]
    if _architecture(current["hyperparameters"]) != _architecture(params):
        reason = (
            f"model v{version} has architecture {_architecture(current['hyperparameters'])}, "
            f"requested {_architecture(params)}"
        )
        if requested == FINETUNE:
            raise ConfigurationError(f"cannot fine-tune: {reason}; use --mode retrain")
        return RETRAIN, reason
    uncovered = sorted({row[c.TICKER] for row in rows} - set(current["tickers"]))
    if uncovered:
        reason = f"model v{version} does not cover {', '.join(uncovered)}"
        if requested == FINETUNE:
            raise ConfigurationError(f"cannot fine-tune: {reason}; use --mode retrain")
        return RETRAIN, reason
    if requested == "auto" and last_retrain is not None:
        age = (as_of - last_retrain["data_through"]).days
        if age > retrain_after_days:
            return RETRAIN, (
                f"the last full retrain (v{last_retrain['version']}, data through "
                f"{last_retrain['data_through']}) is {age} days old, more than {retrain_after_days}"
            )
    newest = max(row["data_through"] for row in rows)
    if newest <= current["data_through"]:
        return (
            REUSE,
            f"no windows newer than model v{version}'s data (through {current['data_through']})",
        )
    return (
        FINETUNE,
        f"windows from {current['data_through']} to {newest} are new since model v{version}",
    )


def _collect_retrain(rows: Sequence[dict[str, Any]]) -> _Windows:
    windows = _Windows()
    for row in rows:
        frame = read_sequence_file(Path(row["file_path"]))
        x_cols = c.window_columns(row["window"])
        train = frame[c.SPLIT] == c.SPLIT_TRAIN
        windows.x_train.append(frame.loc[train, x_cols].to_numpy())
        windows.y_train.append(frame.loc[train, c.TARGET].to_numpy())
        windows.x_validation.append(frame.loc[~train, x_cols].to_numpy())
        windows.y_validation.append(frame.loc[~train, c.TARGET].to_numpy())
        windows.scalers.append(
            {
                c.TICKER: row[c.TICKER],
                "scaling": row["scaling"],
                "scaler_params": row["scaler_params"],
                "fit_start": row["fit_start"],
                "fit_end": row["fit_end"],
            }
        )
    return windows


def _collect_finetune(
    conn: Connection, rows: Sequence[dict[str, Any]], parent: dict[str, Any]
) -> _Windows:
    """New windows since the parent's data, re-expressed in the parent's scale."""
    parent_scalers = model_scalers(conn, parent["version"])
    windows = _Windows()
    for row in rows:
        ticker = row[c.TICKER]
        frame = read_sequence_file(Path(row["file_path"]))
        x_cols = c.window_columns(row["window"])
        scaler = get_scaler(row["scaling"])
        source, target = row["scaler_params"], parent_scalers[ticker]["scaler_params"]
        new = pd.to_datetime(frame[c.TARGET_DATE]) > pd.Timestamp(parent["data_through"])
        validation = frame[c.SPLIT] == c.SPLIT_VALIDATION
        for mask, xs, ys in (
            (new, windows.x_train, windows.y_train),
            (validation, windows.x_validation, windows.y_validation),
        ):
            xs.append(rescale(frame.loc[mask, x_cols].to_numpy(), scaler, source, target))
            ys.append(rescale(frame.loc[mask, c.TARGET].to_numpy(), scaler, source, target))
        scaler_row = dict(parent_scalers[ticker])
        scaler_row.pop(c.MODEL_VERSION, None)
        windows.scalers.append(scaler_row)
    return windows


def train(
    conn: Connection,
    home: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    mode: str = "auto",
    sequence_config: SequenceConfig | None = None,
    model_config: ModelConfig | None = None,
    trained_at: dt.datetime | None = None,
) -> TrainResult:
    """Train, fine-tune or reuse a model on the sequences built as of ``as_of``.

    Args:
        conn: an open connection; the caller owns the transaction.
        home: the pricecast home folder; models go to ``<home>/models``.
        as_of: the as-of date the sequences were built for.
        tickers: tickers to train on; ``None`` takes every active ticker with sequences.
        mode: ``auto``, ``retrain`` or ``finetune`` (see the module docstring).
        sequence_config: the windowing the sequences must have been built with.
        model_config: network and training parameters.
        trained_at: time stamp recorded in the registry; defaults to now (UTC).

    Raises:
        MissingDataError: sequences are missing or were built differently.
        ConfigurationError: a fine-tune was requested that cannot be done.
    """
    sequence_config = sequence_config or SequenceConfig()
    model_config = model_config or ModelConfig()
    rows = _load_sequence_rows(conn, as_of, tickers, sequence_config)
    params = hyperparameters(sequence_config, model_config)
    current = current_model(conn, as_of)
    last_retrain = None
    if current is not None:
        last_retrain = next(
            (row for row in lineage(conn, current["version"]) if row["mode"] == RETRAIN), None
        )
    action, reason = decide(
        mode, current, last_retrain, rows, params, as_of, model_config.retrain_after_days
    )
    logger.info("training decision: %s (%s)", action, reason)
    if action == REUSE:
        assert current is not None
        return _reused(current, reason)

    inputs: dict[str, Any] = {
        "action": action,
        "sequences": {row[c.TICKER]: row["sha256"] for row in rows},
        "params": {key: value for key, value in params.items() if key != "retrain_after_days"},
    }
    if action == FINETUNE:
        assert current is not None
        inputs["parent"] = current["fingerprint"]
    digest = fingerprint(inputs)
    existing = find_model_by_fingerprint(conn, digest)
    if existing is not None:
        return _reused(existing, f"identical inputs were already trained as v{existing['version']}")

    if action == RETRAIN:
        windows = _collect_retrain(rows)
        parent_version = None
    else:
        assert current is not None
        windows = _collect_finetune(conn, rows, current)
        parent_version = current["version"]
    window = sequence_config.window
    x_train, y_train, x_val, y_val = windows.stacked(window)
    if len(x_train) == 0:
        raise MissingDataError(f"no training windows as of {as_of}")

    seed_everything(model_config.seed)
    if action == RETRAIN:
        model = build_model(window, model_config.units, model_config.learning_rate)
        epochs = model_config.epochs
    else:
        model = load_model(Path(current["file_path"]), for_training=True)  # type: ignore[index]
        epochs = model_config.finetune_epochs
    logger.info(
        "%s on %d windows of %d tickers, validating on %d, %d epochs of batch %d",
        action,
        len(x_train),
        len(rows),
        len(x_val),
        epochs,
        model_config.batch_size,
    )
    started = time.perf_counter()
    model.fit(
        as_inputs(x_train),
        y_train.astype(np.float32),
        epochs=epochs,
        batch_size=model_config.batch_size,
        validation_data=(as_inputs(x_val), y_val.astype(np.float32)) if len(x_val) else None,
        shuffle=True,
        verbose=0,
        callbacks=[epoch_logger(epochs, action)],
    )
    elapsed = time.perf_counter() - started
    rate = len(x_train) * epochs / elapsed if elapsed > 0 else None
    val_loss = None
    if len(x_val):
        val_loss = float(
            model.evaluate(as_inputs(x_val), y_val.astype(np.float32), batch_size=1024, verbose=0)
        )

    version = next_version(conn)
    path = save_model(model, model_path(home, version))
    data_through = max(row["data_through"] for row in rows)
    ticker_list = [row[c.TICKER] for row in rows]
    register_model(
        conn,
        {
            "version": version,
            "fingerprint": digest,
            "mode": action,
            "parent_version": parent_version,
            "trained_at": trained_at or dt.datetime.now(dt.UTC),
            "data_through": data_through,
            "tickers": ticker_list,
            "hyperparameters": params,
            "val_loss": val_loss,
            "train_samples": int(len(x_train)),
            "validation_samples": int(len(x_val)),
            "epochs_run": epochs,
            "file_path": str(path),
        },
        windows.scalers,
    )
    logger.info(
        "registered model v%d (%s, data through %s, val_loss %s, %.0f samples/s)",
        version,
        action,
        data_through,
        "n/a" if val_loss is None else f"{val_loss:.6f}",
        rate or 0.0,
    )
    return TrainResult(
        version=version,
        action=action,
        reason=reason,
        created=True,
        data_through=data_through,
        tickers=ticker_list,
        val_loss=val_loss,
        samples_per_second=rate,
    )


def _reused(model: dict[str, Any], reason: str) -> TrainResult:
    logger.info("using model v%d: %s", model["version"], reason)
    return TrainResult(
        version=model["version"],
        action=REUSE,
        reason=reason,
        created=False,
        data_through=model["data_through"],
        tickers=list(model["tickers"]),
        val_loss=model["val_loss"],
    )
