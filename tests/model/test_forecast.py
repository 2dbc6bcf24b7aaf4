"""The forecast stage: dates, values recomputed independently, intervals, reruns, model choice."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL, TINY_SEQUENCES, synthetic_prices, table_snapshot
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.forecasts import read_forecasts
from pipeline.db.models import get_model, model_scalers
from pipeline.db.prices import CloseArrays, read_closes, upsert_prices
from pipeline.errors import ConfigurationError, MissingDataError, ModelStoreError
from pipeline.model import forecast as forecast_module
from pipeline.model.calibration import IntervalCalibration
from pipeline.model.config import ModelConfig
from pipeline.model.forecast import _recent_closes, closes_needed, forecast
from pipeline.model.predictor import Predictor
from pipeline.model.store import load_networks
from pipeline.model.train import train
from pipeline.precision import MAX_DECIMALS, decimals_of_each
from pipeline.sequences.build import build_sequences
from pipeline.sequences.scaling import get_scaler

PRICES = synthetic_prices(("AAA", "BBB"), days=80)
DATES = [pd.Timestamp(day).date() for day in PRICES[c.TRADE_DATE].unique()]


# Undamped, so that the hand computation below follows the network itself.
UNDAMPED = TINY_MODEL.replace(damping=False)
# A point network with EWMA intervals (the method before the distributional network).
POINT_EWMA = UNDAMPED.replace(loss="mae", intervals="ewma")


def trained(engine: Engine, home: Path, as_of: dt.date, config: ModelConfig = UNDAMPED) -> int:
    with engine.begin() as conn:
        upsert_prices(conn, PRICES)
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
        return train(
            conn, home, as_of, None, "retrain", TINY_SEQUENCES, config, workers=0
        ).model_version


class _Tomorrow:
    """A fake network: the scaled prediction is the newest scaled input plus one."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch[:, :, 0].copy())
        return batch[:, -1, :] + 1.0


def test_predict_path_feeds_each_prediction_back() -> None:
    network = _Tomorrow()
    predictor = Predictor(
        window=3,
        scaler=get_scaler("minmax"),
        params={"AAA": {"min": 0.0, "max": 1.0}, "BBB": {"min": 10.0, "max": 20.0}},
        networks={"*": network},
    )
    windows = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0]])
    path = predictor.predict_path(["AAA", "BBB"], windows, 3)
    np.testing.assert_allclose(path, [[4, 5, 6], [20, 30, 40]])
    np.testing.assert_allclose(network.batches[2][:2], [[3, 4, 5], [0, 1, 2]])


