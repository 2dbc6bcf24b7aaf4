"""The fit loop: a model's networks fitted, judged and saved, one job per network.

A model is one ``GLOBAL`` network on every ticker, one network per group of
tickers (``ModelConfig.ticker_groups``, ``pipeline.model.groups``) or one network
per ticker (``ModelConfig.scope``). ``network_jobs`` turns it into one
``NetworkJob`` per network, and ``fit_network`` runs one: it seeds everything,
builds a fresh network (a retrain) or loads the parent's from the bytes the job
carries (a fine-tune), fits it, fits its damping (if asked), judges it on the
validation span, calibrates its intervals and returns the figures and the
network file's bytes. A job reads no database and no file, so it runs anywhere:
``fit_model`` runs them in ``network.Workers``, the daily flow on a Dask cluster
(``flows.runners``); ``save_outcomes`` writes the networks into the version's
staging folder and ``combine_outcomes`` adds up the figures. A retrain fits every
training window and stops early on the validation loss when ``patience`` is set; a
fine-tune fits only the training windows whose target is newer than ``newer_than``,
for all its epochs.

What to fit, and what becomes of the fitted version, is the train stage's
business (``train.py``). The backtests (``pipeline.evaluate.backtest``) refit a
variant on each fold with ``fresh_networks`` and ``fit_networks``.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ModelStoreError
from pipeline.files import write_atomically
from pipeline.model.calibration import IntervalCalibration, calibrate_intervals
from pipeline.model.config import ModelConfig
from pipeline.model.groups import is_grouped, parse_group_key, ticker_groups, ticker_networks
from pipeline.model.network import (
    XLA_MIN_SAMPLE_EPOCHS,
    Workers,
    build_model,
    compile_with_xla,
    early_stopping,
    epoch_logger,
    network_loss,
    resident_memory_mb,
    seed_everything,
)
from pipeline.model.predictor import VOLATILITY_PARAM, Predictor, volatility_feature
from pipeline.model.scale import ewma_volatility
from pipeline.model.span import SpanSeries, SpanStep
from pipeline.model.span_cache import SpanPredictions, span_predictions
from pipeline.model.store import GLOBAL, load_network, network_file, save_network
from pipeline.model.validation import SpanErrors, judge_span
from pipeline.sequences.scaling import Params, get_scaler
from pipeline.sequences.windows import TickerWindows

#: Networks a worker process fits before it is replaced (see ``train``'s ``workers``).
NETWORKS_PER_WORKER = 10


@dataclass
class TrainingData:
    """Per ticker: its windows (``TickerWindows``) and the scaler parameters to encode with."""

    windows: dict[str, TickerWindows]
    params: dict[str, Params]
    window: int
    scaling: str
    distributional: bool = False

    @property
    def tickers(self) -> list[str]:
        return sorted(self.windows)

    def features(self) -> int:
        """Inputs per time step: the close, and the volatility for a distributional network."""
        return 2 if self.distributional else 1

    def arrays(self, ticker: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoded inputs and targets of one ticker's windows ``rows``: inputs ``(n, window)``,
        or ``(n, window, 2)`` with the volatility feature for a distributional network
        (the EWMA volatility at each window's last close, from the closes before it)."""
        windows = self.windows[ticker]
        raw = windows.inputs(rows)
        scaler = get_scaler(self.scaling)
        params = self.params[ticker]
        inputs = scaler.encode(raw, params)
        if self.distributional:
            origins = np.asarray(rows, dtype=np.intp) + self.window - 1
            volatility = ewma_volatility(windows.closes, origins)
            inputs = np.stack(
                [inputs, volatility_feature(raw, volatility, params[VOLATILITY_PARAM])], axis=-1
            )
        return inputs, scaler.encode_target(windows.targets(rows), raw, params)

    def stacked(
        self, tickers: Sequence[str], rows: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The network's inputs ``(n, window, features)`` and targets ``(n,)``, in float32, of
        ``tickers``' windows ``rows`` one ticker after the other: filled in place, one ticker
        at a time, so that no float64 copy of every window exists at once (at 5,000 tickers
        of ten years that copy alone was 0.9 GB)."""
        total = sum(len(rows[ticker]) for ticker in tickers)
        x = np.empty((total, self.window, self.features()), dtype=np.float32)
        y = np.empty(total, dtype=np.float32)
        start = 0
        for ticker in tickers:
            count = len(rows[ticker])
            if not count:
                continue
            inputs, targets = self.arrays(ticker, rows[ticker])
            x[start : start + count] = inputs.reshape(count, self.window, self.features())
            y[start : start + count] = targets
            start += count
        return x, y


@dataclass
class FitResult:
    """Networks after fitting, and what the fit saw."""

    networks: dict[str, Any]
    train_samples: int = 0
    validation_samples: int = 0
    epochs_run: int = 0
    val_loss: float | None = None
    seconds: float = 0.0
    trained_tickers: list[str] = field(default_factory=list)


def new_training_windows(windows: Mapping[str, TickerWindows], newer_than: dt.date) -> int:
    """The training windows a fine-tune from ``newer_than`` would fit on, over every ticker."""
    return int(sum(len(ticker.train_rows(newer_than)) for ticker in windows.values()))


def fit_networks(
    data: TrainingData,
    networks: dict[str, Any],
    config: ModelConfig,
    epochs: int,
    newer_than: dt.date | None,
    label: str,
    validate: bool = True,
) -> FitResult:
    """Fit ``networks`` (fresh or loaded) on the training windows; validate on the rest.

    Args:
        validate: compute each network's loss on the validation windows after the fit
            (``FitResult.val_loss``); without it, they are read only for early stopping
            and the caller computes the loss from predictions it makes anyway
            (``fit_network``: from the pass that judges the network).
    """
    fitted = FitResult(networks=networks)
    groups = _members(list(networks), data.tickers)
    started = time.perf_counter()
    val_losses: list[tuple[float, int]] = []
    for position, (key, tickers) in enumerate(groups.items(), start=1):
        if not tickers:
            continue
        train = {ticker: data.windows[ticker].train_rows(newer_than) for ticker in tickers}
        validation = {ticker: data.windows[ticker].validation_rows() for ticker in tickers}
        x_train, y_train = data.stacked(tickers, train)
        if not len(x_train):
            continue
        stopping = bool(config.patience) and newer_than is None
        validation_count = sum(len(rows) for rows in validation.values())
        # Stacked only when used (252,000 windows at 1,000 tickers of ten years).
        if validation_count and (validate or stopping):
            x_val, y_val = data.stacked(tickers, validation)
        name = label if len(groups) == 1 else f"{label} {key} ({position}/{len(groups)})"
        callbacks = [epoch_logger(epochs, name)]
        validation_data = None
        if validation_count and stopping:
            # Validated after every epoch only for early stopping: a fine-tune (all its
            # epochs) would otherwise run the network over every validation window once
            # an epoch for a log line (3 x 252,000 windows at 1,000 tickers of ten
            # years, longer than its epochs); the validation loss is computed once below.
            validation_data = (x_val, y_val)
            callbacks.append(early_stopping(config.patience))
        if len(x_train) * epochs >= XLA_MIN_SAMPLE_EPOCHS:
            compile_with_xla(networks[key])
        history = networks[key].fit(
            x_train,
            y_train,
            epochs=epochs,
            batch_size=config.batch_size,
            validation_data=validation_data,
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
        )
        fitted.epochs_run = max(fitted.epochs_run, len(history.history["loss"]))
        fitted.train_samples += len(x_train)
        fitted.validation_samples += validation_count
        fitted.trained_tickers.extend(tickers)
        if validation_count and validate:
            loss = networks[key].evaluate(x_val, y_val, batch_size=4096, verbose=0)
            val_losses.append((float(loss), validation_count))
    fitted.seconds = time.perf_counter() - started
    if val_losses:
        fitted.val_loss = sum(loss * n for loss, n in val_losses) / sum(n for _, n in val_losses)
    if is_grouped(networks):
        # Predictors find a grouped model's networks by ticker (``Predictor.networks``).
        fitted.networks = ticker_networks(networks, data.tickers, "the fitted model")
    return fitted


def _members(keys: Sequence[str], tickers: Sequence[str]) -> dict[str, list[str]]:
    """The tickers each network of ``keys`` is fitted on: every one for ``GLOBAL``, a
    group's for a group's key, else (per ticker) each ticker its own."""
    if GLOBAL in keys:
        return {GLOBAL: sorted(tickers)}
    if is_grouped(keys):
        parsed = parse_group_key(keys[0])
        assert parsed is not None
        members = ticker_groups(tickers, parsed[1])
        return {key: members.get(key, []) for key in keys}
    return {ticker: [ticker] for ticker in sorted(tickers)}


def network_members(tickers: Sequence[str], config: ModelConfig) -> dict[str, list[str]]:
    """The networks of a model and the tickers of each, in their seeding order: one
    ``GLOBAL`` network, one per non-empty group (``config.ticker_groups`` above 1,
    ``pipeline.model.groups``), or one per ticker (``per_ticker``)."""
    ordered = sorted(tickers)
    if config.scope != "global":
        return {ticker: [ticker] for ticker in ordered}
    if config.ticker_groups == 1:
        return {GLOBAL: ordered}
    return ticker_groups(ordered, config.ticker_groups)


def network_keys(tickers: Sequence[str], config: ModelConfig) -> list[str]:
    """The networks of a model: ``[GLOBAL]``, one per group, or one per ticker."""
    return list(network_members(tickers, config))


def seed_index(key: str, position: int) -> int:
    """Which seed (``network_seed``) the network ``key`` at ``position`` of ``network_keys``
    takes: its group's number for a group (so a group's seed never depends on which
    other groups have tickers), else its position."""
    parsed = parse_group_key(key)
    return position if parsed is None else parsed[0]


def network_seed(config: ModelConfig, index: int) -> int:
    """The initializers' seed of the network of ``seed_index`` ``index``."""
    return config.seed * 1000 + 3 * index


