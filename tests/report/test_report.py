"""The HTML report: charts per ticker, values, vertical order, intervals, escaping, no references.

Most tests insert prices, models and forecasts by hand (``insert_report_rows``),
so that every value drawn is known; one runs the real stages on tiny settings.
``insert_report_rows`` is also used by ``test_report_browser.py``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import TINY_MODEL, TINY_SEQUENCES, synthetic_prices
from sqlalchemy.engine import Connection, Engine

from pipeline import columns as c
from pipeline.db.forecasts import read_forecasts
from pipeline.db.prices import upsert_prices
from pipeline.db.schema import forecasts, models
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.report import build_report, latest_forecast_date, load_report_data, write_report
from pipeline.report.svg import LinearScale, date_ticks, format_number, nice_ticks

D = dt.date
PRICES = synthetic_prices(("AAA", "BBB"), days=90, seed=3)
DATES = [pd.Timestamp(day).date() for day in sorted(PRICES[c.TRADE_DATE].unique())]
AS_OF = DATES[-1]
#: One-step forecasts were made from each of these origins (so scored up to AS_OF).
SCORED_ORIGINS = DATES[-31:-1]
DECISION = "promoted: MAE 0.41 < champion's 0.45 & first <b>model</b>"


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
) -> dict:
    """A ``forecasts`` row."""
    return {
        "ticker": ticker,
        "as_of_date": as_of,
        "target_date": target,
        "model_version": version,
        "horizon": horizon,
        "yhat": yhat,
        "yhat_lower": lower,
        "yhat_upper": upper,
    }


def future_days(start: dt.date, count: int) -> list[dt.date]:
    """The ``count`` business days after ``start``."""
    return [day.date() for day in pd.bdate_range(start + dt.timedelta(days=1), periods=count)]


def insert_report_rows(
    conn: Connection,
    intervals: Mapping[str, bool] | None = None,
    decision: str = DECISION,
    scored: bool = True,
) -> dict[str, list[dict]]:
    """Prices of AAA and BBB, model v1 and forecasts as a daily pipeline would have left them.

    One-step forecasts from each of ``SCORED_ORIGINS`` (a damped step toward
    the next close, so the model beats the naive forecast), and five
    forecasts as of ``AS_OF`` per ticker, with intervals for the tickers
    ``intervals`` marks (default: AAA only).

    Returns:
        The forecasts inserted as of ``AS_OF``, per ticker.
    """
    intervals = {"AAA": True, "BBB": False} if intervals is None else intervals
    upsert_prices(conn, PRICES)
    conn.execute(sa.insert(models), [model_row(1, decision=decision)])
    rows: list[dict] = []
    latest: dict[str, list[dict]] = {}
    for ticker in ("AAA", "BBB"):
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
            yhat = round(last * (1 + 0.004 * horizon), 6)
            width = 0.02 * math.sqrt(horizon)
            lower, upper = (
                (yhat * math.exp(-width), yhat * math.exp(width))
                if intervals.get(ticker)
                else (None, None)
            )
            latest[ticker].append(forecast_row(ticker, AS_OF, target, horizon, yhat, lower, upper))
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


def sections(document: str) -> dict[str, str]:
    """Each ticker's section, by ticker."""
    found = re.findall(
        r'<section class="card ticker" id="[^"]+" data-ticker="([^"]+)">(.*?)</section>',
        document,
        flags=re.S,
    )
    return dict(found)


def charts(html: str, kind: str) -> list[ET.Element]:
    """The ``<svg>`` charts of ``kind`` (price, error) in ``html``, parsed as XML."""
    return [
        ET.fromstring(svg)
        for svg in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
        if f'data-kind="{kind}"' in svg
    ]


def points(element: ET.Element) -> list[tuple[float, float]]:
    """The (x, y) points of a polyline or polygon."""
    return [tuple(map(float, pair.split(","))) for pair in element.get("points", "").split()]


def only(svg: ET.Element, css_class: str) -> ET.Element:
    (element,) = [e for e in svg.iter() if e.get("class") == css_class]
    return element


def assert_drawn_in_value_order(values: Sequence[float], ys: Sequence[float]) -> None:
    """A higher value is drawn higher (smaller y), linearly."""
    assert len(values) == len(ys)
    low, high = min(values), max(values)
    y_low, y_high = ys[values.index(low)], ys[values.index(high)]
    assert y_high < y_low
    for value, y in zip(values, ys, strict=True):
        expected = y_low + (value - low) * (y_high - y_low) / (high - low)
        assert y == pytest.approx(expected, abs=0.02)


