"""The train stage: registry rows, the policy, the champion gate, reruns, seeding."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL, TINY_SEQUENCES, synthetic_prices, table_snapshot
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.migrate import open_database
from pipeline.db.models import champion_model, count_models, get_model, model_scalers
from pipeline.db.prices import upsert_prices
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.config import ModelConfig
from pipeline.model.forecast import forecast
from pipeline.model.promotion import decide, gate
from pipeline.model.store import load_networks
from pipeline.model.train import train
from pipeline.model.validation import SpanErrors
from pipeline.sequences.build import build_sequences, sequence_path
from pipeline.sequences.files import read_sequence_file

PRICES = synthetic_prices(("AAA", "BBB"), days=80)
DATES = [pd.Timestamp(day).date() for day in PRICES[c.TRADE_DATE].unique()]
LEVEL_FREE = TINY_SEQUENCES.replace(scaling="log_ratio")


def prepare(engine: Engine, home: Path, as_of: dt.date, config=TINY_SEQUENCES) -> None:  # noqa: ANN001
    """Load the synthetic prices and build sequences as of ``as_of``."""
    with engine.begin() as conn:
        upsert_prices(conn, PRICES)
        build_sequences(conn, home, as_of, config=config)


def run_train(  # noqa: ANN201
    engine: Engine,
    home: Path,
    as_of: dt.date,
    mode: str = "auto",
    sequences=TINY_SEQUENCES,  # noqa: ANN001
    **changes,  # noqa: ANN003
):
    config = TINY_MODEL.replace(**changes)
    with engine.begin() as conn:
        return train(conn, home, as_of, None, mode, sequences, config, workers=0)


def test_retrain_registers_a_promoted_version_with_its_scalers_and_errors(
    engine: Engine, home: Path
) -> None:
    as_of = DATES[59]
    prepare(engine, home, as_of)
    result = run_train(engine, home, as_of)
    assert (result.model_version, result.champion_version, result.action) == (1, 1, "retrain")
    assert result.promoted and result.created
    with engine.connect() as conn:
        row = get_model(conn, 1)
        scalers = model_scalers(conn, 1)
    assert row["mode"] == "retrain" and row["parent_version"] is None and row["promoted"]
    assert row["decision"] == "promoted: first model, no champion to compare with"
    assert row["data_through"] == as_of
    assert row["tickers"] == ["AAA", "BBB"]
    assert row["hyperparameters"]["units"] == 8 and row["hyperparameters"]["window"] == 5
    # 60 closes -> 55 windows per ticker, 11 of them validate.
    assert (row["train_samples"], row["validation_samples"]) == (88, 22)
    assert row["train_through"] == DATES[5 + 44 - 1]
    assert Path(row["file_path"]).is_file() and Path(row["file_path"]).parent == home / "models"
    closes = {t: PRICES.loc[PRICES[c.TICKER] == t, c.CLOSE].to_numpy()[:60] for t in ("AAA", "BBB")}
    # The scaler's span, and the long-run volatility the network's volatility input is
    # measured against: the RMS daily log return of the same 49 closes.
    returns = np.diff(np.log(closes["AAA"][:49]))
    assert scalers["AAA"]["scaler_params"] == {
        "min": closes["AAA"][:49].min(),
        "max": closes["AAA"][:49].max(),
        "volatility": pytest.approx(float(np.sqrt(np.mean(returns**2)))),
    }
    # The naive forecast's error on the 11 validation targets, recomputed by hand.
    naive = {t: np.abs(np.diff(v[-12:])).mean() for t, v in closes.items()}
    assert scalers["AAA"]["val_naive_mae"] == pytest.approx(naive["AAA"])
    assert row["val_naive_mae"] == pytest.approx((naive["AAA"] + naive["BBB"]) / 2)
    assert row["val_mase"] == pytest.approx(row["val_mae"] / row["val_naive_mae"])
    intervals = scalers["AAA"]["interval_q"]
    assert intervals["method"] == "network"
    assert sorted(intervals["multipliers"]) == ["0.5", "0.9"]
    assert all(len(m) == TINY_MODEL.horizon for m in intervals["multipliers"].values())


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
        assert (again.model_version, again.created, again.action) == (1, False, "reuse")
    assert table_snapshot(engine) == before
    assert sorted((home / "models").iterdir()) == files


def test_auto_fine_tunes_on_new_training_windows_only_then_reuses(
    engine: Engine, home: Path
) -> None:
    prepare(engine, home, DATES[59])
    run_train(engine, home, DATES[59])
    prepare(engine, home, DATES[69])
    # A tiny model's error swings; drift is tested on its own below.
    tuned = run_train(engine, home, DATES[69], drift_tolerance=100.0)
    assert (tuned.model_version, tuned.action) == (2, "finetune")
    with engine.connect() as conn:
        parent, row = get_model(conn, 1), get_model(conn, 2)
        assert row["parent_version"] == 1 and row["data_through"] == DATES[69]
        assert (
            model_scalers(conn, 2)["AAA"]["scaler_params"]
            == (model_scalers(conn, 1)["AAA"]["scaler_params"])
        )
    expected = 0
    for ticker in ("AAA", "BBB"):
        frame = read_sequence_file(sequence_path(home, ticker))
        train = frame[frame[c.SPLIT] == c.SPLIT_TRAIN]
        expected += int((train[c.TARGET_DATE] > parent["train_through"]).sum())
    assert row["train_samples"] == expected > 0
    assert "promoted" in row["decision"]
    again = run_train(engine, home, DATES[69], drift_tolerance=100.0)
    assert (again.model_version, again.action, again.created) == (2, "reuse", False)
    with engine.connect() as conn:
        assert count_models(conn) == 2


def test_a_run_as_of_an_earlier_date_never_takes_over_a_later_date(
    engine: Engine, home: Path
) -> None:
    """Run as of a date, then as of an earlier one: the earlier run's model (trained on
    less data) is the champion of its own date only; the later date keeps its model,
    for training and for forecasting."""
    from pipeline.db.forecasts import read_forecasts
    from pipeline.model.forecast import forecast

    later, earlier = DATES[69], DATES[59]
    prepare(engine, home, later)
    first = run_train(engine, home, later)
    prepare(engine, home, earlier)
    second = run_train(engine, home, earlier)
    assert second.created and second.promoted  # the champion of its own date
    with engine.begin() as conn:
        assert champion_model(conn, earlier)["version"] == second.model_version
        assert champion_model(conn, DATES[64])["version"] == second.model_version
        assert champion_model(conn, later)["version"] == first.model_version
        assert forecast(conn, later, horizon=2).model_version == first.model_version
        assert set(read_forecasts(conn, later)[c.MODEL_VERSION]) == {first.model_version}
    # A tie on data_through goes to the newest promoted version.
    prepare(engine, home, later)
    third = run_train(engine, home, later, "retrain", seed=8)
    with engine.connect() as conn:
        expected = third.model_version if third.promoted else first.model_version
        assert champion_model(conn, later)["version"] == expected


def test_the_gate_keeps_a_better_champion(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[59], LEVEL_FREE)
    good = run_train(engine, home, DATES[59], sequences=LEVEL_FREE, epochs=3)
    prepare(engine, home, DATES[59])
    # Min-max scaling with one epoch of a tiny network is far from the naive forecast.
    worse = run_train(engine, home, DATES[59], "retrain", units=2, epochs=1)
    assert (worse.model_version, worse.promoted, worse.champion_version) == (
        2,
        False,
        good.model_version,
    )
    with engine.connect() as conn:
        row = get_model(conn, 2)
        assert champion_model(conn, DATES[59])["version"] == good.model_version
    assert row["decision"].startswith("not promoted: MAE ")
    assert f"worse than champion v{good.model_version}'s" in row["decision"]
    assert row["champion_version"] == good.model_version
    assert row["champion_val_mae"] < row["val_mae"]
    assert row["val_msis"] > 0 and row["champion_val_msis"] > 0  # recorded for both


def _span(**tickers: tuple[float, float | None]) -> SpanErrors:
    return SpanErrors(
        {
            ticker: {"n": 10, "mae": mae, "naive_mae": 1.0, "mase": mae, "msis": msis}
            for ticker, (mae, msis) in tickers.items()
        }
    )


def test_the_gate_weighs_the_intervals_as_well_as_the_point_errors() -> None:
    champion = {"version": 3}
    better_points_worse_intervals = _span(AAA=(0.9, 11.0), BBB=(1.0, 10.0))
    theirs = _span(AAA=(1.0, 10.0), BBB=(1.0, 10.0))
    promoted, decision, mae, msis = gate(better_points_worse_intervals, champion, theirs)
    assert not promoted and (mae, msis) == (1.0, 10.0)
    assert "MAE 0.95 on the newest span is no worse than champion v3's 1" in decision
    assert "interval MSIS 10.5 is worse than its 10" in decision
    promoted, decision, _, _ = gate(_span(AAA=(1.0, 9.0), BBB=(1.0, 10.0)), champion, theirs)
    assert promoted and decision.startswith("promoted: ")
    # Without intervals on either side, the point errors decide alone.
    promoted, _, _, msis = gate(_span(AAA=(0.9, None)), champion, theirs)
    assert promoted and msis is None
    # Only the tickers both cover are compared.
    promoted, _, _, _ = gate(_span(AAA=(1.0, 9.0), ZZZ=(5.0, 50.0)), champion, theirs)
    assert promoted


def test_auto_retrains_when_the_architecture_changes_or_the_retrain_is_old(
    engine: Engine, home: Path
) -> None:
    prepare(engine, home, DATES[59])
    run_train(engine, home, DATES[59])
    wider = run_train(engine, home, DATES[59], units=4)
    assert wider.action == "retrain" and "architecture" in wider.reason
    prepare(engine, home, DATES[69])
    # The same architecture as the champion, whichever of the two the gate kept.
    units = 4 if wider.promoted else TINY_MODEL.units
    stale = run_train(engine, home, DATES[69], units=units, retrain_after_days=3)
    assert stale.action == "retrain" and "days old, more than 3" in stale.reason


def test_the_policy_retrains_on_drift_and_says_why() -> None:
    champion = {
        "version": 3,
        "hyperparameters": {"window": 5, "scaling": "minmax", "units": 8},
        "tickers": ["AAA"],
        "data_through": dt.date(2024, 3, 1),
        "train_through": dt.date(2024, 2, 20),
    }
    params = {"window": 5, "scaling": "minmax", "units": 8, "price_field": "close"}
    config = ModelConfig(drift_tolerance=0.1)
    as_of = dt.date(2024, 3, 8)
    action, reason = decide("auto", champion, None, ["AAA"], params, as_of, config, 4, (1.2, 1.0))
    assert action == "retrain"
    assert reason == (
        "champion v3's error drifted: MASE 1.200 on the newest span, 1.000 when promoted "
        "(tolerance 10%)"
    )
    assert decide("auto", champion, None, ["AAA"], params, as_of, config, 4, (1.05, 1.0)) == (
        "finetune",
        "4 training windows are new since champion v3",
    )
    assert decide("auto", champion, None, ["AAA"], params, as_of, config, 0, None)[0] == "reuse"


def test_finetune_needs_a_compatible_champion(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[59])
    with pytest.raises(MissingDataError, match="no champion trained on data up to"):
        run_train(engine, home, DATES[59], "finetune")
    run_train(engine, home, DATES[59])
    with pytest.raises(ConfigurationError, match="cannot fine-tune: champion v1 has architecture"):
        run_train(engine, home, DATES[59], "finetune", units=4)


def test_a_past_as_of_date_never_uses_a_later_model(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[64])
    run_train(engine, home, DATES[64])
    prepare(engine, home, DATES[59])
    earlier = run_train(engine, home, DATES[59])
    assert (earlier.model_version, earlier.action) == (2, "retrain")
    assert "no champion trained on data up to" in earlier.reason


def test_per_ticker_models_save_one_network_per_ticker(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[59])
    result = run_train(engine, home, DATES[59], scope="per_ticker")
    with engine.connect() as conn:
        path = Path(get_model(conn, result.model_version)["file_path"])
    assert path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == ["AAA.keras", "BBB.keras"]


def test_missing_sequences_are_an_error(engine: Engine, home: Path) -> None:
    prepare(engine, home, DATES[59])
    with pytest.raises(MissingDataError, match="run `pricecast sequences --as-of"):
        run_train(engine, home, DATES[60])


def test_the_same_seed_gives_the_same_weights(tmp_path: Path) -> None:
    """Even while another thread draws from Python's and NumPy's global random state,
    as Prefect's background threads may."""
    import random
    import threading

    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()
            np.random.random()

    weights = []
    for name in ("one", "two"):
        engine = open_database(f"sqlite:///{tmp_path / name}.db")
        home = tmp_path / name
        prepare(engine, home, DATES[59])
        drawer = threading.Thread(target=draw, daemon=True)
        if name == "two":
            drawer.start()
        try:
            result = run_train(engine, home, DATES[59], scope="per_ticker")
        finally:
            stop.set()
        with engine.connect() as conn:
            path = Path(get_model(conn, result.model_version)["file_path"])
        weights.append([network.get_weights() for network in load_networks(path).values()])
        engine.dispose()
    for first, second in zip(*weights, strict=True):
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)


