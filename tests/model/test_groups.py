"""Grouped networks: the tickers split into ``ticker_groups`` groups by a hash of the
symbol, one network per group, stored, reloaded, fine-tuned and forecast with."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL, TINY_SEQUENCES, synthetic_prices
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.forecasts import read_forecasts
from pipeline.db.migrate import open_database
from pipeline.db.models import get_model
from pipeline.db.prices import upsert_prices
from pipeline.errors import ModelStoreError
from pipeline.model.config import ModelConfig
from pipeline.model.fit import network_members
from pipeline.model.forecast import forecast
from pipeline.model.groups import group_key, group_of, parse_group_key, ticker_groups
from pipeline.model.numpy_lstm import read_networks
from pipeline.model.predictor import load_predictor
from pipeline.model.registry import hyperparameters
from pipeline.model.store import GLOBAL, load_networks
from pipeline.model.train import train
from pipeline.results import ModelSummary
from pipeline.sequences.build import build_sequences

#: Under 3 groups: AAA and BBB in the first, CCC in the second, FFF in the third.
TICKERS = ("AAA", "BBB", "CCC", "FFF")
PRICES = synthetic_prices(TICKERS, days=80)
DATES = [pd.Timestamp(day).date() for day in PRICES[c.TRADE_DATE].unique()]
GROUPED = TINY_MODEL.replace(ticker_groups=3)


def test_a_group_is_a_hash_of_the_symbol_alone() -> None:
    """Fixed values: the rule must not change between versions (it decides which
    network forecasts a ticker), nor between processes (``hash`` is salted)."""
    assert [group_of(ticker, 3) for ticker in TICKERS] == [0, 0, 1, 2]
    assert [group_of(ticker, 4) for ticker in ("AAPL", "AMZN", "JPM", "XOM")] == [3, 0, 2, 1]
    universe = [f"T{number:04d}" for number in range(1000)]
    before = ticker_groups(universe, 4)
    after = ticker_groups([*universe, "NEW", "ZZZ"][5:], 4)  # 2 added, 5 removed
    for key, members in before.items():
        kept = [ticker for ticker in members if ticker in universe[5:]]
        assert [ticker for ticker in after[key] if ticker in universe] == kept
    sizes = sorted(len(members) for members in before.values())
    assert sizes[0] > 200 and sizes[-1] < 300  # near-equal: 233 to 262
    assert parse_group_key(group_key(2, 4)) == (2, 4)
    assert parse_group_key("AAA") is None and parse_group_key("group-5-of-4") is None


def test_one_group_and_per_ticker_keep_their_networks_and_fingerprint_inputs() -> None:
    assert network_members(TICKERS, TINY_MODEL) == {GLOBAL: list(TICKERS)}
    per_ticker = TINY_MODEL.replace(scope="per_ticker")
    assert network_members(TICKERS, per_ticker) == {ticker: [ticker] for ticker in TICKERS}
    assert network_members(TICKERS, GROUPED) == {
        "group-1-of-3": ["AAA", "BBB"],
        "group-2-of-3": ["CCC"],
        "group-3-of-3": ["FFF"],
    }
    # One group registers the hyperparameters (and fingerprint) of before groups existed.
    assert "ticker_groups" not in hyperparameters(TINY_SEQUENCES, TINY_MODEL)
    assert hyperparameters(TINY_SEQUENCES, GROUPED)["ticker_groups"] == 3
    with pytest.raises(ValidationError, match="PRICECAST_TICKER_GROUPS=3 splits"):
        ModelConfig(scope="per_ticker", ticker_groups=3)


def _prepared(tmp_path: Path, name: str, as_of: dt.date) -> tuple[Engine, Path]:
    engine = open_database(f"sqlite:///{tmp_path / name}.db")
    home = tmp_path / name
    with engine.begin() as conn:
        upsert_prices(conn, PRICES)
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
    return engine, home


def _train(
    engine: Engine,
    home: Path,
    as_of: dt.date,
    config: ModelConfig,
    mode: str = "auto",
    tickers: list[str] | None = None,
) -> ModelSummary:
    with engine.begin() as conn:
        return train(conn, home, as_of, tickers, mode, TINY_SEQUENCES, config, workers=0)


def test_a_grouped_model_holds_one_network_per_group_and_forecasts_every_ticker(
    tmp_path: Path,
) -> None:
    engine, home = _prepared(tmp_path, "grouped", DATES[59])
    result = _train(engine, home, DATES[59], GROUPED)
    assert (result.model_version, result.action, result.promoted) == (1, "retrain", True)
    with engine.connect() as conn:
        row = get_model(conn, 1)
        predictor = load_predictor(conn, row)
    path = Path(row["file_path"])
    assert row["hyperparameters"]["ticker_groups"] == 3
    assert sorted(file.name for file in path.iterdir()) == [
        "group-1-of-3.keras",
        "group-2-of-3.keras",
        "group-3-of-3.keras",
    ]
    # Each ticker predicts with its group's network; the tickers of a group share one.
    assert predictor.networks["AAA"] is predictor.networks["BBB"]
    assert predictor.networks["AAA"] is not predictor.networks["CCC"]
    with engine.begin() as conn:
        written = forecast(conn, DATES[59], None, 2, 1)
        frame = read_forecasts(conn, DATES[59])
    assert written.summary().forecasts_written == 2 * len(TICKERS)
    assert sorted(frame[c.TICKER].unique()) == list(TICKERS)
    assert np.isfinite(frame[c.YHAT].to_numpy(dtype=float)).all()

    # A group's network is the network one global model of its tickers alone gets.
    alone_engine, alone_home = _prepared(tmp_path, "alone", DATES[59])
    alone = _train(alone_engine, alone_home, DATES[59], TINY_MODEL, tickers=["AAA", "BBB"])
    with alone_engine.connect() as conn:
        (single,) = load_networks(Path(get_model(conn, alone.model_version)["file_path"])).values()
    grouped = load_networks(path)
    assert sorted(grouped) == ["group-1-of-3", "group-2-of-3", "group-3-of-3"]
    for mine, theirs in zip(
        grouped["group-1-of-3"].get_weights(), single.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)
    assert not np.array_equal(
        grouped["group-2-of-3"].get_weights()[0], grouped["group-1-of-3"].get_weights()[0]
    )

    # The next day fine-tunes each group's network; another grouping retrains.
    with engine.begin() as conn:
        build_sequences(conn, home, DATES[62], config=TINY_SEQUENCES)
    tuned = _train(engine, home, DATES[62], GROUPED)
    assert (tuned.model_version, tuned.action) == (2, "finetune")
    regrouped = _train(engine, home, DATES[62], GROUPED.replace(ticker_groups=2))
    assert (regrouped.model_version, regrouped.action) == (3, "retrain")
    assert "'ticker_groups': 3" in regrouped.reason
    engine.dispose()
    alone_engine.dispose()


def test_a_grouped_folder_without_a_tickers_group_is_an_error(tmp_path: Path) -> None:
    engine, home = _prepared(tmp_path, "grouped", DATES[59])
    _train(engine, home, DATES[59], GROUPED)
    with engine.connect() as conn:
        path = Path(get_model(conn, 1)["file_path"])
    (path / "group-2-of-3.keras").unlink()
    assert sorted(read_networks(path, ["AAA", "FFF"])) == ["AAA", "FFF"]
    with pytest.raises(ModelStoreError, match=r"has no network for CCC \(group-2-of-3\)"):
        read_networks(path, ["AAA", "CCC"])
    engine.dispose()


def test_fit_networks_of_a_grouping_give_each_ticker_its_groups_network() -> None:
    """What backtests fit (``fresh_networks``, ``fit_networks``): a predictor finds each
    ticker's network by its symbol."""
    from benchmarks.train_memory import synthetic_data
    from pipeline.model.fit import fit_networks, fresh_networks

    data, _ = synthetic_data(5, 40, TINY_SEQUENCES, seed=1)  # point windows: a point loss
    config = GROUPED.replace(loss="mse", intervals="ewma")
    networks = fresh_networks(data.tickers, TINY_SEQUENCES.window, config)
    groups = ticker_groups(data.tickers, 3)
    assert sorted(networks) == sorted(groups)
    fitted = fit_networks(data, networks, config, 1, None, "test")
    assert sorted(fitted.networks) == data.tickers
    for key, members in groups.items():
        assert all(fitted.networks[ticker] is networks[key] for ticker in members)
    assert fitted.train_samples == sum(windows.n_train for windows in data.windows.values())


