"""What the report shows, read from the database as of one date.

Everything is read as it was known on the as-of date: closes up to it, the
forecasts made as of it, and only the forecasts whose target date is on or
before it are scored (``forecast_accuracy`` joins every close stored, so a
report as of a past date must not use the closes that came later).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import forecasts, models, prices
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.freshness import stale_tickers

#: The consumer view of scored forecasts (sql/forecast_accuracy.sql), typed so
#: that dates come back as dates on every database.
forecast_accuracy = sa.table(
    "forecast_accuracy",
    sa.column(c.TICKER, sa.String),
    sa.column(c.AS_OF_DATE, sa.Date),
    sa.column(c.TARGET_DATE, sa.Date),
    sa.column(c.HORIZON, sa.Integer),
    sa.column(c.MODEL_VERSION, sa.Integer),
    sa.column("abs_error", sa.Double),
    sa.column("naive_abs_error", sa.Double),
    sa.column("inside_interval", sa.Boolean),
)


@dataclass(frozen=True)
class ForecastPoint:
    """One forecast close (the median), its prediction interval and the fan's quantiles
    (``None``: none)."""

    target_date: dt.date
    horizon: int
    yhat: float
    lower: float | None
    upper: float | None
    q25: float | None = None
    q75: float | None = None
    q05: float | None = None
    q95: float | None = None

    @property
    def outer(self) -> tuple[float | None, float | None]:
        """The fan's outer band: the 5 % to 95 % quantiles, else the prediction interval."""
        if self.q05 is not None and self.q95 is not None:
            return self.q05, self.q95
        return self.lower, self.upper

    @property
    def inner(self) -> tuple[float | None, float | None]:
        """The fan's inner band, the 25 % to 75 % quantiles (half of the outcomes)."""
        return self.q25, self.q75


@dataclass(frozen=True)
class ScoredPoint:
    """A one-step forecast whose target date has a close, and the naive forecast's error."""

    target_date: dt.date
    model_version: int
    abs_error: float
    naive_abs_error: float


@dataclass(frozen=True)
class TickerReport:
    """One ticker's part of the report.

    Attributes:
        ticker: the symbol.
        model_version: the version whose forecasts are shown (``None``: no forecasts).
        history: (trade date, close) pairs, oldest first, up to the as-of date.
        forecasts: the forecasts made as of the as-of date, by target date.
        scored: scored one-step forecasts, by target date, one per date, since the
            first date of ``history``.
        stale: the newest close is older than the exchange's last session on or
            before the as-of date (``pipeline.freshness``).
    """

    ticker: str
    model_version: int | None
    history: list[tuple[dt.date, float]]
    forecasts: list[ForecastPoint]
    scored: list[ScoredPoint]
    stale: bool = False

    @property
    def last_close(self) -> float | None:
        """The newest close up to the as-of date (``None``: no closes)."""
        return self.history[-1][1] if self.history else None

    @property
    def mae(self) -> float | None:
        """Mean absolute error of the scored one-step forecasts (``None``: none scored)."""
        if not self.scored:
            return None
        return sum(point.abs_error for point in self.scored) / len(self.scored)

    @property
    def naive_mae(self) -> float | None:
        """The naive forecast's mean absolute error on the same target dates."""
        if not self.scored:
            return None
        return sum(point.naive_abs_error for point in self.scored) / len(self.scored)

    @property
    def mase(self) -> float | None:
        """``mae / naive_mae``: below 1 beats the naive forecast (``None``: not defined)."""
        mae, naive = self.mae, self.naive_mae
        return None if mae is None or not naive else mae / naive


@dataclass(frozen=True)
class ModelSummary:
    """A model version the report's forecasts come from (a row of ``models``)."""

    version: int
    mode: str
    promoted: bool
    data_through: dt.date
    val_mase: float | None
    decision: str | None