def test_damping_is_fitted_on_the_validation_span() -> None:
    from pipeline.model.predictor import Predictor
    from pipeline.model.span import SpanSeries
    from pipeline.model.validation import fit_damping
    from pipeline.sequences.scaling import get_scaler

    class Overshoot:
        """Predicts (scaled) twice the last move: right direction, double the size."""

        def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
            return batch[:, -1, :] + 2 * (batch[:, -1, :] - batch[:, -2, :])

    closes = np.arange(1.0, 21.0)  # rises by exactly 1 a day
    predictor = Predictor(
        window=3,
        scaler=get_scaler("minmax"),
        params={"AAA": {"min": 0.0, "max": 1.0}},
        networks={"*": Overshoot()},
    )
    series = {"AAA": SpanSeries(closes=closes, targets=np.arange(15, 20))}
    # Predictions are last + 2; the truth is last + 1: half the move is right.
    assert fit_damping(predictor, series) == {"AAA": 0.5}


def test_gate_errors_pool_tickers_by_points() -> None:
    errors = SpanErrors(
        {
            "AAA": {"n": 1, "mae": 1.0, "naive_mae": 2.0, "mase": 0.5},
            "BBB": {"n": 3, "mae": 3.0, "naive_mae": 2.0, "mase": 1.5},
        }
    )
    assert (errors.n, errors.mae, errors.naive_mae) == (4, 2.5, 2.0)
    assert errors.mase == 1.25
    assert errors.restricted({"AAA"}).mase == 0.5


