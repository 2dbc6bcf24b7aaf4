"""The HTML report's structure: the overview row of every ticker and its numbers, sort
keys, the bounded set of charts and their fans, escaping, no outside references,
the same bytes twice, and the errors a user sees.

Most tests insert prices, models and forecasts by hand (``insert_report_rows``),
and recompute what the page must say from those rows with their own SQL, not
with the report's code; one runs the real stages on tiny settings. The page
is read as a tree (``report_page``, on the standard library's ``html.parser``).
``insert_report_rows`` is also used by ``test_report_browser.py``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import TINY_MODEL, TINY_SEQUENCES, synthetic_prices
from report_page import Element, parse, path_points
from sqlalchemy.engine import Connection, Engine

from pipeline import columns as c
from pipeline.db.forecasts import read_forecasts
from pipeline.db.prices import upsert_prices
from pipeline.db.schema import forecasts, models
from pipeline.db.schema import prices as prices_table
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.report import (
    ReportData,
    build_report,
    latest_forecast_date,
    load_report_data,
    render_report,
    write_report,
)
from pipeline.report.data import ForecastPoint, TickerReport

PRICES = synthetic_prices(("AAA", "BBB"), days=90, seed=3)
DATES = [pd.Timestamp(day).date() for day in sorted(PRICES[c.TRADE_DATE].unique())]
AS_OF = DATES[-1]
#: One-step forecasts were made from each of these origins (so scored up to AS_OF).
SCORED_ORIGINS = DATES[-31:-1]
DECISION = "promoted: MAE 0.41 < champion's 0.45 & first <b>model</b>"
#: The ids the charts give their series (pipeline/report/charts.py).
SERIES = ("closes", "median", "fan-outer", "fan-inner", "error-model", "error-naive")


def price(value: float | None) -> str:
    """A price as the page writes it: two decimals, three significant digits below 1."""
    if value is None:
        return "—"
    decimals = 2 if abs(value) >= 1 or value == 0 else 2 - math.floor(math.log10(abs(value)))
    return f"{value:,.{decimals}f}"


def closes(ticker: str) -> dict[dt.date, float]:
    """The synthetic closes of ``ticker`` by date."""
    rows = PRICES.loc[PRICES[c.TICKER] == ticker]
    pairs = zip(rows[c.TRADE_DATE], rows[c.CLOSE], strict=True)
    return {pd.Timestamp(day).date(): float(close) for day, close in pairs}


def model_row(version: int, promoted: bool = True, decision: str = DECISION) -> dict:
    """A ``models`` row with the fields the report reads."""
    return {
        "version": version,
        "fingerprint": f"fp{version}",
        "mode": "retrain",
        "parent_version": None,
        "trained_at": dt.datetime(2024, 1, 2, 22, tzinfo=dt.UTC),
        "data_through": DATES[-40],
        "tickers": ["AAA", "BBB"],
        "hyperparameters": {"window": 5},
        "val_loss": 0.1,
        "val_mase": 0.9312 if promoted else 1.1,
        "promoted": promoted,
        "decision": decision,
        "train_samples": 10,
        "validation_samples": 2,
        "epochs_run": 1,
        "file_path": f"/m/v{version}.keras",
    }


def forecast_row(
    ticker: str,
    as_of: dt.date,
    target: dt.date,
    horizon: int,
    yhat: float,
    lower: float | None = None,
    upper: float | None = None,
    version: int = 1,
    fan: float | None = None,
) -> dict:
    """A ``forecasts`` row; ``fan``: the log-scale of its quantiles (``None``: none)."""

    def quantile(z: float) -> float | None:
        return None if fan is None else yhat * math.exp(z * fan)

    return {
        "ticker": ticker,
        "as_of_date": as_of,
        "target_date": target,
        "model_version": version,
        "horizon": horizon,
        "yhat": yhat,
        "yhat_lower": lower,
        "yhat_upper": upper,
        "yhat_q05": quantile(-1.645),
        "yhat_q25": quantile(-0.674),
        "yhat_q75": quantile(0.674),
        "yhat_q95": quantile(1.645),
    }


def future_days(start: dt.date, count: int) -> list[dt.date]:
    """The ``count`` business days after ``start``."""
    return [day.date() for day in pd.bdate_range(start + dt.timedelta(days=1), periods=count)]


def insert_report_rows(
    conn: Connection,
    intervals: Mapping[str, bool] | None = None,
    decision: str = DECISION,
    scored: bool = True,
    fans: Mapping[str, bool] | None = None,
) -> dict[str, list[dict]]:
    """Prices of AAA and BBB, model v1 and forecasts as a daily pipeline would have left them.

    One-step forecasts from each of ``SCORED_ORIGINS`` (a damped step toward
    the next close, so the model beats the naive forecast), and five
    forecasts as of ``AS_OF`` per ticker (AAA up 0.4 % a step, BBB down 0.2 %),
    with intervals for the tickers ``intervals`` marks (default: AAA only) and
    fan quantiles for those ``fans`` marks (default: the same).

    Returns:
        The forecasts inserted as of ``AS_OF``, per ticker.
    """
    intervals = {"AAA": True, "BBB": False} if intervals is None else intervals
    fans = intervals if fans is None else fans
    upsert_prices(conn, PRICES)
    conn.execute(sa.insert(models), [model_row(1, decision=decision)])
    rows: list[dict] = []
    latest: dict[str, list[dict]] = {}
    for ticker, drift in (("AAA", 0.004), ("BBB", -0.002)):
        series = closes(ticker)
        if scored:
            for origin in SCORED_ORIGINS:
                target = DATES[DATES.index(origin) + 1]
                step = series[target] - series[origin]
                yhat = series[origin] + 0.4 * step + 0.1 * abs(step)
                rows.append(forecast_row(ticker, origin, target, 1, yhat, yhat * 0.97, yhat * 1.03))
        last = series[AS_OF]
        latest[ticker] = []
        for horizon, target in enumerate(future_days(AS_OF, 5), start=1):
            yhat = round(last * (1 + drift * horizon), 6)
            width = 0.02 * math.sqrt(horizon)
            lower, upper = (
                (yhat * math.exp(-width), yhat * math.exp(width))
                if intervals.get(ticker)
                else (None, None)
            )
            fan = 0.6 * width if fans.get(ticker) else None
            latest[ticker].append(
                forecast_row(ticker, AS_OF, target, horizon, yhat, lower, upper, fan=fan)
            )
        rows += latest[ticker]
    conn.execute(sa.insert(forecasts), rows)
    return latest


#: An engine with ``insert_report_rows``' rows, and the forecasts as of AS_OF per ticker.
Loaded = tuple[Engine, dict[str, list[dict]]]


@pytest.fixture
def loaded(engine: Engine) -> Loaded:
    with engine.begin() as conn:
        latest = insert_report_rows(conn)
    return engine, latest


def report(engine: Engine, as_of: dt.date = AS_OF, **kwargs: object) -> str:
    with engine.connect() as conn:
        return build_report(conn, as_of, **kwargs)  # type: ignore[arg-type]


def overview(page: Element) -> list[Element]:
    """The overview table's body rows."""
    return list(page.by_id("overview-table").find("tbody").iter("tr"))