def test_the_three_steps_with_jobs_carried_elsewhere_register_what_train_does(
    tmp_path: Path,
) -> None:
    """``plan_training``, each job pickled and fitted as a remote worker would (no
    database, no home folder), ``finish_training``: the version ``train()`` registers."""
    import pickle

    from pipeline.model.fit import fit_network
    from pipeline.model.train import finish_training, plan_training

    whole_engine, whole_home = _prepared(tmp_path, "whole", DATES[59])
    whole = _train(whole_engine, whole_home, DATES[59], GROUPED)
    engine, home = _prepared(tmp_path, "split", DATES[59])
    with engine.begin() as conn:
        plan = plan_training(conn, home, DATES[59], None, "auto", TINY_SEQUENCES, GROUPED)
    assert plan.fits and [job.key for job in plan.jobs] == list(network_members(TICKERS, GROUPED))
    outcomes = [fit_network(pickle.loads(pickle.dumps(job))) for job in plan.jobs]
    with engine.begin() as conn, pytest.raises(ValueError, match="the plan's jobs for"):
        finish_training(conn, home, plan, outcomes[::-1])
    with engine.begin() as conn:
        split = finish_training(conn, home, plan, outcomes)
    varying = {"fit_seconds", "samples_per_second"}
    assert split.model_dump(exclude=varying) == whole.model_dump(exclude=varying)
    with engine.connect() as conn, whole_engine.connect() as other:
        ours, theirs = get_model(conn, 1), get_model(other, 1)
    for key in ("fingerprint", "hyperparameters", "val_loss", "val_mase", "decision"):
        assert ours[key] == theirs[key]
    engine.dispose()
    whole_engine.dispose()
