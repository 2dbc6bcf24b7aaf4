"""The backtest flow under Prefect's test harness."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import TINY_OVERRIDES as TINY
from helpers import synthetic_prices

from flows.backtest import backtest_flow
from pipeline.db.backtests import read_backtest_metrics
from pipeline.db.migrate import open_database
from pipeline.db.prices import upsert_prices
from pipeline.evaluate.volatility import INTERVAL_BASELINES


def test_the_backtest_flow_stores_metrics_and_writes_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bt.db'}"
    engine = open_database(url)
    with engine.begin() as conn:
        upsert_prices(conn, synthetic_prices(("AAA", "BBB"), days=100))
    result = backtest_flow(
        folds=2,
        horizon=2,
        database_url=url,
        overrides=TINY,
        json_path=str(tmp_path / "bt.json"),
        points_path=str(tmp_path / "points.parquet"),
    )
    records = json.loads((tmp_path / "bt.json").read_text())
    models = ("default", "naive", "drift", "ar1_log_returns", *INTERVAL_BASELINES)
    assert {(r["model"], r["horizon"]) for r in records} == {
        (model, h) for model in models for h in (1, 2)
    }
    assert all(r["default"] == (r["model"] == "default") for r in records)
    with engine.connect() as conn:
        metrics = read_backtest_metrics(conn, result.run_id)
    # 7 models x 2 tickers x 2 folds x 2 steps.
    assert len(metrics) == 56
    # The points file: every point of every model, and the stored coverage recomputed from it.
    points = pd.read_parquet(tmp_path / "points.parquet")
    assert len(points) == metrics["n"].sum()
    group = points[
        (points["model"] == "naive_garch")
        & (points["ticker"] == "AAA")
        & (points["fold"] == 1)
        & (points["horizon"] == 2)
    ]
    inside = ((group["lower"] <= group["y"]) & (group["y"] <= group["upper"])).mean()
    stored = metrics.set_index(["model", "ticker", "fold", "horizon"])
    assert stored.loc[("naive_garch", "AAA", 1, 2), "coverage"] == pytest.approx(inside)
    assert set(points.loc[points["is_default"], "model"]) == {"default"}