def cells(row: Element) -> dict[str, str]:
    """A row's cells' text by the overview's column headings."""
    headings = ["Ticker", "Last close", "Next session", "Forecast", "Move", "Interval width",
                "MAE", "MASE", "Stale"]  # fmt: skip
    texts = [cell.text for cell in row.children if isinstance(cell, Element)]
    assert len(texts) == len(headings)
    return dict(zip(headings, texts, strict=True))


def charts(page: Element) -> dict[str, Element]:
    """The charts' ``<svg>`` elements by ticker, in page order."""
    found = {svg.attrs["data-ticker"]: svg for svg in page.iter("svg", class_="chart")}
    assert len(found) == len(list(page.iter("svg")))  # every SVG is a chart, one per ticker
    return found


def series(svg: Element, name: str) -> list[tuple[float, float]] | None:
    """The points of a chart's series (``SERIES``) in the chart's coordinates; ``None``:
    not drawn. matplotlib draws a band's shapes as paths, or defines each once and
    draws it by a ``<use>`` at an offset."""
    groups = [g for g in svg.iter("g") if g.attrs.get("id", "").endswith(f"-{name}")]
    if not groups:
        return None
    (group,) = groups
    drawn = [p for p in group.iter("path") if "id" not in p.attrs]
    if not name.startswith("fan"):  # a line: one path (its markers are defined shapes)
        (line,) = drawn
        return path_points(line.attrs["d"])
    # A band with gaps is several shapes, drawn directly or defined once and used.
    points = [point for path in drawn for point in path_points(path.attrs["d"])]
    for use in group.iter("use"):
        shape = group.find("path", id=use.attrs["href"][1:])
        points += path_points(shape.attrs["d"], (float(use.attrs["x"]), float(use.attrs["y"])))
    return points


def span_at(band: list[tuple[float, float]], x: float) -> tuple[float, float]:
    """The band's top and bottom y at ``x``."""
    ys = [y for bx, y in band if abs(bx - x) < 0.02]
    assert ys, f"the band has no point at x={x}"
    return min(ys), max(ys)


def assert_drawn_in_value_order(values: Sequence[float], ys: Sequence[float]) -> None:
    """A higher value is drawn higher (smaller y), linearly."""
    assert len(values) == len(ys)
    low, high = min(values), max(values)
    y_low, y_high = ys[values.index(low)], ys[values.index(high)]
    assert y_high < y_low
    for value, y in zip(values, ys, strict=True):
        expected = y_low + (value - low) * (y_high - y_low) / (high - low)
        assert y == pytest.approx(expected, abs=0.05)