def test_forecasts_cover_the_next_trading_days_with_values_and_intervals(
    engine: Engine, home: Path
) -> None:
    as_of = DATES[59]  # a Friday: 2024-03-22
    assert as_of == dt.date(2024, 3, 22)
    version = trained(engine, home, as_of, POINT_EWMA)
    with engine.begin() as conn:
        result = forecast(conn, as_of, horizon=3)
    assert (result.model_version, result.rows, result.tickers) == (version, 6, ["AAA", "BBB"])
    with engine.connect() as conn:
        rows = read_forecasts(conn, as_of)
        model_row = get_model(conn, version)
        scalers = model_scalers(conn, version)
    assert rows[c.TARGET_DATE].tolist()[:3] == [
        dt.date(2024, 3, 25),
        dt.date(2024, 3, 26),
        dt.date(2024, 3, 27),
    ]
    assert rows[c.HORIZON].tolist() == [1, 2, 3, 1, 2, 3]

    # Recompute AAA by hand from the stored network, scaler and closes.
    (network,) = load_networks(Path(model_row["file_path"])).values()
    params = scalers["AAA"]["scaler_params"]
    low, span = params["min"], params["max"] - params["min"]
    window = list(PRICES.loc[PRICES[c.TICKER] == "AAA", c.CLOSE].to_numpy()[55:60])
    expected = []
    for _ in range(3):
        scaled = (np.array(window[-5:]) - low) / span
        value = float(network.predict_on_batch(scaled[None, :, None].astype(np.float32))[0, 0])
        window.append(value * span + low)
        expected.append(window[-1])
    aaa = rows.loc[rows[c.TICKER] == "AAA"]
    np.testing.assert_allclose(aaa[c.YHAT].to_numpy(), expected, rtol=1e-5)

    # Intervals: yhat * exp(+-m_h * sigma * sqrt(h)), sigma the predicted volatility of
    # daily log returns at the as-of date (an EWMA, recomputed here by its recursion,
    # mixed with the long-run level), m_3 beyond the two calibrated steps the same as m_2.
    stored = scalers["AAA"]["interval_q"]
    assert stored["method"] == "ewma"
    m = stored["multipliers"]["0.9"]
    closes = PRICES.loc[PRICES[c.TICKER] == "AAA", c.CLOSE].to_numpy()[:60]
    returns = [math.log(b / a) for a, b in zip(closes[:-1], closes[1:], strict=True)][-100:]
    variance = sum(r * r for r in returns) / len(returns)
    for r in returns:
        variance = 0.88 * variance + 0.12 * r * r
    # Mixed with the long-run variance of the span the scaler saw (its first 49 closes).
    long_run = stored["long_run"]
    span = [math.log(b / a) for a, b in zip(closes[:48], closes[1:49], strict=True)]
    assert long_run == pytest.approx(math.sqrt(sum(r * r for r in span) / len(span)))
    sigma = math.sqrt(0.9 * variance + 0.1 * long_run**2)
    widths = [m[0] * sigma, m[1] * sigma * math.sqrt(2), m[1] * sigma * math.sqrt(3)]
    np.testing.assert_allclose(aaa["yhat_lower"], aaa[c.YHAT] * np.exp(-np.array(widths)))
    np.testing.assert_allclose(aaa["yhat_upper"], aaa[c.YHAT] * np.exp(np.array(widths)))
    # The predicted scale, and the fan's quantiles: the 90 % interval's bounds outside,
    # the 50 % interval (its own multipliers) inside.
    scales = sigma * np.sqrt([1.0, 2.0, 3.0])
    np.testing.assert_allclose(aaa["scale"], scales)
    np.testing.assert_allclose(aaa["yhat_q05"], aaa["yhat_lower"])
    np.testing.assert_allclose(aaa["yhat_q95"], aaa["yhat_upper"])
    inner = stored["multipliers"]["0.5"]
    inner_widths = np.array([inner[0], inner[1], inner[1]]) * scales
    np.testing.assert_allclose(aaa["yhat_q25"], aaa[c.YHAT] * np.exp(-inner_widths))
    np.testing.assert_allclose(aaa["yhat_q75"], aaa[c.YHAT] * np.exp(inner_widths))
    assert (aaa["yhat_q25"] < aaa[c.YHAT]).all() and (aaa["yhat_q75"] < aaa["yhat_q95"]).all()


def test_damping_shrinks_each_step_toward_the_last_close() -> None:
    predictor = Predictor(
        window=3,
        scaler=get_scaler("minmax"),
        params={"AAA": {"min": 0.0, "max": 1.0}},
        networks={"*": _Tomorrow()},
        damping={"AAA": 0.25},
    )
    path = predictor.predict_path(["AAA"], np.array([[1.0, 2.0, 3.0]]), 2)
    # Step 1: 3 + 0.25 * (4 - 3); step 2 from [2, 3, 3.25]: 3.25 + 0.25 * 1.
    np.testing.assert_allclose(path, [[3.25, 3.5]])