def fresh_networks(tickers: Sequence[str], window: int, config: ModelConfig) -> dict[str, Any]:
    """Untrained networks: one ``GLOBAL``, one per group, or one per ticker, each seeded
    from ``config.seed``."""
    return {
        key: build_model(
            window,
            config.units,
            config.learning_rate,
            config.loss,
            network_seed(config, seed_index(key, position)),
        )
        for position, key in enumerate(network_keys(tickers, config))
    }


@dataclass(frozen=True)
class NetworkJob:
    """One network of a training, as it is fitted wherever it runs (a worker process
    of this machine, a Dask worker of another one): its windows, how to start it
    (fresh from ``seed``, or from ``source``, the bytes of the parent's network file),
    judged on its tickers' validation span where it is fitted. It carries all its data
    and reads no database and no file, so it can run where neither is reachable."""

    key: str
    data: TrainingData
    series: dict[str, SpanSeries]
    config: ModelConfig
    epochs: int
    newer_than: dt.date | None
    label: str
    seed: int
    source: bytes | None

    @property
    def tickers(self) -> list[str]:
        return self.data.tickers


@dataclass
class NetworkOutcome:
    """What fitting one network gave, its file's bytes included (``weights``: the
    ``.keras`` file the train stage publishes, so a job run on another machine needs
    no shared disk); ``pid`` and ``rss_mb`` describe the process that fitted it, after
    it did (for logs and ``benchmarks/train_memory.py``)."""

    key: str
    fitted: FitResult
    damping: dict[str, float]
    errors: SpanErrors
    intervals: dict[str, IntervalCalibration | None]
    val_losses: list[tuple[float, int]]
    pid: int
    rss_mb: float | None
    weights: bytes = b""
    #: Its one-step predictions on the validation span, as judged (damped): kept by the
    #: train stage when it is promoted, so the next day that judges it predicts only the
    #: new points (made by Keras here, by its NumPy forward pass then: they agree to
    #: float32 rounding, as two passes of either over different batches do).
    span: SpanPredictions | None = None