def test_one_price_chart_and_one_error_chart_per_ticker(loaded: Loaded) -> None:
    engine, _ = loaded
    document = report(engine)
    parts = sections(document)
    assert list(parts) == ["AAA", "BBB"]
    for ticker, html in parts.items():
        (price,) = charts(html, "price")
        (error,) = charts(html, "error")
        for chart in (price, error):
            assert chart.get("data-ticker") == ticker
            assert chart.get("role") == "img"
            assert ticker in chart.get("aria-label", "")
            assert ticker in chart.find("title").text
    assert len(charts(document, "price")) == len(charts(document, "error")) == 2


def test_the_table_holds_every_forecast_value_and_date(loaded: Loaded) -> None:
    engine, latest = loaded
    parts = sections(report(engine))
    for ticker, rows in latest.items():
        table = re.search(r'<table class="forecasts".*?</table>', parts[ticker], flags=re.S)
        assert table is not None
        found = re.findall(
            r'<tr data-target-date="([0-9-]+)"><td>[0-9-]+</td><td>(\d+)</td>'
            r'<td class="yhat">([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>',
            table.group(0),
        )
        expected = [
            (
                row["target_date"].isoformat(),
                str(row["horizon"]),
                f"{row['yhat']:,.2f}",
                "—" if row["yhat_lower"] is None else f"{row['yhat_lower']:,.2f}",
                "—" if row["yhat_upper"] is None else f"{row['yhat_upper']:,.2f}",
            )
            for row in rows
        ]
        assert found == expected


def test_closes_and_forecasts_are_drawn_higher_when_higher(loaded: Loaded) -> None:
    engine, latest = loaded
    parts = sections(report(engine, history_days=60))
    for ticker, html in parts.items():
        (svg,) = charts(html, "price")
        history = points(only(svg, "series-history"))
        series = closes(ticker)
        shown = [series[day] for day in DATES[-60:]]
        assert len(history) == 60
        assert [x for x, _ in history] == sorted(x for x, _ in history)
        forecast_line = points(only(svg, "series-forecast"))
        # The forecast line starts at the last close and goes through each forecast.
        assert forecast_line[0] == history[-1]
        values = shown + [row["yhat"] for row in latest[ticker]]
        assert_drawn_in_value_order(values, [y for _, y in history + forecast_line[1:]])


def test_errors_are_drawn_higher_when_larger(loaded: Loaded) -> None:
    engine, _ = loaded
    html = sections(report(engine))["AAA"]
    (svg,) = charts(html, "error")
    series = closes("AAA")
    model, naive = [], []
    for origin in SCORED_ORIGINS:
        target = DATES[DATES.index(origin) + 1]
        step = series[target] - series[origin]
        model.append(abs(0.4 * step + 0.1 * abs(step) - step))
        naive.append(abs(step))
    model_ys = [y for _, y in points(only(svg, "series-model-error"))]
    naive_ys = [y for _, y in points(only(svg, "series-naive-error"))]
    assert len(model_ys) == len(naive_ys) == len(SCORED_ORIGINS)
    assert_drawn_in_value_order(model + naive, model_ys + naive_ys)
    # The model's errors are smaller than the naive forecast's here, and the caption says so.
    assert "beats the naive forecast" in html


def test_intervals_are_drawn_when_present_and_not_when_null(loaded: Loaded) -> None:
    engine, latest = loaded
    parts = sections(report(engine))
    (aaa,) = charts(parts["AAA"], "price")
    band = only(aaa, "band")
    outline = points(band)
    forecast_line = points(only(aaa, "series-forecast"))
    # Upper bounds left to right, then lower bounds back: each upper is drawn above its lower.
    half = len(outline) // 2
    uppers, lowers = outline[:half], outline[half:][::-1]
    assert len(uppers) == len(latest["AAA"]) + 1  # from the last close
    assert uppers[0] == lowers[0] == forecast_line[0]
    for upper, lower, (_, y) in zip(uppers[1:], lowers[1:], forecast_line[1:], strict=True):
        assert upper[1] < y < lower[1]
    assert "Prediction interval" in ET.tostring(aaa, encoding="unicode")

    (bbb,) = charts(parts["BBB"], "price")
    assert not [e for e in bbb.iter() if e.get("class") == "band"]
    assert "Prediction interval" not in ET.tostring(bbb, encoding="unicode")
    assert "no interval" in parts["BBB"]


def test_a_gap_in_the_intervals_splits_the_band(engine: Engine) -> None:
    with engine.begin() as conn:
        latest = insert_report_rows(conn, scored=False)
        target = latest["AAA"][2]["target_date"]
        conn.execute(
            sa.update(forecasts)
            .where(forecasts.c.ticker == "AAA", forecasts.c.target_date == target)
            .values(yhat_lower=None, yhat_upper=None)
        )
    (svg,) = charts(sections(report(engine))["AAA"], "price")
    bands = [e for e in svg.iter() if e.get("class") == "band"]
    # Horizons 1-2 (fanning out from the last close) and 4-5.
    assert [len(points(band)) for band in bands] == [6, 4]