def test_the_distributional_network_forecasts_a_location_and_a_spread(
    engine: Engine, home: Path
) -> None:
    """yhat, the scale and the intervals of the default network, recomputed with Keras."""
    as_of = DATES[59]
    version = trained(engine, home, as_of)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=3)
    with engine.connect() as conn:
        rows = read_forecasts(conn, as_of)
        model_row = get_model(conn, version)
        scalers = model_scalers(conn, version)
    (network,) = load_networks(Path(model_row["file_path"])).values()
    assert network.input_shape == (None, 5, 2) and network.output_shape == (None, 2)
    params = scalers["AAA"]["scaler_params"]
    low, span, long_run = params["min"], params["max"] - params["min"], params["volatility"]
    closes = list(PRICES.loc[PRICES[c.TICKER] == "AAA", c.CLOSE].to_numpy()[:60])
    # The EWMA variance (lambda 0.88) of the last 100 daily log returns, by its recursion.
    returns = [math.log(b / a) for a, b in zip(closes[:-1], closes[1:], strict=True)][-100:]
    variance = sum(r * r for r in returns) / len(returns)
    for r in returns:
        variance = 0.88 * variance + 0.12 * r * r
    expected, spreads, total = [], [], 0.0
    for _ in range(3):
        scaled = (np.array(closes[-5:]) - low) / span
        feature = np.full(5, math.log(math.sqrt(variance) / long_run))
        inputs = np.stack([scaled, feature], axis=-1)[None].astype(np.float32)
        location, raw = network.predict_on_batch(inputs)[0]
        b = math.log1p(math.exp(raw)) + 1e-3  # softplus + the floor, in scaled units
        value = location * span + low
        # The Laplace scale in log-return units, times sqrt(2): a standard deviation.
        deviation = math.sqrt(2) * math.log(((location + b) * span + low) / value)
        total += deviation**2
        move = math.log(value / closes[-1])
        variance = 0.88 * variance + 0.12 * (move**2 + deviation**2)
        closes.append(value)
        expected.append(value)
        spreads.append(math.sqrt(total))
    aaa = rows.loc[rows[c.TICKER] == "AAA"]
    np.testing.assert_allclose(aaa[c.YHAT].to_numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(aaa["scale"].to_numpy(), spreads, rtol=1e-4)
    stored = scalers["AAA"]["interval_q"]
    assert stored["method"] == "network" and stored["long_run"] is None
    m = stored["multipliers"]["0.9"]
    widths = np.array([m[0], m[1], m[1]]) * np.array(spreads)
    np.testing.assert_allclose(aaa["yhat_lower"], aaa[c.YHAT] * np.exp(-widths), rtol=1e-4)
    np.testing.assert_allclose(aaa["yhat_upper"], aaa[c.YHAT] * np.exp(widths), rtol=1e-4)
    # Each step's spread grows: the variances of the steps add up.
    assert np.all(np.diff(spreads) > 0)


def test_interval_widths_extend_beyond_the_calibrated_steps() -> None:
    # A model calibrated before the ewma method stored its static half-widths as a list.
    static = IntervalCalibration.from_json([0.1, 0.2], level=0.9)
    assert static is not None and static.method == "static"
    np.testing.assert_allclose(
        static.half_widths(0.9, None, 4), [[0.1, 0.2, 0.2 * 1.5**0.5, 0.2 * 2**0.5]]
    )
    assert IntervalCalibration.from_json(None, level=0.9) is None
    # ewma: the multiplier of the last calibrated step carries on; the scale grows as sqrt(h).
    ewma = IntervalCalibration("ewma", {0.9: [2.0, 1.5]})
    assert IntervalCalibration.from_json(ewma.to_json(), level=0.8) == ewma
    closes = np.exp(np.cumsum(np.r_[0.0, [0.01, -0.01] * 10]))  # every return +-0.01
    scales = ewma.scales(closes, np.array([20, 20]), None, 3)
    np.testing.assert_allclose(scales, [[0.01, 0.01 * 2**0.5, 0.01 * 3**0.5]] * 2)
    np.testing.assert_allclose(
        ewma.half_widths(0.9, scales * [[1.0], [2.0]], 3),
        [[0.02, 0.015 * 2**0.5, 0.015 * 3**0.5], [0.04, 0.03 * 2**0.5, 0.03 * 3**0.5]],
    )
    with pytest.raises(ValueError, match="no interval calibrated at coverage 0.5"):
        ewma.half_widths(0.5, scales, 2)
    # network: the scales are the spreads the network predicted for each step, as given.
    network = IntervalCalibration("network", {0.9: [2.0, 1.5]})
    assert IntervalCalibration.from_json(network.to_json(), level=0.9) == network
    spread = np.array([[0.01, 0.02, 0.025]])
    np.testing.assert_allclose(network.scales(closes, np.array([20]), spread, 3), spread)
    np.testing.assert_allclose(network.half_widths(0.9, spread, 3), [[0.02, 0.03, 0.0375]])
    with pytest.raises(ValueError, match="spread the network predicted"):
        network.scales(closes, np.array([20]), np.full((1, 3), np.nan), 3)


def test_a_rerun_writes_the_same_rows_and_a_shorter_horizon_replaces_them(
    engine: Engine, home: Path
) -> None:
    as_of = DATES[59]
    trained(engine, home, as_of)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=5)
    before = table_snapshot(engine)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=5)
    assert table_snapshot(engine) == before
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=2)
    with engine.connect() as conn:
        assert len(read_forecasts(conn, as_of)) == 4