def expected_row(conn: Connection, ticker: str, history_days: int = 60) -> dict[str, object]:
    """What the overview must say of ``ticker``, from the tables by plain SQL."""
    newest = conn.execute(
        sa.text(
            "select trade_date, close from prices where ticker = :t and trade_date <= :d "
            "order by trade_date desc"
        ),
        {"t": ticker, "d": AS_OF},
    ).all()
    last_close = float(newest[0][1])
    window_start = pd.Timestamp(newest[min(history_days, len(newest)) - 1][0]).date()
    close_on = {pd.Timestamp(day).date(): float(close) for day, close in newest}
    (yhat, low, high, q05, q95) = conn.execute(
        sa.text(
            "select yhat, yhat_lower, yhat_upper, yhat_q05, yhat_q95 from forecasts "
            "where ticker = :t and as_of_date = :d and horizon = 1"
        ),
        {"t": ticker, "d": AS_OF},
    ).one()
    errors, naive = [], []
    for origin, target, forecast in conn.execute(
        sa.text(
            "select as_of_date, target_date, yhat from forecasts where ticker = :t "
            "and horizon = 1 and target_date <= :d"
        ),
        {"t": ticker, "d": AS_OF},
    ):
        origin, target = pd.Timestamp(origin).date(), pd.Timestamp(target).date()
        if target >= window_start:
            errors.append(abs(forecast - close_on[target]))
            naive.append(abs(close_on[origin] - close_on[target]))
    outer = (q05, q95) if q05 is not None else (low, high)
    return {
        "last_close": last_close,
        "yhat": yhat,
        "move": yhat / last_close - 1,
        "width": None if outer[0] is None else (outer[1] - outer[0]) / last_close,
        "mae": sum(errors) / len(errors) if errors else None,
        "mase": sum(errors) / sum(naive) if errors else None,
    }


def test_the_overview_has_a_row_per_ticker_with_the_numbers_of_the_tables(
    loaded: Loaded,
) -> None:
    engine, latest = loaded
    page = parse(report(engine))
    rows = overview(page)
    assert [row.attrs["data-ticker"] for row in rows] == ["AAA", "BBB"]
    with engine.connect() as conn:
        expected = {ticker: expected_row(conn, ticker) for ticker in ("AAA", "BBB")}
    for row in rows:
        ticker = row.attrs["data-ticker"]
        want = expected[ticker]
        shown = cells(row)
        assert shown["Ticker"] == ticker
        assert shown["Last close"] == price(want["last_close"])
        assert shown["Next session"] == latest[ticker][0]["target_date"].isoformat()
        assert shown["Forecast"] == price(want["yhat"])
        assert shown["Move"] == f"{want['move'] * 100:+.2f}%"
        assert float(row.attrs["data-move"]) == pytest.approx(want["move"], rel=1e-5)
        assert shown["MAE"] == price(want["mae"])
        assert shown["MASE"] == f"{want['mase']:.3f}"
        assert float(row.attrs["data-mase"]) == pytest.approx(want["mase"], rel=1e-5)
        assert shown["Stale"] == ""
        if want["width"] is None:
            assert (shown["Interval width"], row.attrs["data-width"]) == ("—", "")
        else:
            assert shown["Interval width"] == f"{want['width'] * 100:.2f}%"
            assert float(row.attrs["data-width"]) == pytest.approx(want["width"], rel=1e-5)
    # The damped one-step forecasts beat the naive forecast.
    assert all(float(row.attrs["data-mase"]) < 1 for row in rows)


def test_the_overview_is_in_ticker_order_and_sortable_by_move_width_and_error(
    loaded: Loaded,
) -> None:
    engine, _ = loaded
    page = parse(report(engine))
    table = page.by_id("overview-table")
    sortable = {
        th.attrs["data-sort"]: th.text for th in table.iter("th") if "data-sort" in th.attrs
    }
    assert sortable == {"order": "Ticker", "move": "Move", "width": "Interval width",
                        "mase": "MASE"}  # fmt: skip
    # Without JavaScript the order is the default one, and says so.
    assert table.find("th", data_sort="order").attrs["aria-sort"] == "ascending"
    assert [row.attrs["data-order"] for row in overview(page)] == ["0", "1"]
    for row in overview(page):
        assert {"data-move", "data-width", "data-mase", "data-order"} <= set(row.attrs)
    (script,) = page.iter("script")
    assert "src" not in script.attrs and "overview-table" in script.text