def test_text_from_the_database_is_escaped(engine: Engine) -> None:
    with engine.begin() as conn:
        insert_report_rows(conn, decision="kept v0: <script>alert('x')</script> & MAE 1 < 2")
    document = report(engine)
    assert "<script" not in document
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; MAE 1 &lt; 2" in document


def test_the_document_references_nothing_outside_itself(loaded: Loaded) -> None:
    engine, _ = loaded
    document = report(engine)
    lowered = document.lower()
    for needle in ("http://", "https://", "<script", "<link", "<img", "<iframe", "<object",
                   "src=", "url(", "@import", "@font-face", "xlink:", "xmlns"):  # fmt: skip
        assert needle not in lowered, needle
    ids = set(re.findall(r'\bid="([^"]+)"', document))
    hrefs = re.findall(r'\bhref="([^"]*)"', document)
    assert hrefs and all(href.startswith("#") and href[1:] in ids for href in hrefs)
    assert document.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in document
    document.encode("utf-8")


def test_the_summary_names_the_champion_and_its_mase(loaded: Loaded) -> None:
    engine, _ = loaded
    document = report(engine)
    summary = re.search(r'<section class="card summary">.*?</section>', document, flags=re.S)
    assert summary is not None
    text = summary.group(0)
    assert "<dt>Tickers</dt><dd>2<" in text
    assert "<dt>Champion model</dt><dd>v1<" in text
    assert "0.9312" in text and "beats the naive forecast" in text
    assert "Live one-step MASE v1" in text


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
    (aaa, bbb) = data.tickers
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
    assert sections(document)["AAA"].count("model v1") >= 1


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


def test_without_scored_forecasts_a_sentence_replaces_the_error_chart(engine: Engine) -> None:
    with engine.begin() as conn:
        insert_report_rows(conn, scored=False)
    document = report(engine)
    assert not charts(document, "error")
    assert len(charts(document, "price")) == 2
    assert document.count('class="note no-scores"') == 2
    assert "No one-step forecasts of AAA have been scored yet" in document
    assert 'class="note no-live"' in document


def test_a_ticker_without_history_or_forecasts(loaded: Loaded) -> None:
    engine, _ = loaded
    target = future_days(AS_OF, 1)[0]
    with engine.begin() as conn:
        conn.execute(sa.insert(forecasts), [forecast_row("NEW", AS_OF, target, 1, 12.5)])
        conn.execute(sa.insert(forecasts), [forecast_row("SOLO", AS_OF, target, 1, 3.0, 2.5, 3.5)])
    parts = sections(report(engine, tickers=["NEW", "SOLO", "AAA", "GONE"]))
    assert list(parts) == ["NEW", "SOLO", "AAA", "GONE"]
    assert "No closes of NEW are stored up to" in parts["NEW"]
    (svg,) = charts(parts["NEW"], "price")
    assert not [e for e in svg.iter() if e.get("class") == "series-history"]
    assert len(points(only(svg, "series-forecast"))) == 1
    (solo,) = charts(parts["SOLO"], "price")
    assert len(points(only(solo, "band"))) == 2  # a single forecast: its interval as a line
    assert "No forecasts of GONE as of" in parts["GONE"] and "<svg" not in parts["GONE"]


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


def test_the_same_data_gives_the_same_bytes(loaded: Loaded) -> None:
    engine, _ = loaded
    assert report(engine) == report(engine)


def test_the_report_of_the_real_stages(engine: Engine, home: Path) -> None:
    from pipeline.model.forecast import forecast
    from pipeline.model.train import train
    from pipeline.sequences.build import build_sequences

    prices = synthetic_prices(("AAA", "BBB"), days=80)
    dates = [pd.Timestamp(day).date() for day in sorted(prices[c.TRADE_DATE].unique())]
    with engine.begin() as conn:
        upsert_prices(conn, prices)
        build_sequences(conn, home, dates[59], config=TINY_SEQUENCES)
        version = train(conn, home, dates[59], None, "retrain", TINY_SEQUENCES, TINY_MODEL).version
        for as_of in dates[59:66]:
            forecast(conn, as_of, horizon=3)
    with engine.connect() as conn:
        document = build_report(conn, dates[65], history_days=30)
        rows = read_forecasts(conn, dates[65])
        made = read_forecasts(conn)
    # Scored: the one-step targets up to dates[65] (as of 2024-03-28 and of Good Friday,
    # a synthetic close but no NYSE session, both target 2024-04-01: shown once).
    one_step = made.loc[(made[c.HORIZON] == 1) & (made[c.TARGET_DATE] <= dates[65])]
    scored_dates = sorted({day.isoformat() for day in one_step[c.TARGET_DATE]})
    assert len(scored_dates) == 5
    parts = sections(document)
    assert list(parts) == ["AAA", "BBB"]
    for ticker, html in parts.items():
        assert f"model v{version}" in html
        (price,) = charts(html, "price")
        (error,) = charts(html, "error")
        assert len(points(only(price, "series-history"))) == 30
        assert len(points(only(error, "series-model-error"))) == len(scored_dates)
        tips = [dot.find("title").text for dot in only(error, "dots-model-error")]
        assert [tip[:10] for tip in tips] == scored_dates
        for row in rows.loc[rows[c.TICKER] == ticker].itertuples():
            assert f'<td class="yhat">{row.yhat:,.2f}</td>' in html
            assert f'data-target-date="{row.target_date.isoformat()}"' in html
    assert f"<dt>Champion model</dt><dd>v{version}<" in document


