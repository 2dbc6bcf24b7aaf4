"""The forecast stage: the next ``horizon`` trading days after the as-of date.

Each ticker's last ``window`` closes up to the as-of date are scaled with
the scaler its model was trained with; the network predicts one step, the
prediction is appended to the window, and so on for ``horizon`` steps
(recursive forecasting). Predictions are inverted to prices and written to
``forecasts`` keyed on ``(ticker, as_of_date, target_date, model_version)``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.forecasts import replace_forecasts
from pipeline.db.models import current_model, get_model, model_scalers
from pipeline.db.prices import read_closes
from pipeline.db.tickers import inactive_tickers, ticker_exchanges
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.network import as_inputs
from pipeline.model.store import load_model
from pipeline.sequences.scaling import get_scaler
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

    def summary(self) -> dict[str, object]:
        """Fields for logs and flow results."""
        return {
            "as_of": self.as_of.isoformat(),
            "model_version": self.model_version,
            "horizon": self.horizon,
            "tickers": self.tickers,
            "forecasts_written": self.rows,
        }


def recursive_forecast(predict, windows: np.ndarray, horizon: int) -> np.ndarray:  # noqa: ANN001
    """Predict ``horizon`` steps by feeding each prediction back as the newest input.

    Args:
        predict: maps a float32 array ``(n, window, 1)`` to ``(n, 1)`` predictions.
        windows: scaled inputs ``(n, window)``, oldest first.
        horizon: steps to predict.

    Returns:
        Scaled predictions of shape ``(n, horizon)``.
    """
    current = np.asarray(windows, dtype=float).copy()
    steps = np.empty((len(current), horizon))
    for step in range(horizon):
        predicted = np.asarray(predict(as_inputs(current)), dtype=float).reshape(-1)
        steps[:, step] = predicted
        current = np.concatenate([current[:, 1:], predicted[:, np.newaxis]], axis=1)
    return steps


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
        model_version: the model to use; ``None`` takes the newest model trained
            on data no later than ``as_of``.

    Raises:
        MissingDataError: no usable model, or too few closes for a ticker.
        ConfigurationError: a requested ticker is not covered by the model.
    """
    if horizon < 1:
        raise ConfigurationError(f"horizon must be at least 1, got {horizon}")
    model_row = get_model(conn, model_version) if model_version else current_model(conn, as_of)
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
        wanted = list(tickers)
        if set(wanted) & inactive:
            raise ConfigurationError(
                f"{', '.join(sorted(set(wanted) & inactive))} is inactive; "
                "`pricecast tickers add` reactivates it"
            )
    else:
        wanted = [ticker for ticker in covered if ticker not in inactive]
    uncovered = sorted(set(wanted) - set(covered))
    if uncovered:
        raise ConfigurationError(
            f"model v{version} does not cover {', '.join(uncovered)}; train it first"
        )
    params = model_row["hyperparameters"]
    window = int(params["window"])
    scalers = model_scalers(conn, version)
    exchanges = ticker_exchanges(conn)
    closes = read_closes(conn, as_of, wanted, field=params.get("price_field", c.CLOSE))
    inputs, names = [], []
    for ticker in sorted(wanted):
        series = closes.loc[closes[c.TICKER] == ticker]
        if len(series) < window:
            raise MissingDataError(
                f"{ticker} has {len(series)} closes on or before {as_of}; "
                f"model v{version} needs {window}"
            )
        scaler = get_scaler(scalers[ticker]["scaling"])
        last = series[c.CLOSE].to_numpy(dtype=float)[-window:]
        inputs.append(scaler.apply(last, scalers[ticker]["scaler_params"]))
        names.append(ticker)
        last_date = series[c.TRADE_DATE].iloc[-1]
        if last_date < as_of:
            logger.info(
                "%s: newest close is from %s, before the as-of date %s", ticker, last_date, as_of
            )

    model = load_model(Path(model_row["file_path"]))
    scaled = recursive_forecast(model.predict_on_batch, np.stack(inputs), horizon)
    rows = []
    for ticker, predictions in zip(names, scaled, strict=True):
        targets = next_sessions(as_of, horizon, exchanges.get(ticker, DEFAULT_EXCHANGE))
        scaler_row = scalers[ticker]
        prices = get_scaler(scaler_row["scaling"]).invert(predictions, scaler_row["scaler_params"])
        for step, (target, value) in enumerate(zip(targets, prices, strict=True), start=1):
            rows.append(
                {
                    c.TICKER: ticker,
                    c.AS_OF_DATE: as_of,
                    c.TARGET_DATE: target,
                    c.MODEL_VERSION: version,
                    c.HORIZON: step,
                    c.YHAT: float(value),
                }
            )
    written = replace_forecasts(conn, as_of, version, names, rows)
    logger.info(
        "wrote %d forecasts for %d tickers as of %s with model v%d",
        written,
        len(names),
        as_of,
        version,
    )
    return ForecastResult(
        as_of=as_of, model_version=version, horizon=horizon, tickers=names, rows=written
    )
