"""The forecast stage: the next ``horizon`` trading days after the as-of date.

Each ticker's last ``window`` closes up to the as-of date go through the
champion's scaler and network; each step's prediction becomes the newest
input of the next (recursive forecasting); predictions are decoded to prices
and written to ``forecasts`` keyed on ``(ticker, as_of_date, target_date,
model_version)``, with the quantiles of a fan chart (``FAN_LEVELS``) and
prediction intervals where the model was calibrated:
``yhat * exp(-w_h)`` to ``yhat * exp(w_h)``, where the log half-width ``w_h``
of step ``h`` is a multiplier calibrated on the model's validation span times
the ticker's predicted scale, its EWMA volatility at the as-of date times
``sqrt(h)`` (``pipeline.model.scale``; models calibrated with ``static``
intervals have one width per step, whatever the recent volatility). Prices
are rounded to the decimals of the ticker's closes (``pipeline.precision``).

A forecast uses a ticker's newest ``closes_needed(window)`` closes and nothing
else (the window, the volatility's lookback, the decimals), so it reads only
those (``_recent_closes``) and is the forecast a read of every close gives.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.forecasts import replace_forecasts
from pipeline.db.models import champion_model, get_model, model_scalers
from pipeline.db.prices import CloseArrays, read_close_arrays
from pipeline.db.tickers import inactive_tickers, ticker_exchanges
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.calibration import IntervalCalibration, stack_calibrations
from pipeline.model.predictor import load_predictor
from pipeline.model.scale import LOOKBACK, ewma_volatility
from pipeline.precision import decimals_of_each
from pipeline.results import ForecastSummary
from pipeline.scoring.metrics import quantile_name
from pipeline.trading_calendar import DEFAULT_EXCHANGE, next_sessions, trading_days

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForecastResult:
    """What the forecast stage wrote."""

    as_of: dt.date
    model_version: int
    horizon: int
    tickers: list[str]
    rows: int
    stale: dict[str, dt.date]

    def summary(self) -> ForecastSummary:
        """Fields for logs and flow results."""
        return ForecastSummary(
            as_of=self.as_of,
            model_version=self.model_version,
            horizon=self.horizon,
            tickers=self.tickers,
            forecasts_written=self.rows,
            stale=self.stale,
        )


def closes_needed(window: int) -> int:
    """The newest closes a forecast from windows of ``window`` closes uses: the window,
    and the ``LOOKBACK`` returns of the EWMA volatility (``pipeline.model.scale``)."""
    return max(window, LOOKBACK + 1)


def _recent_closes(
    conn: Connection,
    as_of: dt.date,
    tickers: list[str],
    field: str,
    window: int,
    exchanges: dict[str, str] | None = None,
) -> dict[str, tuple[np.ndarray, dt.date]]:
    """Each ticker's newest ``closes_needed(window)`` closes on or before ``as_of`` (all
    of them when it has fewer) and the date of its newest: what the forecast uses, and
    all it uses, so that it is the forecast a read of every close gives. Tickers without
    a close are left out.

    The closes since the first of the newest ``closes_needed`` sessions of the tickers'
    exchanges (``exchanges``, by ticker; New York by default) are read; a ticker with
    fewer closes there (suspended, or newer) is read whole. Before, the read began 21
    weeks and 30 days back (about 122 sessions for the 101 closes used) and a ticker was
    read whole only when it had fewer than ``window`` closes there, so a ticker
    suspended for a few weeks got the volatility of fewer returns than validation gives
    it. ``adj_close`` is read whole (which field a ticker takes depends on every close).

    Read as arrays and split by ticker (``read_close_arrays``): a frame grouped by
    ticker, then a column and a date taken per ticker, cost 0.2 s of a 1.1 s forecast
    of 1,000 tickers."""
    needed = closes_needed(window)
    if field != c.CLOSE:
        return _newest(_series(read_close_arrays(conn, as_of, tickers, field=field)), needed)
    wanted_exchanges = {(exchanges or {}).get(ticker, DEFAULT_EXCHANGE) for ticker in tickers}
    since = min(_first_of_sessions(as_of, needed, exchange) for exchange in wanted_exchanges)
    recent = _series(read_close_arrays(conn, as_of, tickers, since=since))
    short = [ticker for ticker in tickers if len(recent.get(ticker, _NONE)[0]) < needed]
    if short:
        recent.update(_series(read_close_arrays(conn, as_of, short)))
    return _newest(recent, needed)


def _first_of_sessions(as_of: dt.date, count: int, exchange: str) -> dt.date:
    """The first of the exchange's newest ``count`` sessions on or before ``as_of``; a
    date early enough for them (five a week, and 30 days of holidays) where the calendar
    does not reach that far back."""
    early = as_of - dt.timedelta(days=7 * math.ceil(count / 5) + 30)
    sessions = trading_days(early, as_of, exchange)
    return sessions[-count] if len(sessions) >= count else early


def _newest(
    series: dict[str, tuple[np.ndarray, dt.date]], count: int
) -> dict[str, tuple[np.ndarray, dt.date]]:
    """Each ticker's newest ``count`` closes (all of them when it has fewer)."""
    return {ticker: (closes[-count:], newest) for ticker, (closes, newest) in series.items()}