def test_charts_are_bounded_and_go_to_the_largest_moves(engine: Engine) -> None:
    tickers = [f"T{index}" for index in range(6)]
    moves = {"T0": 0.001, "T1": -0.03, "T2": 0.02, "T3": 0.0, "T4": -0.005, "T5": 0.02}
    prices = synthetic_prices(tuple(tickers), days=30, seed=1)
    dates = [pd.Timestamp(day).date() for day in sorted(prices[c.TRADE_DATE].unique())]
    with engine.begin() as conn:
        upsert_prices(conn, prices)
        conn.execute(sa.insert(models), [model_row(1)])
        last = prices.loc[prices[c.TRADE_DATE] == prices[c.TRADE_DATE].max()]
        target = future_days(dates[-1], 1)[0]
        conn.execute(
            sa.insert(forecasts),
            [
                forecast_row(row.ticker, dates[-1], target, 1, row.close * (1 + moves[row.ticker]))
                for row in last.itertuples()
            ],
        )
    with engine.connect() as conn:
        page = parse(build_report(conn, dates[-1], charts=3))
        # Largest absolute move first; T2 and T5 tie and go by ticker.
        assert list(charts(page)) == ["T1", "T2", "T5"]
        assert len(overview(page)) == 6
        linked = [row.attrs["data-ticker"] for row in overview(page) if list(row.iter("a"))]
        assert linked == ["T1", "T2", "T5"]
        sections = [s.attrs["data-ticker"] for s in page.iter("section", class_="ticker")]
        assert sections == ["T1", "T2", "T5"]
        assert "(3 more in the overview)" in page.by_id("charts").text
        # Named tickers are charted in their order, the first ones up to the bound.
        page = parse(build_report(conn, dates[-1], tickers=["T3", "T0", "T4"], charts=2))
        assert list(charts(page)) == ["T3", "T0"]
        assert [row.attrs["data-ticker"] for row in overview(page)] == ["T3", "T0", "T4"]
        page = parse(build_report(conn, dates[-1], charts=0))
        assert not charts(page) and len(overview(page)) == 6
        assert not list(page.iter("section", class_="ticker"))
        with pytest.raises(ConfigurationError, match="charts"):
            build_report(conn, dates[-1], charts=-1)


def test_each_chart_is_inline_svg_with_the_closes_the_median_and_the_fan(
    loaded: Loaded,
) -> None:
    engine, latest = loaded
    page = parse(report(engine, history_days=40))
    svgs = charts(page)
    assert list(svgs) == ["AAA", "BBB"]  # AAA moves 0.4 %, BBB 0.2 %
    aaa = svgs["AAA"]
    assert aaa.attrs["role"] == "img" and "AAA" in aaa.attrs["aria-label"]
    assert "AAA" in aaa.find("title").text
    assert all(series(aaa, name) is not None for name in SERIES)
    history = series(aaa, "closes")
    median = series(aaa, "median")
    assert len(history) == 40
    assert [x for x, _ in history] == sorted(x for x, _ in history)
    # The median path starts at the last close, then one point per forecast.
    assert median[0] == pytest.approx(history[-1])
    assert len(median) == 1 + len(latest["AAA"])
    series_closes = closes("AAA")
    values = [series_closes[day] for day in DATES[-40:]] + [row["yhat"] for row in latest["AAA"]]
    assert_drawn_in_value_order(values, [y for _, y in history + median[1:]])
    # Sessions are evenly spaced, forecasts continuing the closes' spacing.
    drawn = history + median[1:]
    steps = {round(b[0] - a[0], 2) for a, b in zip(drawn, drawn[1:], strict=False)}
    assert len(steps) == 1
    # The fan: outer band around the inner band around the median, from the last close.
    outer, inner = series(aaa, "fan-outer"), series(aaa, "fan-inner")
    for x, y in median[1:]:
        outer_top, outer_bottom = span_at(outer, x)
        inner_top, inner_bottom = span_at(inner, x)
        assert outer_top < inner_top < y < inner_bottom < outer_bottom
    assert span_at(outer, median[0][0]) == pytest.approx((median[0][1], median[0][1]), abs=0.02)
    # The error panel: one point per scored target date in the 40 sessions shown.
    scored = [origin for origin in SCORED_ORIGINS if DATES[DATES.index(origin) + 1] >= DATES[-40]]
    assert len(series(aaa, "error-model")) == len(series(aaa, "error-naive")) == len(scored)
    # BBB has neither interval nor quantiles: no fan, and its text says so.
    bbb = svgs["BBB"]
    assert series(bbb, "fan-outer") is None and series(bbb, "fan-inner") is None
    assert series(bbb, "median") is not None
    assert "no interval" in page.find("section", data_ticker="BBB").text