# What a damaged file does is the same on every engine: each kind of damage on SQLite,
# the hardest (a valid file of another ticker or version) on PostgreSQL too.
POSTGRES = pytest.mark.postgres


@pytest.mark.parametrize(
    ("db_url", "damage"),
    [
        ("sqlite", "swapped"),
        ("sqlite", "deleted"),
        pytest.param("postgres", "swapped", marks=POSTGRES),
    ],
    indirect=["db_url"],
)
def test_a_damaged_sequence_file_is_rebuilt_from_the_database(
    engine: Engine, home: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another ticker's file copied over AAA's once trained (and promoted) a model on
    BBB's series under AAA's name; ``sequence_files.sha256`` is checked before training,
    and a file that fails the check (or is gone) is rebuilt from the prices."""
    as_of = DATES[59]
    prepare(engine, home, as_of)
    path = sequence_path(home, "AAA")
    built = path.read_bytes()
    if damage == "swapped":
        path.write_bytes(sequence_path(home, "BBB").read_bytes())
    else:
        path.unlink()
    with engine.begin() as conn, caplog.at_level(logging.WARNING):
        result = train(conn, home, as_of, None, "retrain", TINY_SEQUENCES, TINY_MODEL, workers=0)
    assert result.created and result.tickers == ["AAA", "BBB"]
    assert path.read_bytes() == built
    warned = [r.getMessage() for r in caplog.records if "rebuilding it" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0]


def _damage(path: Path, how: str, other: Path | None = None) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    else:  # swapped: another version's valid file
        assert other is not None
        path.write_bytes(other.read_bytes())


@pytest.mark.parametrize(
    ("db_url", "how", "mode"),
    [
        ("sqlite", "deleted", "auto"),
        ("sqlite", "truncated", "finetune"),
        ("sqlite", "random bytes", "auto"),
        ("sqlite", "swapped", "auto"),
        pytest.param("postgres", "swapped", "auto", marks=POSTGRES),
    ],
    indirect=["db_url"],
)
def test_a_damaged_champion_is_retrained_as_a_new_version(
    engine: Engine, home: Path, how: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A deleted, truncated, random or swapped champion file once failed every later
    run; now the run reports it and retrains from the database, whatever the mode."""
    prepare(engine, home, DATES[59])
    first = run_train(engine, home, DATES[59], "retrain")
    with engine.connect() as conn:
        row = get_model(conn, first.model_version)
    path = Path(row["file_path"])
    other = home / "other.keras"
    if how == "swapped":  # a valid network of the same shape, trained on other data
        prepare(engine, home, DATES[49])
        with engine.begin() as conn:
            older = train(
                conn, home, DATES[49], None, "retrain", TINY_SEQUENCES, TINY_MODEL, workers=0
            )
            other = Path(get_model(conn, older.model_version)["file_path"])
        prepare(engine, home, DATES[59])
    _damage(path, how, other)
    with caplog.at_level(logging.WARNING):
        healed = run_train(engine, home, DATES[59], mode)
    assert healed.created and healed.promoted and healed.action == "retrain"
    assert healed.champion_version == healed.model_version > first.model_version
    assert healed.reason.startswith(f"the files of model v{first.model_version} at {path} ")
    assert healed.reason.endswith("; retraining from the database")
    assert f"registered {row['file_sha256']}" in healed.reason
    assert healed.damaged_files == [healed.reason.split("; retraining")[0]]
    warned = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert warned and "it is the champion, so it is retrained" in warned[0]
    with engine.begin() as conn:
        assert champion_model(conn, DATES[59])["version"] == healed.model_version
        assert get_model(conn, healed.model_version)["decision"].startswith(
            f"promoted: champion v{first.model_version}'s files are damaged"
        )
        written = forecast(conn, DATES[59], None, 2, healed.model_version)
    assert written.summary().forecasts_written == 4
    # The next run finds a healthy champion and reuses it.
    again = run_train(engine, home, DATES[59], "auto")
    assert (again.model_version, again.created) == (healed.model_version, False)


def test_a_damaged_file_of_another_version_is_only_reported(
    engine: Engine, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prepare(engine, home, DATES[59])
    run_train(engine, home, DATES[59], "retrain")
    run_train(engine, home, DATES[59], "retrain", seed=8)  # promoted or not
    with engine.connect() as conn:
        champion = champion_model(conn, DATES[59])["version"]
        other = 3 - champion
        path = Path(get_model(conn, other)["file_path"])
        count = count_models(conn)
    path.unlink()
    with caplog.at_level(logging.WARNING):
        result = run_train(engine, home, DATES[59], "auto")
    assert (result.model_version, result.created, result.action) == (champion, False, "reuse")
    (noted,) = result.damaged_files
    assert noted.startswith(f"the files of model v{other} at {path} are missing")
    assert any("it is not the champion" in r.getMessage() for r in caplog.records)
    with engine.connect() as conn:
        assert count_models(conn) == count


def test_the_damping_is_summarised_at_info_and_listed_at_debug(caplog) -> None:  # noqa: ANN001
    from pipeline.model.train import _log_damping

    damping = {f"T{index:04d}": factor for index, factor in enumerate([1.0, 0.0, 0.0, 0.5] * 250)}
    with caplog.at_level(logging.INFO, logger="pipeline.model.train"):
        _log_damping(damping)
    (record,) = caplog.records
    assert record.getMessage() == (
        "damping fitted on the validation span for 1000 tickers: 250 kept the network's move "
        "(1.0), 500 the last close (0.0), median factor 0.25"
    )
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pipeline.model.train"):
        _log_damping(damping)
    assert "'T0003': 0.5" in caplog.records[-1].getMessage()