@pytest.mark.parametrize(
    ("low", "high", "zero", "ticks"),
    [
        (0.0, 10.0, False, [0, 2, 4, 6, 8, 10]),
        (97.3, 104.1, False, [96, 98, 100, 102, 104, 106]),
        (0.3, 0.9, True, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (5.0, 5.0, False, [4.94, 4.96, 4.98, 5.0, 5.02, 5.04, 5.06]),
        (1203.0, 1447.0, False, [1200, 1250, 1300, 1350, 1400, 1450]),
    ],
)
def test_nice_ticks_cover_the_data_with_round_steps(
    low: float, high: float, zero: bool, ticks: list[float]
) -> None:
    found, first, last = nice_ticks(low, high, 5, include_zero=zero)
    assert found == pytest.approx(ticks)
    assert first <= low and last >= high


def test_date_ticks_fall_on_round_dates() -> None:
    ticks, label = date_ticks(D(2024, 1, 3), D(2024, 6, 28))
    assert ticks == [D(2024, month, 1) for month in range(2, 7)]
    assert label(ticks[0]) == "Feb 2024"
    ticks, label = date_ticks(D(2024, 3, 6), D(2024, 4, 19))
    assert ticks[0] == D(2024, 3, 11) and all(day.weekday() == 0 for day in ticks)
    assert label(ticks[0]) == "Mar 11"
    ticks, _ = date_ticks(D(2024, 3, 6), D(2024, 3, 8))
    assert ticks == [D(2024, 3, 6), D(2024, 3, 7), D(2024, 3, 8)]
    ticks, label = date_ticks(D(2013, 1, 2), D(2018, 4, 11))
    assert len(ticks) <= 8 and label(ticks[0]) == "2014"


def test_scales_and_numbers() -> None:
    scale = LinearScale((10.0, 20.0), (300.0, 100.0))
    assert (scale(10.0), scale(15.0), scale(20.0)) == (300.0, 200.0, 100.0)
    assert format_number(1234.5) == "1,234.50"
    assert format_number(0.001234) == "0.00123"
    assert format_number(102.5, step=2.5) == "102.5"
    assert format_number(100.0, step=20.0) == "100"


def test_the_fan_draws_the_middle_half_inside_the_interval(engine: Engine) -> None:
    with engine.begin() as conn:
        latest = insert_report_rows(conn, scored=False)
        for row in latest["AAA"]:
            conn.execute(
                sa.update(forecasts)
                .where(forecasts.c.ticker == "AAA", forecasts.c.target_date == row["target_date"])
                .values(
                    yhat_q25=(row["yhat"] + row["yhat_lower"]) / 2,
                    yhat_q75=(row["yhat"] + row["yhat_upper"]) / 2,
                )
            )
    html = sections(report(engine))["AAA"]
    (svg,) = charts(html, "price")
    outer, inner = [e for e in svg.iter() if e.get("class") == "band"]
    forecast_line = points(only(svg, "series-forecast"))

    def bounds(band: ET.Element) -> tuple[list[float], list[float]]:
        outline = points(band)
        half = len(outline) // 2
        return [y for _, y in outline[:half]], [y for _, y in outline[half:][::-1]]

    (outer_up, outer_low), (inner_up, inner_low) = bounds(outer), bounds(inner)
    # Drawn downwards in SVG: the outer upper bound highest, then the inner, the forecast...
    for step in range(1, len(forecast_line)):
        y = forecast_line[step][1]
        assert outer_up[step] < inner_up[step] < y < inner_low[step] < outer_low[step]
    assert "Middle half of outcomes" in ET.tostring(svg, encoding="unicode")
    assert "middle half" in html  # the tooltips give the band's bounds