@dataclass(frozen=True)
class LiveScore:
    """A model version's live errors for one horizon step, scored up to the as-of date.

    The same figures as the ``model_leaderboard`` view, restricted to target
    dates on or before the as-of date.
    """

    model_version: int
    horizon: int
    forecasts: int
    mae: float
    naive_mae: float
    mase: float | None
    coverage: float | None


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows."""

    as_of: dt.date
    history_days: int
    tickers: list[TickerReport]
    models: list[ModelSummary]
    live: list[LiveScore]
    #: The caller named the tickers (``tickers`` keeps their order); else every ticker
    #: with forecasts, sorted.
    listed: bool = False


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def latest_forecast_date(conn: Connection) -> dt.date | None:
    """The newest as-of date with forecasts, or ``None`` when there are none.

    The default as-of date of ``pricecast report``.
    """
    return conn.execute(sa.select(sa.func.max(forecasts.c[c.AS_OF_DATE]))).scalar_one_or_none()


def _missing_forecasts(conn: Connection, as_of: dt.date) -> MissingDataError:
    earlier = conn.execute(
        sa.select(sa.func.max(forecasts.c[c.AS_OF_DATE])).where(forecasts.c[c.AS_OF_DATE] < as_of)
    ).scalar_one_or_none()
    hint = (
        f"; the newest earlier date with forecasts is {earlier}"
        if earlier is not None
        else "; the forecasts table has none before it either"
    )
    return MissingDataError(
        f"no forecasts as of {as_of.isoformat()}: run `pricecast forecast --as-of "
        f"{as_of.isoformat()}` first, or report on a date that has forecasts{hint}"
    )


def _forecasts_as_of(
    conn: Connection, as_of: dt.date
) -> dict[str, tuple[int, list[ForecastPoint]]]:
    """Per ticker, the forecasts as of ``as_of`` of the champion's version.

    When several versions forecast a ticker as of the date (``pricecast forecast
    --model-version``), the promoted one wins, then the newest, as in the
    ``latest_forecasts`` view.
    """
    query = (
        sa.select(
            forecasts.c[c.TICKER],
            forecasts.c[c.MODEL_VERSION],
            forecasts.c[c.TARGET_DATE],
            forecasts.c[c.HORIZON],
            forecasts.c[c.YHAT],
            forecasts.c.yhat_lower,
            forecasts.c.yhat_upper,
            forecasts.c.yhat_q05,
            forecasts.c.yhat_q25,
            forecasts.c.yhat_q75,
            forecasts.c.yhat_q95,
            models.c.promoted,
        )
        .join(models, models.c.version == forecasts.c[c.MODEL_VERSION])
        .where(forecasts.c[c.AS_OF_DATE] == as_of)
        .order_by(forecasts.c[c.TICKER], forecasts.c[c.TARGET_DATE])
    )
    by_version: dict[str, dict[int, tuple[bool, list[ForecastPoint]]]] = {}
    for row in conn.execute(query).mappings():
        versions = by_version.setdefault(row[c.TICKER], {})
        _, points = versions.setdefault(row[c.MODEL_VERSION], (bool(row["promoted"]), []))
        points.append(
            ForecastPoint(
                target_date=row[c.TARGET_DATE],
                horizon=int(row[c.HORIZON]),
                yhat=float(row[c.YHAT]),
                lower=_float(row["yhat_lower"]),
                upper=_float(row["yhat_upper"]),
                q25=_float(row["yhat_q25"]),
                q75=_float(row["yhat_q75"]),
                q05=_float(row["yhat_q05"]),
                q95=_float(row["yhat_q95"]),
            )
        )
    chosen = {}
    for ticker, versions in by_version.items():
        version = max(versions, key=lambda v: (versions[v][0], v))
        chosen[ticker] = (version, versions[version][1])
    return chosen


#: Tickers per statement: bound parameters stay far below every database's limit.
CHUNK = 500


def _chunks(tickers: Sequence[str]) -> list[list[str]]:
    return [list(tickers[start : start + CHUNK]) for start in range(0, len(tickers), CHUNK)]


def _history(
    conn: Connection, ticker: str, as_of: dt.date, days: int
) -> list[tuple[dt.date, float]]:
    query = (
        sa.select(prices.c[c.TRADE_DATE], prices.c[c.CLOSE])
        .where(prices.c[c.TICKER] == ticker, prices.c[c.TRADE_DATE] <= as_of)
        .order_by(prices.c[c.TRADE_DATE].desc())
        .limit(days)
    )
    return [(day, float(close)) for day, close in reversed(conn.execute(query).all())]


def _histories(
    conn: Connection, tickers: Sequence[str], as_of: dt.date, days: int
) -> dict[str, list[tuple[dt.date, float]]]:
    """Each ticker's last ``days`` closes up to ``as_of`` (``_history`` of each).

    The closes of a calendar span that holds ``days`` sessions with room to spare
    are read for ``CHUNK`` tickers a statement; a ticker with fewer closes in it (new,
    stale or with gaps) is read alone. One statement per ticker spent 0.5 ms a
    ticker building and running it through SQLAlchemy (0.5 s at 1,000 tickers).
    """
    since = as_of - dt.timedelta(days=days * 7 // 5 + 21)
    found: dict[str, list[tuple[dt.date, float]]] = {ticker: [] for ticker in tickers}
    for chunk in _chunks(tickers):
        query = sa.select(prices.c[c.TICKER], prices.c[c.TRADE_DATE], prices.c[c.CLOSE]).where(
            prices.c[c.TICKER].in_(chunk),
            prices.c[c.TRADE_DATE] <= as_of,
            prices.c[c.TRADE_DATE] > since,
        )
        for ticker, day, close in conn.execute(query):
            found[ticker].append((day, float(close)))
    histories = {}
    for ticker, closes in found.items():
        if len(closes) >= days:
            histories[ticker] = sorted(closes)[-days:]
        else:
            histories[ticker] = _history(conn, ticker, as_of, days)
    return histories


def _scored(
    conn: Connection, since: dict[str, dt.date], as_of: dt.date
) -> dict[str, list[ScoredPoint]]:
    """Per ticker, the one-step forecasts scored on ``since[ticker]``..``as_of``, one per
    target date.

    A date forecast by several versions keeps the forecast the consumers saw
    (``latest_forecasts``' order: newest as-of date, promoted, newest version).
    ``CHUNK`` tickers with the same first date a statement: the fresh tickers share
    theirs, and a stale ticker's older one does not widen the others' span (every
    row of the view costs three subqueries).
    """
    view = forecast_accuracy
    best: dict[str, dict[dt.date, tuple[tuple[dt.date, bool, int], ScoredPoint]]] = {
        ticker: {} for ticker in since
    }
    groups: dict[dt.date, list[str]] = {}
    for ticker, first in since.items():
        groups.setdefault(first, []).append(ticker)
    chunks = [chunk for group in groups.values() for chunk in _chunks(group)]
    for chunk in chunks:
        query = (
            sa.select(
                view.c[c.TICKER],
                view.c[c.TARGET_DATE],
                view.c[c.AS_OF_DATE],
                view.c[c.MODEL_VERSION],
                view.c.abs_error,
                view.c.naive_abs_error,
                models.c.promoted,
            )
            .join(models, models.c.version == view.c[c.MODEL_VERSION])
            .where(
                view.c[c.TICKER].in_(chunk),
                view.c[c.HORIZON] == 1,
                view.c[c.TARGET_DATE] <= as_of,
                view.c[c.TARGET_DATE] >= since[chunk[0]],
            )
        )
        for row in conn.execute(query).mappings():
            day = row[c.TARGET_DATE]
            if row["naive_abs_error"] is None:  # no close on or before the as-of date
                continue
            rank = (row[c.AS_OF_DATE], bool(row["promoted"]), int(row[c.MODEL_VERSION]))
            point = ScoredPoint(
                target_date=day,
                model_version=int(row[c.MODEL_VERSION]),
                abs_error=float(row["abs_error"]),
                naive_abs_error=float(row["naive_abs_error"]),
            )
            days = best[row[c.TICKER]]
            if day not in days or rank > days[day][0]:
                days[day] = (rank, point)
    return {ticker: [days[day][1] for day in sorted(days)] for ticker, days in best.items()}


def _models(conn: Connection, versions: Sequence[int]) -> list[ModelSummary]:
    query = (
        sa.select(
            models.c.version,
            models.c.mode,
            models.c.promoted,
            models.c.data_through,
            models.c.val_mase,
            models.c.decision,
        )
        .where(models.c.version.in_(list(versions)))
        .order_by(models.c.version)
    )
    return [
        ModelSummary(
            version=int(row["version"]),
            mode=row["mode"],
            promoted=bool(row["promoted"]),
            data_through=row["data_through"],
            val_mase=_float(row["val_mase"]),
            decision=row["decision"],
        )
        for row in conn.execute(query).mappings()
    ]


def _live(conn: Connection, versions: Sequence[int], as_of: dt.date) -> list[LiveScore]:
    """The ``model_leaderboard`` figures of ``versions``, from targets up to ``as_of`` only."""
    view = forecast_accuracy
    mae = sa.func.avg(view.c.abs_error)
    naive_mae = sa.func.avg(view.c.naive_abs_error)
    query = (
        sa.select(
            view.c[c.MODEL_VERSION],
            view.c[c.HORIZON],
            sa.func.count().label("forecasts"),
            mae.label("mae"),
            naive_mae.label("naive_mae"),
            sa.func.avg(
                sa.case(
                    (view.c.inside_interval.is_(True), 1.0),
                    (view.c.inside_interval.is_(False), 0.0),
                )
            ).label("coverage"),
        )
        .where(view.c[c.MODEL_VERSION].in_(list(versions)), view.c[c.TARGET_DATE] <= as_of)
        .group_by(view.c[c.MODEL_VERSION], view.c[c.HORIZON])
        .order_by(view.c[c.MODEL_VERSION].desc(), view.c[c.HORIZON])
    )
    scores = []
    for row in conn.execute(query).mappings():
        model_mae, naive = _float(row["mae"]), _float(row["naive_mae"])
        if model_mae is None or naive is None:
            continue
        scores.append(
            LiveScore(
                model_version=int(row[c.MODEL_VERSION]),
                horizon=int(row[c.HORIZON]),
                forecasts=int(row["forecasts"]),
                mae=model_mae,
                naive_mae=naive,
                mase=model_mae / naive if naive > 0 else None,
                coverage=_float(row["coverage"]),
            )
        )
    return scores


def load_report_data(
    conn: Connection,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    history_days: int = 60,
) -> ReportData:
    """Read what the report as of ``as_of`` shows.

    Args:
        conn: an open connection to a pricecast database.
        as_of: the date whose forecasts are reported.
        tickers: the tickers to show, in this order; default: every ticker with
            forecasts as of ``as_of``, sorted. A listed ticker without forecasts
            as of that date is shown with a note.
        history_days: how many closes up to ``as_of`` each price chart shows; the
            one-step forecasts scored since the first of them make each ticker's
            live error.

    Returns:
        The report's data.

    Raises:
        ConfigurationError: ``history_days`` is below 1.
        MissingDataError: there are no forecasts as of ``as_of`` (of ``tickers``,
            when given).
    """
    if history_days < 1:
        raise ConfigurationError(f"history_days must be at least 1, got {history_days}")
    made = _forecasts_as_of(conn, as_of)
    if not made:
        raise _missing_forecasts(conn, as_of)
    if tickers is None:
        chosen = sorted(made)
    else:
        chosen = list(dict.fromkeys(ticker.strip() for ticker in tickers if ticker.strip()))
        if not any(ticker in made for ticker in chosen):
            raise MissingDataError(
                f"no forecasts as of {as_of.isoformat()} for {', '.join(chosen) or 'no tickers'}; "
                f"that date has forecasts for {', '.join(sorted(made))}"
            )
    stale = stale_tickers(conn, as_of, chosen)
    histories = _histories(conn, chosen, as_of, history_days)
    scored = _scored(
        conn, {ticker: closes[0][0] for ticker, closes in histories.items() if closes}, as_of
    )
    parts = []
    for ticker in chosen:
        version, points = made.get(ticker, (None, []))
        parts.append(
            TickerReport(
                ticker, version, histories[ticker], points, scored.get(ticker, []), ticker in stale
            )
        )
    versions = sorted({part.model_version for part in parts if part.model_version is not None})
    return ReportData(
        as_of=as_of,
        history_days=history_days,
        tickers=parts,
        models=_models(conn, versions),
        live=_live(conn, versions, as_of),
        listed=tickers is not None,
    )
