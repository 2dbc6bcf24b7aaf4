"""The train stage: registry rows, the mode policy, no new version on reruns, seeding."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL, TINY_SEQUENCES
from helpers import synthetic_prices, table_snapshot
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.migrate import open_database
from pipeline.db.models import count_models, get_model, model_scalers
from pipeline.db.prices import upsert_prices
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.store import load_model
from pipeline.model.train import train
from pipeline.sequences.build import build_sequences

PRICES = synthetic_prices(("AAA", "BBB"), days=80)
DATES = [pd.Timestamp(day).date() for day in PRICES[c.TRADE_DATE].unique()]


def prepare(engine: Engine, home: Path, as_of: dt.date, config=TINY_SEQUENCES) -> None:  # noqa: ANN001
    """Load the synthetic prices and build sequences as of ``as_of``."""
    with engine.begin() as conn:
        upsert_prices(conn, PRICES)
        build_sequences(conn, home, as_of, config=config)


def run_train(engine: Engine, home: Path, as_of: dt.date, mode: str = "auto", **changes):  # noqa: ANN003, ANN201
    config = dataclasses.replace(TINY_MODEL, **changes)
    with engine.begin() as conn:
        return train(conn, home, as_of, None, mode, TINY_SEQUENCES, config)


def test_retrain_registers_a_version_with_its_scalers(engine: Engine, home: Path) -> None:
    as_of = DATES[59]
    prepare(engine, home, as_of)
    result = run_train(engine, home, as_of)
    assert (result.version, result.action, result.created) == (1, "retrain", True)
    with engine.connect() as conn:
        row = get_model(conn, 1)
        scalers = model_scalers(conn, 1)
    assert row["mode"] == "retrain" and row["parent_version"] is None
    assert row["data_through"] == as_of
    assert row["tickers"] == ["AAA", "BBB"]
    assert row["hyperparameters"]["units"] == 8 and row["hyperparameters"]["window"] == 5
    # 60 closes -> 55 windows per ticker, 11 of them validate.
    assert (row["train_samples"], row["validation_samples"]) == (88, 22)
    assert row["val_loss"] == pytest.approx(result.val_loss) and row["val_loss"] > 0
    assert Path(row["file_path"]).exists()
    assert Path(row["file_path"]).parent == home / "models"
    assert set(scalers) == {"AAA", "BBB"}
    closes = PRICES.loc[PRICES[c.TICKER] == "AAA", c.CLOSE].to_numpy()[: 44 + 5]
    assert scalers["AAA"]["scaler_params"] == {"min": closes.min(), "max": closes.max()}


def test_rerunning_any_mode_with_the_same_inputs_registers_nothing(
    engine: Engine, home: Path
) -> None:
    as_of = DATES[59]
    prepare(engine, home, as_of)
    run_train(engine, home, as_of, "retrain")
    before = table_snapshot(engine)
    files = sorted((home / "models").iterdir())
    for mode in ("retrain", "auto", "finetune"):
        again = run_train(engine, home, as_of, mode)
        assert (again.version, again.created, again.action) == (1, False, "reuse")
    assert table_snapshot(engine) == before
    assert sorted((home / "models").iterdir()) == files


def test_auto_fine_tunes_on_new_windows_then_reuses(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[59])
    run_train(engine, home, DATES[59])
    prepare(engine, home, DATES[64])
    tuned = run_train(engine, home, DATES[64])
    assert (tuned.version, tuned.action) == (2, "finetune")
    assert "new since model v1" in tuned.reason
    with engine.connect() as conn:
        row = get_model(conn, 2)
        assert row["parent_version"] == 1 and row["data_through"] == DATES[64]
        # 5 new days x 2 tickers, in the parent's scale.
        assert row["train_samples"] == 10
        assert (
            model_scalers(conn, 2)["AAA"]["scaler_params"]
            == (model_scalers(conn, 1)["AAA"]["scaler_params"])
        )
    again = run_train(engine, home, DATES[64])
    assert (again.version, again.action, again.created) == (2, "reuse", False)
    with engine.connect() as conn:
        assert count_models(conn) == 2


def test_auto_retrains_when_the_architecture_changes_or_the_retrain_is_old(
    engine: Engine, home: Path
) -> None:
    prepare(engine, home, DATES[59])
    run_train(engine, home, DATES[59])
    wider = run_train(engine, home, DATES[59], units=4)
    assert wider.action == "retrain" and "architecture" in wider.reason
    prepare(engine, home, DATES[64])
    stale = run_train(engine, home, DATES[64], units=4, retrain_after_days=3)
    assert stale.action == "retrain" and "days old, more than 3" in stale.reason


def test_finetune_needs_a_compatible_model(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[59])
    with pytest.raises(MissingDataError, match="no model trained on data up to"):
        run_train(engine, home, DATES[59], "finetune")
    run_train(engine, home, DATES[59])
    with pytest.raises(ConfigurationError, match="cannot fine-tune: model v1 has architecture"):
        run_train(engine, home, DATES[59], "finetune", units=4)


def test_a_past_as_of_date_never_uses_a_later_model(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[64])
    run_train(engine, home, DATES[64])
    prepare(engine, home, DATES[59])
    earlier = run_train(engine, home, DATES[59])
    assert (earlier.version, earlier.action) == (2, "retrain")
    assert "no model trained on data up to" in earlier.reason


def test_missing_sequences_are_an_error(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[59])
    with pytest.raises(MissingDataError, match="run `pricecast sequences --as-of"):
        run_train(engine, home, DATES[60])


def test_the_same_seed_gives_the_same_weights(tmp_path: Path) -> None:
    weights = []
    for name in ("one", "two"):
        engine = open_database(f"sqlite:///{tmp_path / name}.db")
        home = tmp_path / name
        prepare(engine, home, DATES[59])
        result = run_train(engine, home, DATES[59])
        with engine.connect() as conn:
            path = Path(get_model(conn, result.version)["file_path"])
        weights.append(load_model(path).get_weights())
        engine.dispose()
    for first, second in zip(*weights, strict=True):
        np.testing.assert_array_equal(first, second)