#: The closes of a ticker without any.
_NONE: tuple[np.ndarray, dt.date] = (np.empty(0), dt.date.min)


def _series(arrays: CloseArrays) -> dict[str, tuple[np.ndarray, dt.date]]:
    """Each ticker's closes and the date of its newest."""
    return {
        ticker: (arrays.closes[rows], arrays.dates[rows.stop - 1].astype(object))
        for ticker, rows in arrays.runs()
    }


def _last_volatility(recent: list[np.ndarray]) -> np.ndarray:
    """Each ticker's EWMA volatility at its newest close, every ticker in one call."""
    lengths = np.array([len(values) for values in recent])
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return ewma_volatility(np.concatenate(recent), first + lengths - 1, first=first)


#: The forecast quantiles stored beside ``yhat`` (the median) for a fan chart.
FAN_LEVELS = (0.05, 0.25, 0.75, 0.95)


#: The columns of ``forecasts`` besides ``yhat`` that a calibration fills (``_spreads``).
SPREAD_COLUMNS = (
    "yhat_lower",
    "yhat_upper",
    "scale",
    *(f"yhat_{quantile_name(t)}" for t in FAN_LEVELS),
)


def _round_rows(values: np.ndarray, places: np.ndarray) -> np.ndarray:
    """``np.round`` of each row of ``values`` to its own ``places`` decimals."""
    out = np.empty_like(values)
    for count in np.unique(places):
        rows = places == count
        out[rows] = np.round(values[rows], int(count))
    return out


def _spreads(
    calibrations: Sequence[IntervalCalibration | None],
    paths: np.ndarray,
    network_spreads: np.ndarray,
    recent: Sequence[np.ndarray],
    level: float,
    places: np.ndarray,
) -> dict[str, list[list[float | None]]]:
    """Per column of ``forecasts`` (``SPREAD_COLUMNS``: interval bounds, scale,
    quantiles), per ticker one value per step of its path in ``paths`` (forecast from the
    last of its closes in ``recent``; ``network_spreads``: what the network predicted for
    the paths, NaN for a point network); ``None`` where the ticker's model has no such
    calibration (``calibrations``). Prices are rounded to each ticker's ``places``
    decimals.

    The tickers are grouped by calibration method and shape (``stack_calibrations``)
    and each group's values computed at once: each ticker's values are those of its own
    calibration's ``scales``, ``half_widths`` and ``quantiles``, bit for bit
    (``tests/model/test_forecast.py``); per ticker, they were 40 % of the stage."""
    steps = paths.shape[1]
    empty: list[float | None] = [None] * steps
    spread = {name: [empty] * len(paths) for name in SPREAD_COLUMNS}
    for rows, stack in stack_calibrations(calibrations):
        path, digits = paths[rows], places[rows]
        scales = stack.scales([recent[row] for row in rows], network_spreads[rows], steps)
        widths = stack.half_widths(level, scales, steps)
        columns = {
            "yhat_lower": _round_rows(path * np.exp(-widths), digits),
            "yhat_upper": _round_rows(path * np.exp(widths), digits),
        }
        if scales is not None:
            columns["scale"] = scales
        if stack.covers(FAN_LEVELS):
            quantiles = stack.quantiles(path, scales, FAN_LEVELS)
            for index, tau in enumerate(FAN_LEVELS):
                columns[f"yhat_{quantile_name(tau)}"] = _round_rows(quantiles[..., index], digits)
        for name, values in columns.items():
            for row, row_values in zip(rows.tolist(), values.tolist(), strict=True):
                spread[name][row] = row_values
    return spread