def test_without_quantiles_the_fan_is_the_prediction_interval(engine: Engine) -> None:
    with engine.begin() as conn:
        latest = insert_report_rows(conn, scored=False, fans={})
    page = parse(report(engine))
    aaa = charts(page)["AAA"]
    outer, median = series(aaa, "fan-outer"), series(aaa, "median")
    assert series(aaa, "fan-inner") is None
    assert len(median) == 1 + len(latest["AAA"])
    for x, y in median[1:]:
        top, bottom = span_at(outer, x)
        assert top < y < bottom
    assert "Prediction interval" in aaa.text  # the legend
    section = page.find("section", data_ticker="AAA")
    headings = [th.text for th in section.find("table", class_="forecasts").iter("th")]
    assert "Interval low" in headings and "Interval high" in headings
    row = next(r for r in overview(page) if r.attrs["data-ticker"] == "AAA")
    first = latest["AAA"][0]
    last_close = closes("AAA")[AS_OF]
    width = (first["yhat_upper"] - first["yhat_lower"]) / last_close
    assert float(row.attrs["data-width"]) == pytest.approx(width, rel=1e-5)


def test_a_gap_in_the_intervals_leaves_a_gap_in_the_band(engine: Engine) -> None:
    with engine.begin() as conn:
        latest = insert_report_rows(conn, scored=False, fans={})
        target = latest["AAA"][2]["target_date"]
        conn.execute(
            sa.update(forecasts)
            .where(forecasts.c.ticker == "AAA", forecasts.c.target_date == target)
            .values(yhat_lower=None, yhat_upper=None)
        )
    aaa = charts(parse(report(engine)))["AAA"]
    median = series(aaa, "median")
    outer = series(aaa, "fan-outer")
    xs = {round(x, 2) for x, _ in outer}
    assert round(median[3][0], 2) not in xs  # horizon 3 has no interval
    assert {round(x, 2) for x, _ in median if round(x, 2) != round(median[3][0], 2)} <= xs


def test_the_forecast_tables_hold_every_forecast(loaded: Loaded) -> None:
    engine, latest = loaded
    page = parse(report(engine))
    for ticker, rows in latest.items():
        table = page.find("table", class_="forecasts", data_ticker=ticker)
        found = [
            [cell.text for cell in tr.children if isinstance(cell, Element)][:7]
            for tr in table.find("tbody").iter("tr")
        ]
        expected = [
            [
                row["target_date"].isoformat(),
                str(row["horizon"]),
                price(row["yhat"]),
                price(row["yhat_q05"] if row["yhat_q05"] is not None else row["yhat_lower"]),
                price(row["yhat_q25"]),
                price(row["yhat_q75"]),
                price(row["yhat_q95"] if row["yhat_q95"] is not None else row["yhat_upper"]),
            ]
            for row in rows
        ]
        assert found == expected


def test_text_from_the_database_is_escaped(engine: Engine) -> None:
    with engine.begin() as conn:
        insert_report_rows(conn, decision="kept v0: <script>alert('x')</script> & MAE 1 < 2")
    document = report(engine)
    assert document.count("<script") == 1  # the page's own
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; MAE 1 &lt; 2" in document
    decision = parse(document).find("td", class_="decision")
    assert decision.text == "kept v0: <script>alert('x')</script> & MAE 1 < 2"


def test_the_document_references_nothing_outside_itself(loaded: Loaded) -> None:
    engine, _ = loaded
    document = report(engine)
    page = parse(document)
    ids = [element.attrs["id"] for element in page.iter() if "id" in element.attrs]
    assert len(ids) == len(set(ids)), "ids repeat"
    for element in page.iter():
        assert element.tag not in {"link", "img", "iframe", "object", "embed", "image"}
        for name, value in element.attrs.items():
            assert name != "src" and not name.startswith("xmlns"), (element.tag, name)
            if name == "href":
                assert value.startswith("#") and value[1:] in ids, value
            for target in re.findall(r"url\(([^)]*)\)", value):
                assert target.startswith("#") and target[1:] in ids, value
    lowered = document.lower()
    for needle in ("http:", "https:", "file:", "@import", "@font-face", "<?xml", "<!doctype svg"):
        assert needle not in lowered, needle
    assert document.startswith("<!DOCTYPE html>")
    assert parse(document).find("meta", charset="utf-8")


def test_the_same_data_gives_the_same_bytes(loaded: Loaded, tmp_path: Path) -> None:
    engine, _ = loaded
    with engine.connect() as conn:
        first = write_report(conn, tmp_path / "first.html", AS_OF).read_bytes()
        second = write_report(conn, tmp_path / "second.html", AS_OF).read_bytes()
    assert first == second


