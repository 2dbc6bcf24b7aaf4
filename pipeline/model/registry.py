"""What the train stage registers: a version's fingerprint, its scalers and its rows.

**No new version when nothing changed.** Every training has a fingerprint:
the SHA-256 of its inputs (the content of each sequence file, the
hyperparameters and seed, the mode and, for a fine-tune, the parent's
fingerprint). When a registered version has the same fingerprint, it is
reused rather than trained again, so rerunning any mode with the same inputs
registers nothing new.

A version is registered with the scalers it encodes prices with: a retrain
takes those its sequences were built with, a fine-tune keeps its parent's so
that it continues in the parent's scale. The SQL is in ``pipeline.db.models``
and the model files in ``store.py``; this module says what goes in them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.models import model_scalers, register_model
from pipeline.files import sha256_json
from pipeline.model.calibration import IntervalCalibration
from pipeline.model.config import ModelConfig
from pipeline.model.fit import FitResult
from pipeline.model.promotion import FINETUNE, Verdict
from pipeline.model.store import files_digest
from pipeline.model.validation import SpanErrors, finite
from pipeline.sequences.config import SequenceConfig

#: A ticker's scaler, as the registry keeps it beside each version.
SCALER_KEYS = ("scaling", "scaler_params", "fit_start", "fit_end")


def hyperparameters(sequence_config: SequenceConfig, model_config: ModelConfig) -> dict[str, Any]:
    """Everything that shaped a model, as recorded in the registry."""
    return {**sequence_config.to_dict(), **model_config.training_params()}


def training_fingerprint(
    action: str,
    sequences: Mapping[str, str],
    params: Mapping[str, Any],
    parent: str | None = None,
) -> str:
    """The fingerprint of a training (see the module docstring).

    Args:
        action: ``retrain`` or ``finetune``.
        sequences: each ticker's sequence file SHA-256.
        params: the hyperparameters (``hyperparameters``).
        parent: for a fine-tune, the fingerprint of the version it continues.
    """
    inputs: dict[str, Any] = {
        "action": action,
        "sequences": dict(sequences),
        "params": params,
    }
    if action == FINETUNE:
        inputs["parent"] = parent
    return sha256_json(inputs)


def sequence_scalers(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A retrain's scalers: those each ticker's sequences were built with."""
    return {row[c.TICKER]: {key: row[key] for key in SCALER_KEYS} for row in rows}


def parent_scalers(
    conn: Connection, version: int, tickers: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """A fine-tune's scalers: those of the version it continues, for ``tickers``."""
    parent = model_scalers(conn, version)
    return {ticker: {key: parent[ticker][key] for key in SCALER_KEYS} for ticker in tickers}


def register_version(
    conn: Connection,
    *,
    version: int,
    fingerprint: str,
    action: str,
    parent_version: int | None,
    trained_at: dt.datetime | None,
    data_through: dt.date,
    train_through: dt.date,
    tickers: Sequence[str],
    params: Mapping[str, Any],
    path: Path,
    scalers: Mapping[str, Mapping[str, Any]],
    fitted: FitResult,
    errors: SpanErrors,
    damping: Mapping[str, float],
    intervals: Mapping[str, IntervalCalibration | None],
    verdict: Verdict,
    champion: Mapping[str, Any] | None,
) -> None:
    """Register a trained version, promoted or not, with one row per ticker.

    Args:
        conn: an open connection; the caller owns the transaction.
        version: the new version number (``next_version``).
        fingerprint: ``training_fingerprint`` of its inputs.
        action: ``retrain`` or ``finetune``.
        parent_version: the version a fine-tune continued.
        trained_at: time stamp to record; defaults to now (UTC).
        data_through: the newest price date its sequences saw.
        train_through: the newest target date it was trained on.
        tickers: the tickers it covers.
        params: its hyperparameters.
        path: its published model file or folder.
        scalers: per ticker, its scaler (``SCALER_KEYS``).
        fitted: what the fit saw.
        errors: its one-step errors on the newest span.
        damping: per ticker, the damping fitted on that span.
        intervals: per ticker, the intervals calibrated on that span.
        verdict: the gate's decision against ``champion``.
        champion: the champion it was compared with, if any.
    """
    register_model(
        conn,
        {
            "version": version,
            "fingerprint": fingerprint,
            "mode": action,
            "parent_version": parent_version,
            "trained_at": trained_at or dt.datetime.now(dt.UTC),
            "data_through": data_through,
            "train_through": train_through,
            "tickers": list(tickers),
            "hyperparameters": params,
            "val_loss": fitted.val_loss,
            "train_samples": fitted.train_samples,
            "validation_samples": fitted.validation_samples,
            "epochs_run": fitted.epochs_run,
            "file_path": str(path),
            "file_sha256": files_digest(path),
            "val_mae": finite(errors.mae),
            "val_naive_mae": finite(errors.naive_mae),
            "val_mase": finite(errors.mase),
            "promoted": verdict.promoted,
            "decision": verdict.decision,
            "champion_version": champion["version"] if champion else None,
            "champion_val_mae": verdict.champion_mae,
            "val_msis": finite(errors.msis),
            "champion_val_msis": verdict.champion_msis,
        },
        [
            {
                c.TICKER: ticker,
                **scalers[ticker],
                "damping": damping.get(ticker),
                "val_mae": errors.per_ticker.get(ticker, {}).get("mae"),
                "val_naive_mae": errors.per_ticker.get(ticker, {}).get("naive_mae"),
                "interval_q": None
                if intervals.get(ticker) is None
                else intervals[ticker].to_json(),
            }
            for ticker in tickers
        ],
    )