def test_forecast_prices_have_the_decimals_of_the_input(engine: Engine, home: Path) -> None:
    cents = PRICES.assign(**{c.CLOSE: PRICES[c.CLOSE].round(2)})
    as_of = DATES[59]
    with engine.begin() as conn:
        upsert_prices(conn, cents)
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
        train(conn, home, as_of, None, "retrain", TINY_SEQUENCES, TINY_MODEL, workers=0)
        forecast(conn, as_of, horizon=3)
    with engine.connect() as conn:
        rows = read_forecasts(conn, as_of)
    prices = [c.YHAT, "yhat_lower", "yhat_upper", "yhat_q05", "yhat_q25", "yhat_q75", "yhat_q95"]
    values = rows[prices].to_numpy()
    assert np.isfinite(values).all()
    np.testing.assert_array_equal(values, np.round(values, 2))
    assert not np.array_equal(rows["scale"], rows["scale"].round(2))  # a volatility, not a price


def test_the_model_is_the_champion_trained_no_later_than_the_as_of_date(
    engine: Engine, home: Path
) -> None:
    later = trained(engine, home, DATES[64])
    with engine.begin() as conn:
        with pytest.raises(MissingDataError, match="no model trained on data up to 2024-03-22"):
            forecast(conn, DATES[59])
        with pytest.raises(ConfigurationError, match="after the as-of date"):
            forecast(conn, DATES[59], model_version=later)
        assert forecast(conn, DATES[70]).model_version == later


def test_uncovered_tickers_are_refused(engine: Engine, home: Path) -> None:
    trained(engine, home, DATES[59])
    with pytest.raises(ConfigurationError, match="does not cover MSFT"), engine.begin() as conn:
        forecast(conn, DATES[59], tickers=["AAA", "MSFT"])


def test_forecasts_skip_exchange_holidays(engine: Engine, home: Path) -> None:
    as_of = dt.date(2024, 3, 28)  # the day before Good Friday
    assert as_of in DATES
    trained(engine, home, as_of)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=2)
        rows = read_forecasts(conn, as_of)
    assert rows[c.TARGET_DATE].tolist()[:2] == [dt.date(2024, 4, 1), dt.date(2024, 4, 2)]


def test_inactive_tickers_are_not_forecast(engine: Engine, home: Path) -> None:
    from pipeline.db.tickers import add_tickers, set_active

    trained(engine, home, DATES[59])
    with engine.begin() as conn:
        add_tickers(conn, ["AAA", "BBB"], "XNYS", activate=True)
        set_active(conn, ["BBB"], False)
        assert forecast(conn, DATES[59], horizon=1).tickers == ["AAA"]
        with pytest.raises(ConfigurationError, match="BBB is inactive"):
            forecast(conn, DATES[59], tickers=["BBB"])


