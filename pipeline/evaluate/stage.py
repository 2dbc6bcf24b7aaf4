"""The backtest stage: prices from the database in, metrics tables out."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.backtests import replace_backtest
from pipeline.db.prices import read_closes
from pipeline.db.schema import backtest_metrics, backtest_runs
from pipeline.db.tickers import inactive_tickers
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.evaluate.backtest import DEFAULT_BASELINES, backtest
from pipeline.evaluate.plan import BacktestConfig, BacktestPlan, plan_backtest
from pipeline.evaluate.scores import BacktestResult
from pipeline.evaluate.variants import Variant, describe_variants
from pipeline.files import sha256_json
from pipeline.results import BacktestScore, BacktestSummary

logger = logging.getLogger(__name__)


@dataclass
class BacktestRun:
    """A stored backtest."""

    run_id: str
    as_of: dt.date
    result: BacktestResult


#: Per ticker, its trade dates and closes, oldest first.
Series = dict[str, tuple[list[dt.date], np.ndarray]]


def backtest_series(
    conn: Connection,
    as_of: dt.date,
    variants: Sequence[Variant],
    tickers: Sequence[str] | None = None,
) -> Series:
    """The closes a backtest of ``variants`` reads: every (active, when ``tickers`` is
    ``None``) ticker's prices up to ``as_of``, in the variants' price field.

    Raises:
        ConfigurationError: the variants use different price fields.
        MissingDataError: no prices for the tickers.
    """
    price_fields = {variant.sequence.price_field for variant in variants} or {c.CLOSE}
    if len(price_fields) > 1:
        raise ConfigurationError("all variants of one backtest must use the same price field")
    closes = read_closes(conn, as_of, tickers, field=price_fields.pop())
    if tickers is None:
        closes = closes[~closes[c.TICKER].isin(inactive_tickers(conn))]
    if closes.empty:
        raise MissingDataError(f"no prices on or before {as_of} to backtest; ingest prices first")
    return {
        str(ticker): (list(group[c.TRADE_DATE]), group[c.CLOSE].to_numpy(dtype=float))
        for ticker, group in closes.groupby(c.TICKER, sort=True)
    }


def backtest_plan(
    conn: Connection,
    as_of: dt.date,
    variants: Sequence[Variant],
    config: BacktestConfig,
    tickers: Sequence[str] | None = None,
) -> BacktestPlan:
    """The plan of a backtest on the stored prices (``pipeline.evaluate.plan``), from
    which each unit can be computed on its own.

    Raises:
        MissingDataError: no prices for the tickers.
        ConfigurationError: no ticker is long enough for the folds.
    """
    series = backtest_series(conn, as_of, variants, tickers)
    try:
        return plan_backtest(series, variants, config)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def store_backtest(
    conn: Connection,
    as_of: dt.date,
    series: Series,
    variants: Sequence[Variant],
    config: BacktestConfig,
    result: BacktestResult,
    *,
    now: dt.datetime | None = None,
) -> BacktestRun:
    """Store a backtest's run row and metrics under its run id, a hash of the inputs
    (closes, variants, settings), replacing an identical earlier run's rows."""
    described = describe_variants(variants)
    run_id = sha256_json(
        {
            "as_of": as_of,
            "config": asdict(config),
            "variants": described,
            "data": {t: [str(d[-1]), len(v), float(v.sum())] for t, (d, v) in series.items()},
        }
    )[:32]
    stored = replace_backtest(
        conn,
        {
            "run_id": run_id,
            "created_at": now or dt.datetime.now(dt.UTC),
            c.AS_OF_DATE: as_of,
            "folds": config.folds,
            c.HORIZON: config.horizon,
            "test_fraction": config.test_fraction,
            "origins": config.origins,
            "interval_level": config.interval_level,
            "tickers": sorted(series),
            "models": described + [{"name": name, "baseline": True} for name in DEFAULT_BASELINES],
        },
        result.metrics(by_fold=True),
    )
    logger.info("backtest %s: %d metric rows stored", run_id, stored)
    return BacktestRun(run_id=run_id, as_of=as_of, result=result)


def run_backtest(
    conn: Connection,
    as_of: dt.date,
    variants: Sequence[Variant],
    config: BacktestConfig,
    tickers: Sequence[str] | None = None,
    *,
    now: dt.datetime | None = None,
) -> BacktestRun:
    """Backtest ``variants`` and the baselines on the prices up to ``as_of``; store the metrics.

    The run id is a hash of the inputs (closes, variants, settings), so
    rerunning an identical backtest replaces its own rows.

    Raises:
        MissingDataError: no prices for the tickers.
        ConfigurationError: no ticker is long enough for the folds.
    """
    series = backtest_series(conn, as_of, variants, tickers)
    try:
        result = backtest(series, variants, config)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    return store_backtest(conn, as_of, series, variants, config, result, now=now)


def latest_backtest_summary(conn: Connection) -> BacktestSummary | None:
    """The newest backtest's one-step MASE, coverage and MSIS per model (folds and tickers
    pooled by mean), or ``None`` when no backtest was stored."""
    run = (
        conn.execute(sa.select(backtest_runs).order_by(backtest_runs.c.created_at.desc()).limit(1))
        .mappings()
        .first()
    )
    if run is None:
        return None
    rows = conn.execute(
        sa.select(
            backtest_metrics.c.model,
            backtest_metrics.c.is_default,
            sa.func.avg(backtest_metrics.c.mase),
            sa.func.avg(backtest_metrics.c.coverage),
            sa.func.avg(backtest_metrics.c.msis),
        )
        .where(backtest_metrics.c.run_id == run["run_id"], backtest_metrics.c[c.HORIZON] == 1)
        .group_by(backtest_metrics.c.model, backtest_metrics.c.is_default)
        .order_by(sa.func.avg(backtest_metrics.c.mase))
    ).all()
    return BacktestSummary(
        run_id=run["run_id"],
        as_of=run[c.AS_OF_DATE],
        models=[
            BacktestScore(
                model=model,
                default=bool(default),
                mase=None if mase is None else float(mase),
                coverage=None if coverage is None else float(coverage),
                msis=None if msis is None else float(msis),
            )
            for model, default, mase, coverage, msis in rows
        ],
    )
