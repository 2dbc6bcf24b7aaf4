"""The train stage: retrain, fine-tune or reuse, then promote only what is no worse.

This module runs the stage's steps in order and owns none of its rules. The
stage is three steps, so that its fitting can run elsewhere (``train`` runs all
three in this process and its ``network.Workers``; the daily flow, on a Dask
cluster, maps the fit jobs as tasks, ``flows.runners``):

1. ``plan_training`` (reads the database, writes nothing but sequence files it
   finds damaged): reads the sequences built as of the as-of date
   (``pipeline.sequences.read``); asks the policy what to do (``_decide``:
   retrain, fine-tune or reuse the champion, in ``promotion.py`` with the rules of
   ``--mode auto``); reuses the version already trained from identical inputs,
   if there is one (the fingerprint, ``registry.py``); else plans the training
   (``_plan``: the scalers, the weights it starts from) and builds one picklable
   ``fit.NetworkJob`` per network (one, one per ticker group, or one per ticker),
   each carrying its windows (and its parent network's bytes, for a fine-tune);
2. ``fit.fit_network`` for each job, anywhere: no database, no shared disk; the
   network file's bytes come back in its outcome;
3. ``finish_training``: writes the networks into the next version's files, judges
   them, gates the new version against the champion (``promotion.gate``),
   publishes its files and registers it, promoted or not
   (``registry.register_version``).

The champion is judged on the newest span (for drift in step 1, for the gate in step
3), and a promoted version's span predictions kept, in ``champion_span``.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.models import (
    champion_model,
    find_model_by_fingerprint,
    lineage,
    models_with_files,
    next_version,
    retire_damaged_fingerprint,
)
from pipeline.errors import MissingDataError, ModelStoreError
from pipeline.model.champion_span import evaluate_champion, keep_new_champion_span
from pipeline.model.config import ModelConfig
from pipeline.model.fit import (
    NETWORKS_PER_WORKER,
    FittedModel,
    NetworkJob,
    NetworkOutcome,
    TrainingData,
    combine_outcomes,
    fit_network,
    network_jobs,
    new_training_windows,
    save_outcomes,
)
from pipeline.model.network import Workers, is_distributional
from pipeline.model.predictor import VOLATILITY_PARAM
from pipeline.model.promotion import (
    FINETUNE,
    RETRAIN,
    REUSE,
    Decision,
    Verdict,
    champion_drift,
    checks_drift,
    decide,
    gate,
    trained_through,
)
from pipeline.model.registry import (
    hyperparameters,
    parent_scalers,
    register_version,
    sequence_scalers,
    training_fingerprint,
)
from pipeline.model.span import SpanSeries, span_series, with_origin_volatility
from pipeline.model.store import (
    Damage,
    check_files,
    inspect_files,
    model_path,
    publish_networks,
    staging_folder,
)
from pipeline.model.validation import SpanErrors, finite, with_long_run_volatility
from pipeline.results import ModelSummary
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.read import read_sequences
from pipeline.sequences.windows import TickerWindows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Sequences:
    """The sequence files a training reads: their registry rows, their windows and
    validation spans per ticker."""

    rows: list[dict[str, Any]]
    windows: dict[str, TickerWindows]
    series: dict[str, SpanSeries]

    @property
    def tickers(self) -> list[str]:
        return [row[c.TICKER] for row in self.rows]


@dataclass(frozen=True)
class _Plan:
    """How a retrain or fine-tune runs: the windows and the scalers (registered with
    the version) it encodes them with, the model it continues (``None``: fresh
    networks), for how many epochs, on the training windows after which date."""

    action: str
    data: TrainingData
    scalers: dict[str, dict[str, Any]]
    source: Path | None
    epochs: int
    newer_than: dt.date | None
    parent_version: int | None


@dataclass(frozen=True)
class _Trained:
    """A new version fitted, judged, gated and published, not yet registered."""

    version: int
    path: Path
    model: FittedModel
    damping: dict[str, float]
    samples_per_second: float | None
    verdict: Verdict
    champion_errors: SpanErrors | None


@dataclass(frozen=True)
class TrainingPlan:
    """What ``plan_training`` decided: either the stage's result already (``result``:
    the champion or an identical version reused, nothing to fit), or the fit jobs
    (``jobs``, one per network, picklable, each carrying its data) and what
    ``finish_training`` needs to judge, publish and register their outcomes.

    It holds every ticker's windows; it is passed between the steps of one run (in
    one process, or from task to task of one flow), never stored.
    """

    as_of: dt.date
    decision: Decision
    #: What was wrong with registered versions' files (``store.Damage.describe``).
    damaged_files: tuple[str, ...]
    result: ModelSummary | None = None
    jobs: tuple[NetworkJob, ...] = ()
    sequences: _Sequences | None = None
    params: dict[str, Any] | None = None
    champion: dict[str, Any] | None = None
    champion_errors: SpanErrors | None = None
    damage: Damage | None = None
    digest: str = ""
    #: A version with the same fingerprint but damaged files (or a damaged champion):
    #: its fingerprint is retired before the new version is registered.
    retire: int | None = None
    plan: _Plan | None = None
    config: ModelConfig | None = None

    @property
    def fits(self) -> bool:
        """Whether there are networks to fit (else ``result`` is the stage's result)."""
        return self.result is None


def train(
    conn: Connection,
    home: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    mode: str = "auto",
    sequence_config: SequenceConfig | None = None,
    model_config: ModelConfig | None = None,
    trained_at: dt.datetime | None = None,
    workers: int = 1,
    networks_per_worker: int = NETWORKS_PER_WORKER,
) -> ModelSummary:
    """Train, fine-tune or reuse a model on the sequences built as of ``as_of``: the
    three steps of the stage in one call (``plan_training``, ``fit.fit_network`` for
    every job in ``workers``, ``finish_training``).

    Args:
        conn: an open connection; the caller owns the transaction.
        home: the pricecast home folder; models go to ``<home>/models``.
        as_of: the as-of date the sequences were built for.
        tickers: tickers to train on; ``None`` takes every active ticker with sequences.
        mode: ``auto``, ``retrain`` or ``finetune`` (see ``promotion.py``).
        sequence_config: the windowing the sequences must have been built with.
        model_config: network, training and policy parameters.
        trained_at: time stamp recorded in the registry; defaults to now (UTC).
        workers: processes to fit the networks in (``network.Workers``): a worker is
            replaced after ``networks_per_worker`` networks, so that the memory
            TensorFlow keeps of every network goes back to the system and this
            process never imports TensorFlow; 0 does everything in this process.
            The weights are the same either way. The workers start with the stage,
            importing TensorFlow while the plan is made, and are stopped unused when
            the decision is to reuse a model.
        networks_per_worker: networks a worker fits before it is replaced.

    Returns:
        The stage's result: the version trained or reused, and the champion to
        forecast with.

    Raises:
        MissingDataError: sequences are missing or were built differently.
        ConfigurationError: a fine-tune was requested that cannot be done.
    """
    with Workers(workers, networks_per_worker) as pool:
        # The worker imports TensorFlow (seconds) while the plan reads the sequences
        # and judges the champion; a decision with nothing to fit discards it unused.
        pool.start()
        plan = plan_training(conn, home, as_of, tickers, mode, sequence_config, model_config)
        if not plan.fits:
            pool.discard()
            assert plan.result is not None
            return plan.result
        outcomes = pool.run(fit_network, list(plan.jobs))
    return finish_training(conn, home, plan, outcomes, trained_at)


def plan_training(
    conn: Connection,
    home: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    mode: str = "auto",
    sequence_config: SequenceConfig | None = None,
    model_config: ModelConfig | None = None,
) -> TrainingPlan:
    """The first step of the stage: decide, and build the fit jobs if there is anything
    to fit (arguments as ``train``'s). Writes nothing to the database; a damaged
    sequence file is rebuilt (``pipeline.sequences.read``).

    Raises:
        MissingDataError: sequences are missing or were built differently.
        ConfigurationError: a fine-tune was requested that cannot be done.
        ModelStoreError: a fine-tune's parent files are missing or incomplete.
    """
    sequence_config = sequence_config or SequenceConfig()
    model_config = model_config or ModelConfig()
    files = read_sequences(conn, home, as_of, tickers, sequence_config)
    sequences = _Sequences(
        rows=files.rows,
        windows=files.windows,
        series=_spans(files.windows, model_config),
    )
    params = hyperparameters(sequence_config, model_config)
    champion = champion_model(conn, as_of)
    damaged = _inspect_models(conn, champion)
    noted = tuple(damage.describe() for damage in damaged.values())
    damage = damaged.get(champion["version"]) if champion is not None else None
    decision, champion_errors = _decide(
        conn, home, mode, sequences, params, champion, as_of, model_config, damage
    )
    logger.info("training decision: %s (%s)", decision.action, decision.reason)
    if decision.action == REUSE:
        assert champion is not None
        result = _reused(champion, champion, decision.reason, champion_errors, noted)
        return TrainingPlan(as_of, decision, noted, result=result)

    digest = _fingerprint(decision.action, sequences, params, champion)
    existing = find_model_by_fingerprint(conn, digest)
    retire = None
    if existing is not None and damage is None and existing["version"] not in damaged:
        current = champion_model(conn, as_of) or existing
        result = _reused(
            existing,
            current,
            f"identical inputs were already trained as v{existing['version']}",
            damaged_files=noted,
        )
        return TrainingPlan(as_of, decision, noted, result=result)
    if existing is not None:
        # Reusing it would leave the run without a healthy champion: train a new version
        # from the same inputs instead (its fingerprint is free once this one's is retired).
        logger.warning(
            "v%d was trained from identical inputs, but %s: training a new version from them",
            existing["version"],
            "its files are damaged"
            if existing["version"] in damaged
            else f"champion v{champion['version'] if champion else '?'} is damaged",
        )
        retire = existing["version"]

    plan = _plan(conn, decision.action, sequences, champion, sequence_config, model_config)
    jobs = network_jobs(
        plan.data,
        sequences.series,
        model_config,
        plan.epochs,
        plan.newer_than,
        plan.action,
        plan.source,
    )
    logger.info(
        "%s on %d tickers, %d epochs at most, batch %d (%s): %d network%s to fit",
        plan.action,
        len(sequences.tickers),
        plan.epochs,
        model_config.batch_size,
        _describe_networks(model_config),
        len(jobs),
        "" if len(jobs) == 1 else "s",
    )
    return TrainingPlan(
        as_of,
        decision,
        noted,
        jobs=tuple(jobs),
        sequences=sequences,
        params=dict(params),
        champion=None if champion is None else dict(champion),
        champion_errors=champion_errors,
        damage=damage,
        digest=digest,
        retire=retire,
        plan=plan,
        config=model_config,
    )


def _spans(windows: Mapping[str, TickerWindows], config: ModelConfig) -> dict[str, SpanSeries]:
    """Each ticker's validation span; with the EWMA volatility at its origins when the
    model reads it (a distributional network's input, ``ewma`` intervals): the champion
    judged, the new network judged and its intervals calibrated then share one computation."""
    series = {ticker: span_series(ticker_windows) for ticker, ticker_windows in windows.items()}
    if is_distributional(config.loss) or config.intervals == "ewma":
        return with_origin_volatility(series)
    return series


def finish_training(
    conn: Connection,
    home: Path,
    plan: TrainingPlan,
    outcomes: Sequence[NetworkOutcome],
    trained_at: dt.datetime | None = None,
) -> ModelSummary:
    """The last step of the stage: the networks fitted for ``plan``'s jobs (their
    outcomes, in the jobs' order, from wherever they ran) saved as the next version,
    judged, gated against the champion, published and registered.

    Raises:
        ValueError: the outcomes are not those of the plan's jobs.
        MissingDataError: there were no training windows.
    """
    if not plan.fits:
        assert plan.result is not None
        return plan.result
    assert plan.sequences is not None and plan.plan is not None and plan.config is not None
    assert plan.params is not None
    expected = [job.key for job in plan.jobs]
    if [outcome.key for outcome in outcomes] != expected:
        raise ValueError(
            f"the outcomes are for networks {[outcome.key for outcome in outcomes]}, "
            f"the plan's jobs for {expected}"
        )
    if plan.retire is not None:
        retire_damaged_fingerprint(conn, plan.retire)
    trained = _fit(conn, home, plan, outcomes)
    data_through = _register(
        conn,
        plan.sequences,
        plan.params,
        plan.plan,
        trained,
        plan.digest,
        plan.champion,
        trained_at,
    )
    if trained.verdict.promoted:
        keep_new_champion_span(
            conn, home, trained.version, plan.sequences.series, trained.model.outcomes
        )
    return _trained_result(
        plan.decision, plan.sequences, plan.plan, trained, plan.champion, data_through, plan
    )


def _describe_networks(config: ModelConfig) -> str:
    if config.scope != "global":
        return f"{config.scope} scope"
    if config.ticker_groups > 1:
        return f"{config.ticker_groups} ticker groups"
    return "global scope"


def _inspect_models(conn: Connection, champion: Mapping[str, Any] | None) -> dict[int, Damage]:
    """What is wrong with the files of each registered version that still has files,
    by version, each reported as a warning. The champion's networks are also read (as
    forecasting reads them); the others' files are only compared with their digests.
    A damaged champion is retrained (``promotion.decide``); the others are reported."""
    champion_version = champion["version"] if champion is not None else None
    damaged: dict[int, Damage] = {}
    for row in models_with_files(conn):
        is_champion = row["version"] == champion_version
        damage = inspect_files(row, read=is_champion)
        if damage is None:
            continue
        damaged[damage.version] = damage
        logger.warning(
            "%s: %s",
            damage.describe(),
            "it is the champion, so it is retrained from the database"
            if is_champion
            else "it is not the champion, so nothing uses it; nothing is retrained for it",
        )
    return damaged


def _decide(
    conn: Connection,
    home: Path,
    mode: str,
    sequences: _Sequences,
    params: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    as_of: dt.date,
    config: ModelConfig,
    damage: Damage | None = None,
) -> tuple[Decision, SpanErrors | None]:
    """The policy's decision on what the registry and the sequences say, and the
    champion's errors on the newest span if the decision needed them (to look for
    drift; the gate reuses them). A champion with ``damage`` is not evaluated."""
    last_retrain, new_windows, drift, champion_errors = None, 0, None, None
    if champion is not None and damage is None:
        last_retrain = next(
            (row for row in lineage(conn, champion["version"]) if row["mode"] == RETRAIN), None
        )
        new_windows = new_training_windows(sequences.windows, trained_through(champion))
        if checks_drift(mode, champion, params, new_windows):
            champion_errors = evaluate_champion(conn, home, champion, sequences.series)
            drift = champion_drift(champion, champion_errors)
    decision = decide(
        mode,
        champion,
        last_retrain,
        sequences.tickers,
        params,
        as_of,
        config,
        new_windows,
        drift,
        damaged=damage.describe() if damage is not None else None,
    )
    return decision, champion_errors


def _fingerprint(
    action: str,
    sequences: _Sequences,
    params: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
) -> str:
    """The training's fingerprint: a fine-tune's includes its parent's."""
    parent = None
    if action == FINETUNE:
        assert champion is not None
        parent = champion["fingerprint"]
    shas = {row[c.TICKER]: row["sha256"] for row in sequences.rows}
    return training_fingerprint(action, shas, params, parent)


def _plan(
    conn: Connection,
    action: str,
    sequences: _Sequences,
    champion: Mapping[str, Any] | None,
    sequence_config: SequenceConfig,
    model_config: ModelConfig,
) -> _Plan:
    """A retrain starts fresh networks on every training window, with the scalers the
    sequences were built with; a fine-tune continues the champion's file on the
    windows after it, with the champion's scalers. A distributional network also needs
    each ticker's long-run volatility (fitted here for a retrain, inherited otherwise).

    Raises:
        ModelStoreError: the champion's file is missing, or it has no long-run
            volatility for a distributional fine-tune.
    """
    if action == RETRAIN:
        scalers = sequence_scalers(sequences.rows)
        source, epochs, newer_than, parent_version = None, model_config.epochs, None, None
    else:
        assert champion is not None
        scalers = parent_scalers(conn, champion["version"], sequences.tickers)
        source = check_files(champion)
        epochs, newer_than = model_config.finetune_epochs, trained_through(champion)
        parent_version = champion["version"]
    distributional = is_distributional(model_config.loss)
    if distributional and action == RETRAIN:
        volatility = with_long_run_volatility(
            {ticker: row["scaler_params"] for ticker, row in scalers.items()}, sequences.series
        )
        for ticker, row in scalers.items():
            row["scaler_params"] = volatility[ticker]
    missing = [
        ticker for ticker, row in scalers.items() if VOLATILITY_PARAM not in row["scaler_params"]
    ]
    if distributional and missing:
        raise ModelStoreError(
            f"champion v{parent_version} has no long-run volatility for {', '.join(missing)}; "
            "retrain with --mode retrain"
        )
    data = TrainingData(
        windows=sequences.windows,
        params={ticker: row["scaler_params"] for ticker, row in scalers.items()},
        window=sequence_config.window,
        scaling=sequence_config.scaling,
        distributional=distributional,
    )
    return _Plan(action, data, scalers, source, epochs, newer_than, parent_version)


def _fit(
    conn: Connection,
    home: Path,
    plan: TrainingPlan,
    outcomes: Sequence[NetworkOutcome],
) -> _Trained:
    """Write the fitted networks into a staging folder, gate the new version against
    the champion, and publish its files under the next version number (promoted or
    not: the registry keeps every version); the staging folder never outlives this."""
    assert plan.sequences is not None and plan.config is not None
    config, champion, damage = plan.config, plan.champion, plan.damage
    champion_errors = plan.champion_errors
    version = next_version(conn)
    single = config.scope == "global" and config.ticker_groups == 1
    path = model_path(home, version, "global" if single else "grouped")
    staging = staging_folder(path)
    try:
        save_outcomes(outcomes, staging)
        model = combine_outcomes(outcomes)
        fitted = model.fitted
        if fitted.train_samples == 0:
            raise MissingDataError(f"no training windows as of {plan.as_of}")
        rate = fitted.train_samples * fitted.epochs_run / fitted.seconds if fitted.seconds else None
        damping = model.damping if config.damping else {}
        if config.damping:
            _log_damping(damping)
        if champion is not None and champion_errors is None and damage is None:
            champion_errors = evaluate_champion(conn, home, champion, plan.sequences.series)
        verdict = gate(model.errors, champion, champion_errors, damaged=damage is not None)
        path = publish_networks(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _Trained(version, path, model, damping, rate, verdict, champion_errors)


def _register(
    conn: Connection,
    sequences: _Sequences,
    params: Mapping[str, Any],
    plan: _Plan,
    trained: _Trained,
    digest: str,
    champion: Mapping[str, Any] | None,
    trained_at: dt.datetime | None,
) -> dt.date:
    """Register the new version; return the newest price date its sequences saw."""
    data_through = max(row["data_through"] for row in sequences.rows)
    train_through = max(
        through
        for through in (windows.train_through() for windows in sequences.windows.values())
        if through is not None
    )
    register_version(
        conn,
        version=trained.version,
        fingerprint=digest,
        action=plan.action,
        parent_version=plan.parent_version,
        trained_at=trained_at,
        data_through=data_through,
        train_through=train_through,
        tickers=sequences.tickers,
        params=params,
        path=trained.path,
        scalers=plan.scalers,
        fitted=trained.model.fitted,
        errors=trained.model.errors,
        damping=trained.damping,
        intervals=trained.model.intervals,
        verdict=trained.verdict,
        champion=champion,
    )
    logger.info(
        "registered model v%d (%s, data through %s, %d epochs, MASE %.4f on the newest span, "
        "%.0f samples/s); %s",
        trained.version,
        plan.action,
        data_through,
        trained.model.fitted.epochs_run,
        trained.model.errors.mase,
        trained.samples_per_second or 0.0,
        trained.verdict.decision,
    )
    return data_through


def _trained_result(
    decision: Decision,
    sequences: _Sequences,
    plan: _Plan,
    trained: _Trained,
    champion: Mapping[str, Any] | None,
    data_through: dt.date,
    training: TrainingPlan,
) -> ModelSummary:
    fitted, errors, promoted = trained.model.fitted, trained.model.errors, trained.verdict.promoted
    champion_errors = trained.champion_errors
    champion_version = trained.version if promoted else champion["version"]  # type: ignore[index]
    result = ModelSummary(
        model_version=trained.version,
        champion_version=champion_version,
        action=plan.action,
        reason=decision.reason,
        created=True,
        promoted=promoted,
        decision=trained.verdict.decision,
        data_through=data_through,
        tickers=sequences.tickers,
        val_loss=fitted.val_loss,
        val_mase=finite(errors.mase),
        champion_val_mase=finite(errors.mase)
        if promoted
        else (champion_errors.mase if champion_errors else None),
        epochs_run=fitted.epochs_run,
        train_samples=fitted.train_samples,
        fit_seconds=fitted.seconds,
        samples_per_second=trained.samples_per_second,
        damaged_files=list(training.damaged_files),
    )
    _warn_if_naive_wins(result)
    return result


def _log_damping(damping: Mapping[str, float]) -> None:
    """The damping fitted: a summary at INFO (one line whatever the universe), each
    ticker's factor at DEBUG."""
    if not damping:
        return
    factors = np.array(list(damping.values()), dtype=float)
    logger.info(
        "damping fitted on the validation span for %d tickers: %d kept the network's move "
        "(1.0), %d the last close (0.0), median factor %.2f",
        len(factors),
        int((factors == 1.0).sum()),
        int((factors == 0.0).sum()),
        float(np.median(factors)),
    )
    logger.debug("damping per ticker: %s", dict(damping))


def _warn_if_naive_wins(result: ModelSummary) -> None:
    mase = result.champion_val_mase
    if mase is not None and mase > 1.0:
        logger.warning(
            "champion v%d loses to the naive forecast on the newest span (MASE %.4f > 1)",
            result.champion_version,
            mase,
        )


def _reused(
    model: Mapping[str, Any],
    champion: Mapping[str, Any],
    reason: str,
    champion_errors: SpanErrors | None = None,
    damaged_files: Sequence[str] = (),
) -> ModelSummary:
    logger.info("using model v%d: %s", model["version"], reason)
    champion_mase = champion.get("val_mase")
    if champion_errors is not None and champion_errors.n:
        champion_mase = champion_errors.mase
    result = ModelSummary(
        model_version=model["version"],
        champion_version=champion["version"],
        action=REUSE,
        reason=reason,
        created=False,
        promoted=bool(model.get("promoted", True)),
        decision=model.get("decision") or "",
        data_through=model["data_through"],
        tickers=list(model["tickers"]),
        val_loss=model["val_loss"],
        val_mase=model.get("val_mase"),
        champion_val_mase=finite(champion_mase),
        damaged_files=list(damaged_files),
    )
    _warn_if_naive_wins(result)
    return result