def test_the_page_grows_by_a_table_row_per_ticker_not_a_chart() -> None:
    """A test-scale check of issue 14 (``benchmarks/report_size.py`` measures 1,000):
    past the charted ones, a ticker adds one overview row."""
    as_of = dt.date(2024, 3, 1)
    days = [day.date() for day in pd.bdate_range(end=as_of, periods=60)]
    target = future_days(as_of, 1)[0]

    def data(count: int) -> ReportData:
        parts = [
            TickerReport(
                f"T{index:04d}",
                1,
                [(day, 100.0 + index + step % 7) for step, day in enumerate(days)],
                [ForecastPoint(target, 1, 101.0 + index, 95.0, 107.0, 99.0, 103.0, 94.0, 108.0)],
                [],
            )
            for index in range(count)
        ]
        return ReportData(as_of, 60, parts, [], [])

    small, large = render_report(data(10), charts=2), render_report(data(510), charts=2)
    assert len(charts(parse(large))) == 2
    per_ticker = (len(large.encode()) - len(small.encode())) / 500
    assert per_ticker < 600, f"{per_ticker:.0f} bytes a ticker"


def test_the_summary_names_the_champion_and_its_mase(loaded: Loaded) -> None:
    engine, _ = loaded
    summary = parse(report(engine)).by_id("summary")
    facts = {div.find("dt").text: div.find("dd").text for div in summary.find("dl").iter("div")}
    assert facts["Tickers"].startswith("2")
    assert facts["Champion model"].startswith("v1")
    assert facts["Validation MASE v1"].startswith("0.9312 beats the naive forecast")
    assert "Live one-step MASE v1" in facts
    assert summary.find("table", class_="live").find("tr", data_horizon="1")


def test_live_mase_matches_the_model_leaderboard_view(loaded: Loaded) -> None:
    engine, _ = loaded
    with engine.connect() as conn:
        data = load_report_data(conn, AS_OF)
        board = conn.execute(
            sa.text(
                "select horizon, forecasts, mae, naive_mae, mase, coverage "
                "from model_leaderboard where model_version = 1 order by horizon"
            )
        ).all()
    assert [
        (s.horizon, s.forecasts, s.mae, s.naive_mae, s.mase, s.coverage) for s in data.live
    ] == [tuple(pytest.approx(float(v)) for v in row) for row in board]
    assert data.live[0].forecasts == 2 * len(SCORED_ORIGINS)


def test_a_past_report_scores_only_what_was_known_then(loaded: Loaded) -> None:
    engine, _ = loaded
    as_of = SCORED_ORIGINS[10]  # one-step forecasts were made as of this date too
    with engine.connect() as conn:
        data = load_report_data(conn, as_of)
    (aaa, _) = data.tickers
    assert [point.target_date for point in aaa.scored] == [
        DATES[DATES.index(origin) + 1] for origin in SCORED_ORIGINS[:10]
    ]
    assert aaa.history[-1][0] == as_of
    assert [point.target_date for point in aaa.forecasts] == [DATES[DATES.index(as_of) + 1]]
    assert data.live[0].forecasts == 20


def test_the_promoted_version_wins_over_a_challenger_forecast(loaded: Loaded) -> None:
    engine, latest = loaded
    with engine.begin() as conn:
        conn.execute(sa.insert(models), [model_row(2, promoted=False)])
        conn.execute(
            sa.insert(forecasts),
            [{**row, "model_version": 2, "yhat": 999.0} for row in latest["AAA"]],
        )
    document = report(engine)
    assert "999.00" not in document
    assert "model v1" in parse(document).find("section", data_ticker="AAA").text


def test_a_stale_ticker_is_flagged(loaded: Loaded) -> None:
    engine, _ = loaded
    with engine.begin() as conn:
        conn.execute(sa.text("delete from prices where ticker = 'BBB' and trade_date = :d"),
                     {"d": AS_OF})  # fmt: skip
    page = parse(report(engine))
    shown = {row.attrs["data-ticker"]: row for row in overview(page)}
    assert cells(shown["BBB"])["Stale"] == f"stale, last close {DATES[-2].isoformat()}"
    assert shown["BBB"].attrs["class"] == "stale" and "class" not in shown["AAA"].attrs
    assert "1 stale" in page.by_id("summary").text
    assert (
        f"No close on {AS_OF.isoformat()} itself." in page.find("section", data_ticker="BBB").text
    )


def test_no_forecasts_as_of_the_date_is_an_error_naming_it(loaded: Loaded) -> None:
    engine, _ = loaded
    missing = AS_OF + dt.timedelta(days=3)
    with (
        pytest.raises(MissingDataError, match=f"no forecasts as of {missing}.*{AS_OF}"),
        engine.connect() as conn,
    ):
        build_report(conn, missing)
    with pytest.raises(MissingDataError, match="for ZZZ"), engine.connect() as conn:
        build_report(conn, AS_OF, tickers=["ZZZ"])
    with pytest.raises(ConfigurationError, match="history_days"), engine.connect() as conn:
        build_report(conn, AS_OF, history_days=0)


def test_an_empty_database_says_so(engine: Engine) -> None:
    with pytest.raises(MissingDataError, match="none before it either"), engine.connect() as conn:
        build_report(conn, AS_OF)
    with engine.connect() as conn:
        assert latest_forecast_date(conn) is None


