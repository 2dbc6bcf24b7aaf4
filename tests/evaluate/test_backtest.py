"""Walk-forward backtests: folds, no leakage into the scaler, baselines, stored metrics."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL, TINY_SEQUENCES, synthetic_prices, table_snapshot
from sqlalchemy.engine import Engine

import pipeline.evaluate.backtest as backtest_module
from pipeline import columns as c
from pipeline.db.backtests import read_backtest_metrics
from pipeline.db.prices import upsert_prices
from pipeline.errors import ConfigurationError
from pipeline.evaluate.backtest import backtest, merge_units, run_unit
from pipeline.evaluate.plan import BacktestConfig, BacktestUnit, Fold, fold_bounds, plan_backtest
from pipeline.evaluate.scores import BacktestResult
from pipeline.evaluate.stage import backtest_plan, run_backtest
from pipeline.evaluate.variants import Variant, variants

PRICES = synthetic_prices(("AAA", "BBB"), days=120)
SERIES = {
    ticker: (list(group[c.TRADE_DATE].dt.date), group[c.CLOSE].to_numpy())
    for ticker, group in PRICES.groupby(c.TICKER)
}
TINY = Variant("default", TINY_SEQUENCES, TINY_MODEL, is_default=True)


def test_fold_bounds_cut_the_last_share_into_contiguous_folds() -> None:
    config = BacktestConfig(folds=5, test_fraction=0.2)
    assert fold_bounds(100, config, 10) == [
        Fold(0, 0, 80, 84),
        Fold(1, 0, 84, 88),
        Fold(2, 0, 88, 92),
        Fold(3, 0, 92, 96),
        Fold(4, 0, 96, 100),
    ]
    rolling = BacktestConfig(folds=2, test_fraction=0.2, origins="rolling", rolling_size=30)
    assert fold_bounds(100, rolling, 10) == [Fold(0, 50, 80, 90), Fold(1, 60, 90, 100)]
    assert fold_bounds(20, config, 17) == []


def test_a_folds_scaler_never_sees_its_test_span(monkeypatch: pytest.MonkeyPatch) -> None:
    series = {ticker: (dates, closes.copy()) for ticker, (dates, closes) in SERIES.items()}
    series["AAA"][1][100:] *= 10  # the test span trades far above anything before it
    seen = []
    real = backtest_module.ticker_windows

    def spy(dates, closes, config):  # noqa: ANN001, ANN202
        windows, description = real(dates, closes, config)
        seen.append((np.array(closes), dates[-1], description["scaler_params"]))
        return windows, description

    monkeypatch.setattr(backtest_module, "ticker_windows", spy)
    config = BacktestConfig(folds=2, test_fraction=0.2)
    backtest(series, [TINY], config, baselines=())
    bounds = fold_bounds(120, config, 1)
    for fold in bounds:
        training = series["AAA"][1][: fold.test_start]
        _, last, params = next(row for row in seen if np.array_equal(row[0], training))
        assert last == series["AAA"][0][fold.test_start - 1]
        assert params["max"] <= training.max()
        assert params["max"] < series["AAA"][1][fold.test_start :].min()


def test_baselines_score_against_the_naive_forecast_on_the_same_points() -> None:
    config = BacktestConfig(folds=2, horizon=2, test_fraction=0.2)
    result = backtest(SERIES, [], config)
    metrics = result.metrics()
    naive = metrics[metrics["model"] == "naive"]
    assert (naive["mase"] == 1.0).all()
    # The drift forecast of AAA's first test origin, by hand.
    closes = SERIES["AAA"][1]
    origin = 95  # 120 closes, 24 in the test span, fold 0 starts at close 96
    slope = (closes[origin] - closes[0]) / origin
    points = result.points
    first = points[
        (points["model"] == "drift") & (points[c.TICKER] == "AAA") & (points["fold"] == 0)
    ].iloc[:2]
    np.testing.assert_allclose(first["yhat"], closes[origin] + slope * np.array([1, 2]))
    np.testing.assert_allclose(first["y"], closes[origin + 1 : origin + 3])
    # Every model scores the same points per step.
    counts = metrics.groupby(["model", c.HORIZON])["n"].sum().unstack()
    assert (counts.nunique() == 1).all()


def test_lstm_records_carry_every_key_and_interval_coverage() -> None:
    config = BacktestConfig(folds=2, horizon=2, test_fraction=0.2)
    result = backtest(SERIES, [TINY], config)
    records = result.records()
    assert {"model", "ticker", "horizon", "mase", "mae", "rmse", "coverage", "default"} <= set(
        records[0]
    )
    lstm = [r for r in records if r["model"] == "default"]
    assert len(lstm) == 4 and all(r["default"] for r in lstm)
    assert all(0.0 <= r["coverage"] <= 1.0 for r in lstm)
    assert not any(r["default"] for r in records if r["model"] != "default")
    table = result.table()
    assert set(table["model"]) == {
        "default",
        "naive",
        "drift",
        "ar1_log_returns",
        "naive_quantile",
        "naive_ewma",
        "naive_garch",
    }
    assert {"msis", "width", "coverage_high_vol", "spl", "spl_q05", "spl_q95"} <= set(records[0])


def test_interval_metrics_are_recomputed_from_the_points() -> None:
    config = BacktestConfig(folds=2, horizon=2, test_fraction=0.2)
    result = backtest(SERIES, [], config)
    points = result.points
    closes = SERIES["AAA"][1]
    # MSIS's scale: the mean absolute daily change of the fold's training span.
    fold1 = points[(points[c.TICKER] == "AAA") & (points["fold"] == 1)]
    start = fold_bounds(120, config, 1)[1].test_start
    assert fold1["score_scale"].unique() == pytest.approx(np.abs(np.diff(closes[:start])).mean())
    # The volatile days: a fifth of the test days, by the 10-day realised volatility.
    returns = np.diff(np.log(closes))
    realised = np.array([np.sqrt(np.mean(returns[max(0, t - 10) : t] ** 2)) for t in range(1, 121)])
    test = realised[95:]  # target positions 96..119
    flagged = set(np.flatnonzero(test >= np.quantile(test, 0.8)) + 96)
    naive = points[(points["model"] == "naive") & (points[c.TICKER] == "AAA")]
    naive = naive[naive[c.HORIZON] == 1]
    positions = {SERIES["AAA"][0].index(day) for day in naive.loc[naive["high_vol"], "target_date"]}
    assert positions == flagged
    # Every interval metric of one group, by hand from its points.
    group = points[
        (points["model"] == "naive_ewma")
        & (points[c.TICKER] == "AAA")
        & (points["fold"] == 0)
        & (points[c.HORIZON] == 1)
    ]
    y, low, high = group["y"].to_numpy(), group["lower"].to_numpy(), group["upper"].to_numpy()
    penalty = 20.0 * (np.clip(low - y, 0, None) + np.clip(y - high, 0, None))  # 2 / 0.1
    scores = (high - low) + penalty
    row = result.metrics().set_index(["model", c.TICKER, "fold", c.HORIZON])
    row = row.loc[("naive_ewma", "AAA", 0, 1)]
    assert row["coverage"] == pytest.approx(np.mean((low <= y) & (y <= high)))
    assert row["interval_score"] == pytest.approx(scores.mean())
    assert row["msis"] == pytest.approx((scores / group["score_scale"]).mean())
    assert row["width"] == pytest.approx(((high - low) / group["naive"]).mean())
    q05 = group["q05"].to_numpy()
    assert row["spl_q05"] == pytest.approx(
        (np.maximum(0.05 * (y - q05), -0.95 * (y - q05)) / group["score_scale"]).mean()
    )
    volatile = group["high_vol"].to_numpy()
    if volatile.any():
        inside = (low <= y) & (y <= high)
        assert row["coverage_high_vol"] == pytest.approx(inside[volatile].mean())
    # The 90 % interval's bounds are the 5 % and 95 % quantiles.
    np.testing.assert_allclose(group["lower"], group["q05"])
    np.testing.assert_allclose(group["upper"], group["q95"])


def test_the_lstm_intervals_follow_the_volatility_at_each_origin() -> None:
    config = BacktestConfig(folds=2, horizon=2, test_fraction=0.2)
    static = dataclasses.replace(
        TINY,
        name="static",
        is_default=False,
        model=TINY_MODEL.replace(intervals="static"),
    )
    points = backtest(SERIES, [TINY, static], config, baselines=()).points
    for (model, _, _, _), group in points.groupby(["model", c.TICKER, "fold", c.HORIZON]):
        half_widths = np.log(group["upper"] / group["yhat"]).to_numpy()
        if model == "static":  # one width for every origin
            assert np.ptp(half_widths) < 1e-12
            assert group["scale"].isna().all()
        else:  # a calibrated multiple of the predicted scale, which moves
            np.testing.assert_allclose(
                half_widths / group["scale"], half_widths[0] / group["scale"].iloc[0]
            )
            assert np.ptp(group["scale"]) > 0


def test_the_stage_stores_metrics_and_a_rerun_replaces_them(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_prices(conn, PRICES)
    as_of = PRICES[c.TRADE_DATE].max().date()
    config = BacktestConfig(folds=2, horizon=1, test_fraction=0.2)
    with engine.begin() as conn:
        first = run_backtest(
            conn, as_of, [TINY], config, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        )
    before = table_snapshot(engine)
    with engine.begin() as conn:
        second = run_backtest(conn, as_of, [TINY], config)
        stored = read_backtest_metrics(conn, first.run_id)
    assert second.run_id == first.run_id
    assert table_snapshot(engine) == before
    # 7 models (the LSTM, 6 baselines) x 2 tickers x 2 folds x 1 step.
    assert len(stored) == 28
    ewma = stored[stored["model"] == "naive_ewma"]
    assert ewma["msis"].notna().all() and ewma["spl_q50"].notna().all()
    assert stored.loc[stored["model"] == "drift", "msis"].isna().all()
    assert stored.loc[stored["model"] == "naive", "mase"].eq(1.0).all()
    assert stored["is_default"].sum() == 4


def test_variants_are_named_and_the_tutorial_is_reproducible() -> None:
    chosen = variants(["default", "tutorial"], TINY_SEQUENCES, TINY_MODEL)
    tutorial = chosen[1]
    assert (tutorial.sequence.window, tutorial.sequence.scaling) == (10, "minmax")
    model = tutorial.model
    assert (
        model.units,
        model.epochs,
        model.batch_size,
        model.loss,
        model.patience,
        model.scope,
    ) == (
        50,
        20,
        32,
        "mse",
        0,
        "per_ticker",
    )
    with pytest.raises(ValueError, match="unknown model variant nope"):
        variants(["nope"], TINY_SEQUENCES, TINY_MODEL)
    assert TINY_MODEL.replace() == chosen[0].model


def test_a_backtest_is_cut_into_units_per_fold_baselines_first() -> None:
    config = BacktestConfig(folds=2, horizon=1, test_fraction=0.2)
    chosen = [TINY, dataclasses.replace(TINY, name="window3", is_default=False)]
    units = plan_backtest(SERIES, chosen, config).units(chosen)
    assert [(unit.fold, unit.variant) for unit in units] == [
        (0, None), (0, 0), (0, 1), (1, None), (1, 0), (1, 1)
    ]  # fmt: skip
    assert [unit.describe(chosen) for unit in units[3:]] == [
        "fold 2 baselines",
        "fold 2 default",
        "fold 2 window3",
    ]


def test_units_computed_apart_and_in_any_order_merge_into_the_same_backtest() -> None:
    config = BacktestConfig(folds=2, horizon=2, test_fraction=0.2)
    whole = backtest(SERIES, [TINY], config)
    plan = plan_backtest(SERIES, [TINY], config)
    units = plan.units([TINY])
    # Backwards, each from its own plan, as separate workers would.
    parts = {
        unit: run_unit(plan_backtest(SERIES, [TINY], config), unit, [TINY])
        for unit in reversed(units)
    }
    merged = merge_units([parts[unit] for unit in units], [TINY], 0.9)
    pd.testing.assert_frame_equal(merged.points, whole.points)
    pd.testing.assert_frame_equal(merged.metrics(), whole.metrics())
    assert merged.defaults == whole.defaults


def test_a_unit_outside_the_plan_is_refused() -> None:
    config = BacktestConfig(folds=2, horizon=1, test_fraction=0.2)
    plan = plan_backtest(SERIES, [TINY], config)
    with pytest.raises(ValueError, match="fold 2 is outside the plan's 2 folds"):
        run_unit(plan, BacktestUnit(2), [TINY])
    with pytest.raises(ValueError, match="variant 1 is outside the 1 variants"):
        run_unit(plan, BacktestUnit(0, 1), [TINY])
    with pytest.raises(ValueError, match="no ticker has enough closes"):
        plan_backtest({"AAA": (SERIES["AAA"][0][:20], SERIES["AAA"][1][:20])}, [TINY], config)


def test_the_stage_plans_from_the_stored_prices(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_prices(conn, PRICES)
    as_of = PRICES[c.TRADE_DATE].max().date()
    config = BacktestConfig(folds=2, horizon=1, test_fraction=0.2)
    with engine.connect() as conn:
        plan = backtest_plan(conn, as_of, [TINY], config)
        with pytest.raises(ConfigurationError, match="no ticker has enough closes"):
            backtest_plan(conn, dt.date(2024, 1, 19), [TINY], config)
    assert sorted(plan.folds) == ["AAA", "BBB"]
    np.testing.assert_array_equal(plan.prepared["AAA"][1], SERIES["AAA"][1])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_written_points_score_alone_as_the_backtest_did(tmp_path: Path, suffix: str) -> None:
    # The scores module needs nothing of the run but its points: read back from the
    # file ``pricecast backtest --points`` writes, they give the same metrics and table.
    config = BacktestConfig(folds=2, horizon=2, test_fraction=0.2)
    result = backtest(SERIES, [], config)
    path = result.write_points(tmp_path / f"points{suffix}")
    read = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    assert list(read.columns[:2]) == ["model", "is_default"] and set(read["level"]) == {0.9}
    again = BacktestResult(
        points=read.drop(columns=["is_default", "level"]), defaults={}, level=read["level"][0]
    )
    # Parquet keeps every bit; the CSV 10 significant digits.
    close = {"check_exact": True} if suffix == ".parquet" else {"rtol": 1e-6}
    pd.testing.assert_frame_equal(again.metrics(), result.metrics(), **close)
    pd.testing.assert_frame_equal(again.table(), result.table(), **close)
    assert len(again.records()) == len(result.records())
