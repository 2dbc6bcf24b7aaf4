"""The promotion policy: what a training run does, and whether its model takes over.

**The champion.** Forecasts come from the champion: of the *promoted*
versions whose ``data_through`` is on or before the as-of date, the one with
the newest ``data_through`` (ties: the newest version), so a run as of a past
date never uses a model that saw later prices and never displaces a later
date's champion. A new version, whether
retrained or fine-tuned, is promoted only when its one-step error on the
newest validation span is no worse than the champion's on the same points;
otherwise it is registered as a challenger that lost, and the champion keeps
forecasting. The ``models`` table records the decision and both errors.

**Mode ``auto``** retrains when there is no champion; when the champion's
architecture (window, scaling, price field, units, scope, ticker groups, loss) differs from the
settings; when it does not cover every ticker; when the newest full retrain
in its lineage is more than ``retrain_after_days`` behind the as-of date; or
when its error has drifted: its MASE on the newest validation span exceeds
its MASE when it was promoted by more than ``drift_tolerance``. Otherwise it
fine-tunes when there are training windows newer than the champion's, and
reuses the champion when there are none. Fine-tuning continues the
champion's weights, in its scale, on those new training windows only; the
validation span is never trained on, so the gate stays out of sample.

**A damaged champion** (its files missing, truncated, replaced by other bytes than
those registered, or unreadable) can be neither reused nor fine-tuned: every
mode then retrains from the database, and the new version is promoted without a
comparison, since the champion cannot be evaluated. Without this rule the run
would fail every day until someone retrained by hand.

The policy is kept apart from the train stage (``train.py``) so that every rule
is a pure function of registry rows, settings and errors already measured: no
database, no model files and no TensorFlow, and each rule is tested on inputs
built by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.config import ModelConfig
from pipeline.model.validation import SpanErrors, finite

Mode = Literal["auto", "retrain", "finetune"]
MODES: tuple[str, ...] = ("auto", "retrain", "finetune")
RETRAIN, FINETUNE, REUSE = "retrain", "finetune", "reuse"
ARCHITECTURE = ("window", "scaling", "price_field", "units", "scope", "ticker_groups", "loss")
#: Values of architecture keys for versions registered before the key existed (and of
#: ``ticker_groups`` for one network, which ``ModelConfig.training_params`` leaves out).
_ARCHITECTURE_DEFAULTS = {"price_field": "close", "scope": "global", "ticker_groups": 1}


class Decision(NamedTuple):
    """What a run does (``retrain``, ``finetune`` or ``reuse``), and why."""

    action: str
    reason: str


class Verdict(NamedTuple):
    """Whether a new version is promoted, the decision the registry records, and the
    champion's MAE and MSIS on the points the two were compared on (``None``: not
    compared)."""

    promoted: bool
    decision: str
    champion_mae: float | None
    champion_msis: float | None


def architecture(params: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters a fine-tune cannot change."""
    return {key: params.get(key, _ARCHITECTURE_DEFAULTS.get(key)) for key in ARCHITECTURE}


def trained_through(champion: Mapping[str, Any]) -> dt.date:
    """The newest target date a registered version was trained on; fine-tunes
    continue from the windows after it."""
    return champion.get("train_through") or champion["data_through"]


def checks_drift(
    requested: str, champion: Mapping[str, Any], params: Mapping[str, Any], new_windows: int
) -> bool:
    """Whether ``decide`` needs the champion's error on the newest span to look for drift.

    Only in mode ``auto``, for a champion of the requested architecture that has a
    MASE from when it was promoted, and only when there are new training windows:
    without them the champion is reused, drifted or not.
    """
    compatible = architecture(champion["hyperparameters"]) == architecture(params)
    return bool(requested == "auto" and compatible and new_windows and champion.get("val_mase"))


def champion_drift(
    champion: Mapping[str, Any], champion_errors: SpanErrors | None
) -> tuple[float, float] | None:
    """The champion's MASE on the newest span and when it was promoted, for ``decide``;
    ``None`` when it could not be measured."""
    if champion_errors is None or not champion_errors.n:
        return None
    return champion_errors.mase, champion["val_mase"]