def test_without_scored_forecasts_sentences_replace_the_errors(engine: Engine) -> None:
    with engine.begin() as conn:
        insert_report_rows(conn, scored=False)
    page = parse(report(engine))
    for ticker, svg in charts(page).items():
        assert series(svg, "closes") is not None and series(svg, "error-model") is None
        note = page.find("section", data_ticker=ticker).find("p", class_="no-scores")
        assert f"No one-step forecasts of {ticker} have been scored yet" in note.text
    assert [cells(row)["MASE"] for row in overview(page)] == ["—", "—"]
    assert [row.attrs["data-mase"] for row in overview(page)] == ["", ""]
    assert page.find("p", class_="no-live")


def test_a_ticker_without_history_or_forecasts(loaded: Loaded) -> None:
    engine, _ = loaded
    target = future_days(AS_OF, 1)[0]
    with engine.begin() as conn:
        conn.execute(sa.insert(forecasts), [forecast_row("NEW", AS_OF, target, 1, 12.5)])
        conn.execute(sa.insert(forecasts), [forecast_row("SOLO", AS_OF, target, 1, 3.0, 2.5, 3.5)])
    page = parse(report(engine, tickers=["NEW", "SOLO", "AAA", "GONE"]))
    assert [row.attrs["data-ticker"] for row in overview(page)] == ["NEW", "SOLO", "AAA", "GONE"]
    sections = {s.attrs["data-ticker"]: s for s in page.iter("section", class_="ticker")}
    assert list(sections) == ["NEW", "SOLO", "AAA", "GONE"]
    assert "No closes of NEW are stored up to" in sections["NEW"].text
    new = charts(page)["NEW"]
    assert series(new, "closes") is None and len(series(new, "median")) == 1
    solo = series(charts(page)["SOLO"], "fan-outer")
    assert {round(x, 2) for x, _ in solo} == {
        round(series(charts(page)["SOLO"], "median")[0][0], 2)
    }
    assert "No forecasts of GONE as of" in sections["GONE"].text
    assert not list(sections["GONE"].iter("svg"))
    gone = cells(next(r for r in overview(page) if r.attrs["data-ticker"] == "GONE"))
    assert (gone["Forecast"], gone["Move"], gone["Stale"]) == ("—", "—", "stale, no closes")


def test_write_report_writes_the_document_atomically(loaded: Loaded, tmp_path: Path) -> None:
    engine, _ = loaded
    path = tmp_path / "out" / "report.html"
    with engine.connect() as conn:
        assert write_report(conn, path, AS_OF) == path
        assert path.read_text(encoding="utf-8") == build_report(conn, AS_OF)
        assert latest_forecast_date(conn) == AS_OF
        with pytest.raises(MissingDataError):
            write_report(conn, path, AS_OF + dt.timedelta(days=3))
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_importing_the_report_imports_no_plotting_library() -> None:
    """``pipeline.stages`` imports the report; matplotlib waits until a chart is drawn."""
    code = "import sys, pipeline.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_report_of_the_real_stages(engine: Engine, home: Path) -> None:
    from pipeline.model.forecast import forecast
    from pipeline.model.train import train
    from pipeline.sequences.build import build_sequences

    prices = synthetic_prices(("AAA", "BBB"), days=80)
    dates = [pd.Timestamp(day).date() for day in sorted(prices[c.TRADE_DATE].unique())]
    with engine.begin() as conn:
        upsert_prices(conn, prices)
        build_sequences(conn, home, dates[59], config=TINY_SEQUENCES)
        version = train(
            conn, home, dates[59], None, "retrain", TINY_SEQUENCES, TINY_MODEL, workers=0
        ).model_version
        for as_of in dates[59:66]:
            forecast(conn, as_of, horizon=3)
    with engine.connect() as conn:
        page = parse(build_report(conn, dates[65], history_days=30))
        rows = read_forecasts(conn, dates[65])
        made = read_forecasts(conn)
    # Scored: the one-step targets up to dates[65] (as of 2024-03-28 and of Good Friday,
    # a synthetic close but no NYSE session, both target 2024-04-01: shown once).
    one_step = made.loc[(made[c.HORIZON] == 1) & (made[c.TARGET_DATE] <= dates[65])]
    scored_dates = sorted({day.isoformat() for day in one_step[c.TARGET_DATE]})
    assert len(scored_dates) == 5
    assert sorted(row.attrs["data-ticker"] for row in overview(page)) == ["AAA", "BBB"]
    for ticker, svg in charts(page).items():
        section = page.find("section", data_ticker=ticker)
        assert f"model v{version}" in section.text
        assert len(series(svg, "closes")) == 30
        assert len(series(svg, "error-model")) == len(scored_dates)
        assert series(svg, "fan-outer") is not None and series(svg, "fan-inner") is not None
        table = section.find("table", class_="forecasts")
        assert [tr.attrs["data-target-date"] for tr in table.find("tbody").iter("tr")] == [
            day.isoformat() for day in rows.loc[rows[c.TICKER] == ticker, c.TARGET_DATE]
        ]
        assert [td.text for td in table.iter("td", class_="yhat")] == [
            f"{value:,.2f}" for value in rows.loc[rows[c.TICKER] == ticker, c.YHAT]
        ]
    assert f"Champion model v{version}" in page.by_id("summary").text