def test_the_same_data_parameters_and_seed_give_the_same_forecasts(tmp_path: Path) -> None:
    from pipeline.db.migrate import open_database

    tables = []
    for name in ("first", "second"):
        engine = open_database(f"sqlite:///{tmp_path / name}.db")
        with engine.begin() as conn:
            upsert_prices(conn, PRICES)
            build_sequences(conn, tmp_path / name, DATES[59], config=TINY_SEQUENCES)
            home = tmp_path / name
            train(conn, home, DATES[59], None, "auto", TINY_SEQUENCES, TINY_MODEL, workers=0)
            forecast(conn, DATES[59], horizon=3)
            tables.append(read_forecasts(conn, DATES[59]))
        engine.dispose()
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)


def test_recent_closes_hold_each_tickers_last_window_even_after_a_long_gap(
    engine: Engine,
) -> None:
    """A suspended ticker's last closes lie far back: they are still the ones forecast from."""
    busy = synthetic_prices(("AAA",), start="2023-01-02", days=400)
    suspended = synthetic_prices(("BBB",), start="2023-01-02", days=40)  # nothing since March 2023
    with engine.begin() as conn:
        upsert_prices(conn, pd.concat([busy, suspended], ignore_index=True))
        as_of = dt.date(2024, 6, 14)
        recent = _recent_closes(conn, as_of, ["AAA", "BBB"], "close", window=10)
        whole = read_closes(conn, as_of, ["AAA", "BBB"])
        with pytest.raises(ValueError, match="close only"):
            read_closes(conn, as_of, ["AAA"], field="adj_close", since=as_of)
    assert sum(len(closes) for closes, _ in recent.values()) < len(whole)  # AAA's old: unread
    for ticker in ("AAA", "BBB"):
        closes, newest = recent[ticker]
        expected = whole[whole["ticker"] == ticker]
        assert len(closes) >= 10
        assert closes[-10:].tolist() == expected["close"].tail(10).tolist()
        assert newest == expected["trade_date"].iloc[-1] and isinstance(newest, dt.date)
    assert newest < as_of  # BBB: suspended, stale as of then


def test_a_model_file_replaced_by_another_versions_is_refused(engine: Engine, home: Path) -> None:
    """A valid ``.keras`` file of another version copied over the champion's once changed
    20 of 25 forecasts silently; ``models.file_sha256`` is checked before every use."""
    first = trained(engine, home, DATES[59])
    with engine.begin() as conn:
        upsert_prices(conn, PRICES)
        build_sequences(conn, home, DATES[64], config=TINY_SEQUENCES)
        second = train(conn, home, DATES[64], None, "retrain", TINY_SEQUENCES, UNDAMPED, workers=0)
        paths = {
            row: Path(get_model(conn, row)["file_path"]) for row in (first, second.model_version)
        }
    paths[first].write_bytes(paths[second.model_version].read_bytes())
    with engine.begin() as conn, pytest.raises(ModelStoreError, match="are not the ones it was"):
        forecast(conn, DATES[59], model_version=first)