def decide(
    requested: str,
    champion: Mapping[str, Any] | None,
    last_retrain: Mapping[str, Any] | None,
    tickers: Sequence[str],
    params: Mapping[str, Any],
    as_of: dt.date,
    config: ModelConfig,
    new_windows: int,
    drift: tuple[float, float] | None = None,
    damaged: str | None = None,
) -> Decision:
    """Choose ``retrain``, ``finetune`` or ``reuse``, and say why (see the module docstring).

    Args:
        requested: ``auto``, ``retrain`` or ``finetune``.
        champion: the champion's registry row, if any.
        last_retrain: the newest full retrain in the champion's lineage.
        tickers: the tickers to train.
        params: the requested hyperparameters.
        as_of: the as-of date.
        config: the policy settings (``retrain_after_days``, ``drift_tolerance``).
        new_windows: training windows newer than the champion's.
        drift: the champion's MASE on the newest span and when it was promoted.
        damaged: why the champion's files cannot be used (``store.inspect_files``), if
            they cannot: then every mode retrains from the database, since neither
            reusing nor fine-tuning the champion can succeed, today or any later day.

    Raises:
        ConfigurationError: ``finetune`` was requested but the champion cannot be fine-tuned.
        MissingDataError: ``finetune`` was requested but there is no champion.
    """
    if requested not in MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(MODES)}, got {requested!r}")
    if champion is not None and damaged:
        return Decision(RETRAIN, f"{damaged}; retraining from the database")
    if requested == RETRAIN:
        return Decision(RETRAIN, "retrain requested")
    if champion is None:
        if requested == FINETUNE:
            raise MissingDataError(
                f"no champion trained on data up to {as_of} to fine-tune; use --mode retrain"
            )
        return Decision(RETRAIN, f"no champion trained on data up to {as_of}")
    version = champion["version"]
    if architecture(champion["hyperparameters"]) != architecture(params):
        reason = (
            f"champion v{version} has architecture {architecture(champion['hyperparameters'])}, "
            f"requested {architecture(params)}"
        )
        if requested == FINETUNE:
            raise ConfigurationError(f"cannot fine-tune: {reason}; use --mode retrain")
        return Decision(RETRAIN, reason)
    uncovered = sorted(set(tickers) - set(champion["tickers"]))
    if uncovered:
        reason = f"champion v{version} does not cover {', '.join(uncovered)}"
        if requested == FINETUNE:
            raise ConfigurationError(f"cannot fine-tune: {reason}; use --mode retrain")
        return Decision(RETRAIN, reason)
    if requested == "auto" and last_retrain is not None:
        age = (as_of - last_retrain["data_through"]).days
        if age > config.retrain_after_days:
            return Decision(
                RETRAIN,
                f"the last full retrain (v{last_retrain['version']}, data through "
                f"{last_retrain['data_through']}) is {age} days old, more than "
                f"{config.retrain_after_days}",
            )
    if requested == "auto" and drift is not None:
        now, then = drift
        if then > 0 and now > then * (1 + config.drift_tolerance):
            return Decision(
                RETRAIN,
                f"champion v{version}'s error drifted: MASE {now:.3f} on the newest span, "
                f"{then:.3f} when promoted (tolerance {config.drift_tolerance:.0%})",
            )
    if new_windows == 0:
        return Decision(
            REUSE,
            f"no training windows newer than champion v{version}'s "
            f"(trained through {trained_through(champion)})",
        )
    return Decision(FINETUNE, f"{new_windows} training windows are new since champion v{version}")


def gate(
    challenger: SpanErrors,
    champion: Mapping[str, Any] | None,
    champion_errors: SpanErrors | None,
    damaged: bool = False,
) -> Verdict:
    """Whether the challenger is promoted, why, and the champion's MAE and MSIS on the
    same points.

    A champion whose files are ``damaged`` cannot be compared, nor forecast: the
    challenger replaces it.

    Promoted when, on the newest span and the tickers both cover, its one-step MAE is
    no worse than the champion's and the MSIS of its intervals is no worse either
    (each model's intervals calibrated on the span itself, ``evaluate_span``); the
    MSIS is not compared when either model has none.
    """
    if champion is None:
        return Verdict(True, "promoted: first model, no champion to compare with", None, None)
    if damaged:
        return Verdict(
            True,
            f"promoted: champion v{champion['version']}'s files are damaged, so it can "
            "neither be compared nor forecast",
            None,
            None,
        )
    if champion_errors is None or not champion_errors.n:
        return Verdict(
            True,
            f"promoted: champion v{champion['version']} could not be evaluated",
            None,
            None,
        )
    common = set(challenger.per_ticker) & set(champion_errors.per_ticker)
    mine, theirs = challenger.restricted(common), champion_errors.restricted(common)
    point_ok = mine.mae <= theirs.mae
    compared = np.isfinite(mine.msis) and np.isfinite(theirs.msis)
    interval_ok = not compared or mine.msis <= theirs.msis
    promoted = point_ok and interval_ok
    verdict = "promoted" if promoted else "not promoted"
    decision = (
        f"{verdict}: MAE {mine.mae:.6g} on the newest span is "
        f"{'no worse than' if point_ok else 'worse than'} champion v{champion['version']}'s "
        f"{theirs.mae:.6g} (MASE {mine.mase:.4f} vs {theirs.mase:.4f})"
    )
    if compared:
        decision += (
            f"; interval MSIS {mine.msis:.4g} is {'no worse than' if interval_ok else 'worse than'}"
            f" its {theirs.msis:.4g}"
        )
    return Verdict(promoted, decision, theirs.mae, finite(theirs.msis) if compared else None)