#: One network fits at a time in a process: ``seed_everything`` resets Keras' global
#: state, which a network fitting in another thread (a Dask worker's) still uses.
_FITTING = threading.Lock()


def fit_network(job: NetworkJob) -> NetworkOutcome:
    """Fit one network, fit its damping, judge it and calibrate its intervals; its
    file's bytes come back in the outcome.

    Seeds everything first, so the weights are those the network gets whatever
    was fitted before it, in this process or another one, on this machine or not.
    """
    with _FITTING, tempfile.TemporaryDirectory(prefix="pricecast-fit-") as folder:
        config = job.config
        seed_everything(config.seed)
        if job.source is None:
            network = build_model(
                job.data.window, config.units, config.learning_rate, config.loss, job.seed
            )
        else:
            parent = Path(folder) / "parent.keras"
            parent.write_bytes(job.source)
            network = load_network(parent, for_training=True)
        fitted = fit_networks(
            job.data,
            {job.key: network},
            config,
            job.epochs,
            job.newer_than,
            job.label,
            validate=False,
        )
        fitted.networks = {}
        predictor = Predictor(
            window=job.data.window,
            scaler=get_scaler(job.data.scaling),
            params=job.data.params,
            networks={job.key: network}
            if job.key == GLOBAL or job.key in job.data.windows
            else dict.fromkeys(job.tickers, network),
        )
        judged = judge_span(
            predictor, job.series, config.interval_level, config.intervals, config.damping
        )
        predictor.damping = judged.damping
        if fitted.validation_samples and judged.step is not None:
            # The validation loss from the pass that judged the network (``evaluate``
            # ran the network over the same windows once more).
            fitted.val_loss = _validation_loss(network, predictor, judged.step)
        intervals = calibrate_intervals(
            predictor,
            job.series,
            config.horizon,
            config.interval_level,
            config.intervals,
            judged.step,
        )
        saved = Path(folder) / "network.keras"
        save_network(network, saved)
        weights = saved.read_bytes()
    val_losses = (
        [(fitted.val_loss, fitted.validation_samples)] if fitted.val_loss is not None else []
    )
    return NetworkOutcome(
        key=job.key,
        fitted=fitted,
        damping=dict(predictor.damping),
        errors=judged.errors,
        intervals=intervals,
        val_losses=val_losses,
        pid=os.getpid(),
        rss_mb=resident_memory_mb(),
        weights=weights,
        span=None if judged.step is None else span_predictions(judged.step),
    )


