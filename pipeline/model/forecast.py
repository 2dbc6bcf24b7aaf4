"""The forecast stage: the next ``horizon`` trading days after the as-of date.

Each ticker's last ``window`` closes up to the as-of date go through the
champion's scaler and network; each step's prediction becomes the newest
input of the next (recursive forecasting); predictions are decoded to prices
and written to ``forecasts`` keyed on ``(ticker, as_of_date, target_date,
model_version)``, with prediction intervals where the model was calibrated:
``yhat * exp(-q_h)`` to ``yhat * exp(q_h)``, ``q_h`` the conformal half-width of
step ``h`` from the model's validation span (steps beyond the calibrated ones
widen with the square root of the step, as a random walk's spread does).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.forecasts import replace_forecasts
from pipeline.db.models import champion_model, get_model, model_scalers
from pipeline.db.prices import read_closes
from pipeline.db.tickers import inactive_tickers, ticker_exchanges
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.predictor import load_predictor
from pipeline.trading_calendar import DEFAULT_EXCHANGE, next_sessions

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

    def summary(self) -> dict[str, object]:
        """Fields for logs and flow results."""
        return {
            "as_of": self.as_of.isoformat(),
            "model_version": self.model_version,
            "horizon": self.horizon,
            "tickers": self.tickers,
            "forecasts_written": self.rows,
            "stale": {ticker: day.isoformat() for ticker, day in self.stale.items()},
        }


def interval_widths(quantiles: Sequence[float] | None, horizon: int) -> np.ndarray | None:
    """Half-widths for steps 1..``horizon`` from the calibrated ones, or ``None``."""
    if not quantiles:
        return None
    known = np.asarray(quantiles, dtype=float)
    steps = np.arange(1, horizon + 1)
    last = len(known)
    extended = known[-1] * np.sqrt(steps / last)
    return np.where(steps <= last, known[np.minimum(steps, last) - 1], extended)


def _recent_closes(
    conn: Connection, as_of: dt.date, tickers: list[str], field: str, window: int
) -> pd.DataFrame:
    """At least the last ``window`` closes on or before ``as_of`` of each ticker (all
    of them when it has fewer): the newest weeks first, the whole series only where
    those weeks hold too few closes (a suspended ticker, or ``adj_close``)."""
    if field != c.CLOSE:
        return read_closes(conn, as_of, tickers, field=field)
    since = as_of - dt.timedelta(days=7 * window + 30)
    recent = read_closes(conn, as_of, tickers, since=since)
    counts = recent[c.TICKER].value_counts()
    short = [ticker for ticker in tickers if counts.get(ticker, 0) < window]
    if not short:
        return recent
    whole = read_closes(conn, as_of, short)
    return pd.concat([recent[~recent[c.TICKER].isin(short)], whole], ignore_index=True)


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
    closes = _recent_closes(conn, as_of, wanted, params.get("price_field", c.CLOSE), window)
    by_ticker = dict(iter(closes.groupby(c.TICKER, sort=False)))
    empty = closes.iloc[:0]
    windows, stale = [], {}
    for ticker in wanted:
        series = by_ticker.get(ticker, empty)
        if len(series) < window:
            raise MissingDataError(
                f"{ticker} has {len(series)} closes on or before {as_of}; "
                f"model v{version} needs {window}"
            )
        windows.append(series[c.CLOSE].to_numpy(dtype=float)[-window:])
        last_date = series[c.TRADE_DATE].iloc[-1]
        if last_date < as_of:
            stale[ticker] = last_date
            logger.info(
                "%s: newest close is from %s, before the as-of date %s", ticker, last_date, as_of
            )

    predictor = load_predictor(conn, model_row, wanted)
    paths = predictor.predict_path(wanted, np.stack(windows), horizon)
    scalers = model_scalers(conn, version)
    exchanges = ticker_exchanges(conn)
    rows = []
    for ticker, path in zip(wanted, paths, strict=True):
        targets = next_sessions(as_of, horizon, exchanges.get(ticker, DEFAULT_EXCHANGE))
        widths = interval_widths(scalers[ticker].get("interval_q"), horizon)
        for step, (target, value) in enumerate(zip(targets, path, strict=True), start=1):
            lower = upper = None
            if widths is not None:
                lower = float(value * math.exp(-widths[step - 1]))
                upper = float(value * math.exp(widths[step - 1]))
            rows.append(
                {
                    c.TICKER: ticker,
                    c.AS_OF_DATE: as_of,
                    c.TARGET_DATE: target,
                    c.MODEL_VERSION: version,
                    c.HORIZON: step,
                    c.YHAT: float(value),
                    "yhat_lower": lower,
                    "yhat_upper": upper,
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