@pytest.mark.parametrize("config", [TINY_MODEL, POINT_EWMA], ids=["distributional", "point-ewma"])
def test_the_forecast_from_the_newest_closes_is_the_one_from_every_close(
    engine: Engine, home: Path, monkeypatch: pytest.MonkeyPatch, config: ModelConfig
) -> None:
    """The stage reads each ticker's newest ``closes_needed`` closes (the sessions since
    the first of them, a ticker with fewer there whole): the rows it writes are those of
    a forecast given every close. CCC was suspended for 60 sessions in the last 100, so
    the newest sessions hold fewer than it needs (though more than a window)."""
    prices = synthetic_prices(("AAA", "BBB", "CCC"), days=320)
    prices[c.CLOSE] = prices[c.CLOSE].round(4)
    dates = sorted(prices[c.TRADE_DATE].unique())
    gap = (prices[c.TICKER] == "CCC") & prices[c.TRADE_DATE].isin(dates[-90:-30])
    prices = prices[~gap]
    as_of = pd.Timestamp(dates[-1]).date()
    with engine.begin() as conn:
        upsert_prices(conn, prices)
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
        train(conn, home, as_of, None, "retrain", TINY_SEQUENCES, config, workers=0)
    read = forecast_module.read_close_arrays
    read_rows: list[int] = []

    def counted(*args: object, **kwargs: object) -> CloseArrays:
        arrays = read(*args, **kwargs)  # type: ignore[arg-type]
        read_rows.append(len(arrays.closes))
        return arrays

    monkeypatch.setattr(forecast_module, "read_close_arrays", counted)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=5)
    with engine.connect() as conn:
        short = read_forecasts(conn, as_of)
    needed = closes_needed(TINY_SEQUENCES.window)
    assert read_rows[0] < 2 * needed + 120  # AAA and BBB's newest closes, CCC's too few
    assert read_rows[1] == len(prices[prices[c.TICKER] == "CCC"])  # CCC read whole

    def everything(*args: object, since: object = None, **kwargs: object) -> CloseArrays:
        return read(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forecast_module, "read_close_arrays", everything)
    monkeypatch.setattr(forecast_module, "_newest", lambda series, count: series)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=5)
    with engine.connect() as conn:
        whole = read_forecasts(conn, as_of)
    assert len(short) == 15 and short["yhat_upper"].notna().all()
    pd.testing.assert_frame_equal(short, whole, check_exact=True)


def _decimals_of_one(values: np.ndarray) -> int:
    """``precision.decimals`` as it was written for one ticker, the reference the batched
    ``decimals_of_each`` is checked against: the fewest decimals, tried one by one, that
    write every finite value within 8 units in the last place."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return MAX_DECIMALS
    tolerance = 8 * np.spacing(np.abs(finite))
    for places in range(MAX_DECIMALS + 1):
        if np.all(np.abs(np.round(finite, places) - finite) <= tolerance):
            return places
    return MAX_DECIMALS


def _spread_of_one_ticker(
    calibration: IntervalCalibration | None,
    path: np.ndarray,
    network_spread: np.ndarray,
    closes: np.ndarray,
    level: float,
    places: int,
) -> dict[str, list[float | None]]:
    """The stage's columns of one ticker as it computed them ticker by ticker (its
    ``_spread`` until the tickers were grouped), through ``IntervalCalibration``."""
    steps = len(path)
    spread: dict[str, list[float | None]] = dict.fromkeys(
        forecast_module.SPREAD_COLUMNS, [None] * steps
    )
    if calibration is None:
        return spread
    scales = calibration.scales(closes, np.array([len(closes) - 1]), network_spread[None, :], steps)
    widths = calibration.half_widths(level, scales, steps)[0]
    spread["yhat_lower"] = [float(v) for v in np.round(path * np.exp(-widths), places)]
    spread["yhat_upper"] = [float(v) for v in np.round(path * np.exp(widths), places)]
    if scales is not None:
        spread["scale"] = [float(v) for v in scales[0]]
    if calibration.covers(forecast_module.FAN_LEVELS):
        quantiles = calibration.quantiles(path[None, :], scales, forecast_module.FAN_LEVELS)[0]
        for index, tau in enumerate(forecast_module.FAN_LEVELS):
            spread[f"yhat_{forecast_module.quantile_name(tau)}"] = [
                float(v) for v in np.round(quantiles[:, index], places)
            ]
    return spread


def _random_calibration(rng: np.random.Generator, index: int) -> IntervalCalibration | None:
    """One of every kind the stage meets: none, static (a plain list, as stored before
    the ewma method), ewma with and without a long-run volatility, network; two or
    three calibrated steps; with the fan's levels or only the interval's."""
    kind = index % 6
    steps = 2 + index % 2
    if kind == 0:
        return None
    if kind == 1:
        return IntervalCalibration.from_json(list(rng.uniform(0.01, 0.1, steps)), 0.9)
    levels = (0.9,) if index % 5 == 0 else (0.5, 0.8, 0.9)
    multipliers = {level: list(rng.uniform(0.5, 3.0, steps)) for level in levels}
    long_run = None if kind == 3 else float(rng.uniform(0.005, 0.03))
    method = "network" if kind == 5 else "ewma"
    stored = IntervalCalibration(method, multipliers, None if method == "network" else long_run)
    return IntervalCalibration.from_json(stored.to_json(), 0.8)


@pytest.mark.parametrize("horizon", [1, 2, 5])
def test_the_spreads_of_every_ticker_at_once_are_those_of_each_ticker_alone(
    horizon: int,
) -> None:
    """``_spreads`` groups the tickers by calibration; every value it gives is the one the
    ticker's own calibration gives, bit for bit, and the decimals those of each ticker."""
    rng = np.random.default_rng(3)
    count = 60
    calibrations = [_random_calibration(rng, index) for index in range(count)]
    recent, places = [], []
    for index in range(count):
        closes = 10 ** rng.uniform(1, 3) * np.exp(np.cumsum(rng.normal(0, 0.02, 20 + 7 * index)))
        recent.append(np.round(closes, index % 7))
        places.append(index % 7)
    recent[13][[3, 8]] = [np.nan, np.inf]  # not finite (static: no volatility), left out
    recent[9] = recent[9] * (1 + 1e-13)  # binary noise: the most decimals
    paths = np.stack([closes[-1] * np.exp(rng.normal(0, 0.02, horizon)) for closes in recent])
    network_spreads = np.abs(rng.normal(0.02, 0.005, (count, horizon)))
    digits = decimals_of_each(recent)
    assert digits.tolist() == [_decimals_of_one(closes) for closes in recent]
    assert digits[9] == MAX_DECIMALS and digits[13] == places[13]
    spreads = forecast_module._spreads(calibrations, paths, network_spreads, recent, 0.9, digits)
    for index in range(count):
        expected = _spread_of_one_ticker(
            calibrations[index],
            paths[index],
            network_spreads[index],
            recent[index],
            0.9,
            int(digits[index]),
        )
        got = {name: values[index] for name, values in spreads.items()}
        assert got == expected, index
    assert any(value[0] is None for value in spreads["yhat_q05"])  # without the fan's levels