def forecast(
    conn: Connection,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    horizon: int = 5,
    model_version: int | None = None,
) -> ForecastResult:
    """Forecast each ticker's closes for the ``horizon`` trading days after ``as_of``.

    Trading days come from each ticker's exchange calendar (``tickers.exchange``,
    default New York), so forecasts skip weekends and holidays.

    Args:
        conn: an open connection; the caller owns the transaction.
        as_of: the last date whose close may be used.
        tickers: tickers to forecast; ``None`` takes every active ticker the model covers.
        horizon: trading days to forecast.
        model_version: the model to use; ``None`` takes the champion: the
            newest promoted model trained on data no later than ``as_of``.

    Raises:
        MissingDataError: no usable model, or too few closes for a ticker.
        ConfigurationError: a requested ticker is not covered by the model or inactive.
    """
    if horizon < 1:
        raise ConfigurationError(f"horizon must be at least 1, got {horizon}")
    model_row = get_model(conn, model_version) if model_version else champion_model(conn, as_of)
    if model_row is None:
        which = f"v{model_version}" if model_version else f"trained on data up to {as_of}"
        raise MissingDataError(f"no model {which}; run `pricecast train` first")
    if model_row["data_through"] > as_of:
        raise ConfigurationError(
            f"model v{model_row['version']} saw prices through {model_row['data_through']}, "
            f"after the as-of date {as_of}; it cannot forecast as of {as_of}"
        )
    version = model_row["version"]
    covered = list(model_row["tickers"])
    inactive = inactive_tickers(conn)
    if tickers:
        wanted = sorted(tickers)
        if set(wanted) & inactive:
            raise ConfigurationError(
                f"{', '.join(sorted(set(wanted) & inactive))} is inactive; "
                "`pricecast tickers add` reactivates it"
            )
    else:
        wanted = sorted(ticker for ticker in covered if ticker not in inactive)
    uncovered = sorted(set(wanted) - set(covered))
    if uncovered:
        raise ConfigurationError(
            f"model v{version} does not cover {', '.join(uncovered)}; train it first"
        )
    params = model_row["hyperparameters"]
    window = int(params["window"])
    exchanges = ticker_exchanges(conn)
    by_ticker = _recent_closes(
        conn, as_of, wanted, params.get("price_field", c.CLOSE), window, exchanges
    )
    windows, recent, stale = [], [], {}
    for ticker in wanted:
        values, last_date = by_ticker.get(ticker, _NONE)
        if len(values) < window:
            raise MissingDataError(
                f"{ticker} has {len(values)} closes on or before {as_of}; "
                f"model v{version} needs {window}"
            )
        windows.append(values[-window:])
        recent.append(values)
        if last_date < as_of:
            stale[ticker] = last_date
            logger.debug(
                "%s: newest close is from %s, before the as-of date %s", ticker, last_date, as_of
            )

    scalers = model_scalers(conn, version)
    predictor = load_predictor(conn, model_row, wanted, scalers=scalers)
    volatility = _last_volatility(recent) if predictor.distributional else None
    paths, network_spreads = predictor.predict_paths(wanted, np.stack(windows), horizon, volatility)
    level = float(params.get("interval_level", 0.9))
    calibrations = [
        IntervalCalibration.from_json(scalers[ticker].get("interval_q"), level) for ticker in wanted
    ]
    places = decimals_of_each(recent)
    spread = _spreads(calibrations, paths, network_spreads, recent, level, places)
    rows = []
    sessions: dict[str, list[dt.date]] = {}  # per exchange: one calendar lookup each
    for index, (ticker, path) in enumerate(zip(wanted, paths.tolist(), strict=True)):
        exchange = exchanges.get(ticker, DEFAULT_EXCHANGE)
        if exchange not in sessions:
            sessions[exchange] = next_sessions(as_of, horizon, exchange)
        digits = int(places[index])
        ticker_spread = [(name, values[index]) for name, values in spread.items()]
        for step, (target, value) in enumerate(zip(sessions[exchange], path, strict=True)):
            rows.append(
                {
                    c.TICKER: ticker,
                    c.AS_OF_DATE: as_of,
                    c.TARGET_DATE: target,
                    c.MODEL_VERSION: version,
                    c.HORIZON: step + 1,
                    c.YHAT: round(value, digits),
                    **{name: values[step] for name, values in ticker_spread},
                }
            )
    written = replace_forecasts(conn, as_of, version, wanted, rows)
    logger.info(
        "wrote %d forecasts for %d tickers as of %s with model v%d",
        written,
        len(wanted),
        as_of,
        version,
    )
    return ForecastResult(
        as_of=as_of,
        model_version=version,
        horizon=horizon,
        tickers=wanted,
        rows=written,
        stale=stale,
    )