def _validation_loss(network: Any, predictor: Predictor, step: SpanStep) -> float:
    """``network``'s loss on the validation windows, from its outputs at ``step``'s points
    (every validation window has a full window of closes before its target, so they are
    the windows ``fit_networks`` validates on): what ``evaluate`` gives, to float32
    rounding."""
    if step.outputs is None:
        raise ValueError("the judged step kept no network outputs")
    points = step.points
    targets = predictor.encoded_targets(
        points.row_tickers(), points.windows(predictor.window), step.actual
    )
    return network_loss(network, targets, step.outputs)


def network_jobs(
    data: TrainingData,
    series: Mapping[str, SpanSeries],
    config: ModelConfig,
    epochs: int,
    newer_than: dt.date | None,
    label: str,
    source: Path | None = None,
) -> list[NetworkJob]:
    """One job per network of the model (``network_members``): ``GLOBAL`` on every
    ticker, one per group, or one per ticker.

    Args:
        data: every ticker's windows and scaler parameters.
        series: every ticker's validation span.
        config: the model's parameters (``scope`` and ``ticker_groups`` say which networks).
        epochs: the most epochs to fit.
        newer_than: fit only on training windows whose target is after this date.
        label: the training's name in the logs (``retrain``, ``finetune``).
        source: the model files to continue from (a fine-tune; each job carries its
            network file's bytes), else fresh networks.
    """
    members = network_members(data.tickers, config)
    jobs = []
    for position, (key, tickers) in enumerate(members.items()):
        jobs.append(
            NetworkJob(
                key=key,
                data=TrainingData(
                    windows={ticker: data.windows[ticker] for ticker in tickers},
                    params={ticker: data.params[ticker] for ticker in tickers},
                    window=data.window,
                    scaling=data.scaling,
                    distributional=data.distributional,
                ),
                series={ticker: series[ticker] for ticker in tickers if ticker in series},
                config=config,
                epochs=epochs,
                newer_than=newer_than,
                label=label if key == GLOBAL else f"{label} {key} ({position + 1}/{len(members)})",
                seed=network_seed(config, seed_index(key, position)),
                source=None if source is None else _network_bytes(source, key),
            )
        )
    return jobs