def test_the_decimals_of_every_ticker_at_once_are_each_tickers() -> None:
    recent = [
        np.array([1.0, 2.0, 3.0]),
        np.array([172.440002, 172.5]),
        np.array([np.nan, np.inf]),  # no finite close: the most decimals
        np.array([0.1 + 0.2, 1.0]),  # binary noise
        np.array([1e-9, 1.0]),
        np.array([12.345, np.nan, 12.3]),
    ]
    assert decimals_of_each(recent).tolist() == [_decimals_of_one(closes) for closes in recent]


def test_network_intervals_of_several_tickers_need_the_networks_spread() -> None:
    network = IntervalCalibration("network", {0.9: [2.0, 1.5]})
    closes = [np.linspace(10.0, 11.0, 30)] * 2
    with pytest.raises(ValueError, match="spread the network predicted"):
        forecast_module._spreads(
            [network, network],
            np.full((2, 2), 11.0),
            np.array([[0.01, 0.02], [np.nan, np.nan]]),
            closes,
            0.9,
            np.array([2, 2]),
        )


def test_the_model_scalers_are_read_once(
    engine: Engine, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage hands what it read to ``load_predictor`` (which read it again)."""
    from pipeline.model import predictor as predictor_module

    as_of = DATES[59]
    trained(engine, home, as_of, POINT_EWMA)
    reads: list[int] = []

    def counted(conn: object, version: int) -> dict[str, dict[str, object]]:
        reads.append(version)
        return model_scalers(conn, version)  # type: ignore[arg-type]

    monkeypatch.setattr(forecast_module, "model_scalers", counted)
    monkeypatch.setattr(predictor_module, "model_scalers", counted)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=3)
    assert len(reads) == 1
    with engine.connect() as conn:
        row = get_model(conn, reads[0])
        alone = predictor_module.load_predictor(conn, row, ["AAA"])
        assert len(reads) == 2  # without them, it reads them itself
        assert alone.params["AAA"] == model_scalers(conn, reads[0])["AAA"]["scaler_params"]