@pytest.mark.parametrize("chunk", [1, 500])
@pytest.mark.parametrize("days", [1, 20, 60, 200])
def test_the_bulk_reads_equal_one_ticker_at_a_time(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch, chunk: int, days: int
) -> None:
    """``load_report_data`` reads the closes and scored forecasts of ``CHUNK`` tickers a
    statement: the same as reading each ticker alone, for a ticker with a gap of three
    months in its closes (fewer in the span read in bulk), one with few closes and one
    without any."""
    from pipeline.report import data as report_data

    engine, _ = loaded
    gap = [day for day in DATES if DATES[10] < day < DATES[-20]]
    with engine.begin() as conn:
        conn.execute(
            sa.delete(prices_table).where(
                prices_table.c[c.TICKER] == "BBB", prices_table.c[c.TRADE_DATE].in_(gap)
            )
        )
        young = synthetic_prices(("NEW",), start=str(DATES[-4]), days=4, seed=5)
        upsert_prices(conn, young)
    monkeypatch.setattr(report_data, "CHUNK", chunk)
    tickers = ["BBB", "NEW", "AAA", "NONE"]
    with engine.connect() as conn:
        data = load_report_data(conn, AS_OF, tickers, history_days=days)
        for part in data.tickers:
            alone = report_data._history(conn, part.ticker, AS_OF, days)
            assert part.history == alone
            since = alone[0][0] if alone else AS_OF
            expected = conn.execute(
                sa.text(
                    "select target_date, abs_error, naive_abs_error from forecast_accuracy "
                    "where ticker = :ticker and horizon = 1 and target_date <= :as_of "
                    "and target_date >= :since and naive_abs_error is not null "
                    "order by target_date"
                ),
                {"ticker": part.ticker, "as_of": AS_OF, "since": since},
            ).all()
            scored = [(str(p.target_date), p.abs_error, p.naive_abs_error) for p in part.scored]
            assert scored == ([(str(d), m, n) for d, m, n in expected] if alone else [])
    assert [len(part.history) for part in data.tickers] == [
        min(days, 31),
        min(days, 4),
        min(days, 90),
        0,
    ]
    assert data.tickers[2].scored and data.tickers[0].scored


def test_a_painter_draws_each_chart_as_a_new_figure_would(loaded: Loaded) -> None:
    """``Painter`` reuses its figures from chart to chart: each chart's SVG is byte for
    byte the one ``render_chart`` draws on new figures, whatever came before it (with
    or without the error panel, fan, closes or forecasts, at another scale)."""
    import dataclasses

    from pipeline.report.charts import Painter, render_chart

    engine, _ = loaded
    with engine.connect() as conn:
        aaa, bbb = load_report_data(conn, AS_OF).tickers
    parts = [
        aaa,
        bbb,
        dataclasses.replace(aaa, scored=[]),
        dataclasses.replace(bbb, history=[(day, close * 1e4) for day, close in bbb.history]),
        dataclasses.replace(aaa, history=[]),
        aaa,
        dataclasses.replace(bbb, forecasts=[], history=bbb.history[-3:]),
        dataclasses.replace(aaa, history=[(day, close / 1e3) for day, close in aaa.history]),
        bbb,
    ]
    with Painter() as painter:
        for index, part in enumerate(parts):
            chart_id = f"c{index}"
            drawn = painter.draw(part, chart_id, AS_OF, part.ticker)
            assert drawn == render_chart(part, chart_id, AS_OF, part.ticker), index


def test_text_sizes_shared_between_charts_change_no_byte(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A painter measures each text once for all its charts (``_share_text_metrics``):
    the same SVG as measuring on every chart, and matplotlib's own function is back
    when the painter closes."""
    import matplotlib.text

    from pipeline.report.charts import Painter

    engine, _ = loaded
    with engine.connect() as conn:
        parts = load_report_data(conn, AS_OF).tickers * 2
    measure = matplotlib.text._get_text_metrics_with_cache

    def draw_all(shared: bool) -> list[str]:
        monkeypatch.setattr(Painter, "shared_metrics", shared)
        with Painter() as painter:
            drawn = [painter.draw(p, f"c{i}", AS_OF, p.ticker) for i, p in enumerate(parts)]
            replaced = matplotlib.text._get_text_metrics_with_cache is not measure
        assert replaced == shared
        assert matplotlib.text._get_text_metrics_with_cache is measure
        return drawn

    assert draw_all(shared=True) == draw_all(shared=False)