def _network_bytes(source: Path, key: str) -> bytes:
    """The bytes of network ``key``'s file in the model files ``source`` (a fine-tune's parent).

    Raises:
        ModelStoreError: the file cannot be read.
    """
    path = network_file(source, key)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelStoreError(
            f"cannot read model file {path} to fine-tune it ({exc}); retrain with --mode retrain"
        ) from exc


def save_outcomes(outcomes: Sequence[NetworkOutcome], staging: Path) -> None:
    """Write each outcome's network file into a version's staging folder
    (``store.network_file``), for ``store.publish_networks``."""
    for outcome in outcomes:
        write_atomically(
            network_file(staging, outcome.key),
            functools.partial(_write_bytes, outcome.weights),
            "train",
        )


def _write_bytes(payload: bytes, path: Path) -> None:
    path.write_bytes(payload)


@dataclass
class FittedModel:
    """A model's networks fitted and saved (in a staging folder), and what they gave."""

    fitted: FitResult
    damping: dict[str, float]
    errors: SpanErrors
    intervals: dict[str, IntervalCalibration | None]
    outcomes: list[NetworkOutcome]


def fit_model(
    jobs: Sequence[NetworkJob],
    workers: Workers,
    on_fitted: Callable[[NetworkJob, NetworkOutcome], None] | None = None,
) -> FittedModel:
    """Run ``fit_network`` for every job in ``workers`` and combine the outcomes: the
    same figures as fitting and judging all the networks together in this process.

    Args:
        jobs: from ``network_jobs``.
        workers: the processes to fit in (``Workers(0, 1)``: this process).
        on_fitted: called with each job and its ``NetworkOutcome`` as it completes.
    """
    return combine_outcomes(workers.run(fit_network, jobs, on_fitted))


def combine_outcomes(outcomes: Sequence[NetworkOutcome]) -> FittedModel:
    """The figures of a model from its networks' outcomes (in the jobs' order): the
    same as fitting and judging all the networks together in one process."""
    fitted = FitResult(networks={})
    errors = SpanErrors()
    damping: dict[str, float] = {}
    intervals: dict[str, IntervalCalibration | None] = {}
    val_losses: list[tuple[float, int]] = []
    for outcome in outcomes:
        part = outcome.fitted
        fitted.train_samples += part.train_samples
        fitted.validation_samples += part.validation_samples
        fitted.epochs_run = max(fitted.epochs_run, part.epochs_run)
        fitted.seconds += part.seconds
        fitted.trained_tickers.extend(part.trained_tickers)
        val_losses.extend(outcome.val_losses)
        damping.update(outcome.damping)
        errors.per_ticker.update(outcome.errors.per_ticker)
        intervals.update(outcome.intervals)
    if val_losses:
        fitted.val_loss = sum(loss * n for loss, n in val_losses) / sum(n for _, n in val_losses)
    return FittedModel(fitted, damping, errors, intervals, list(outcomes))
