"""The daily run's Markdown summary."""

from __future__ import annotations

import math

from pipeline.results import RunSummary
from pipeline.summary import render_markdown

SUMMARY = RunSummary.model_validate(
    {
        "database": "sqlite:////tmp/x.db",
        "home": "/tmp/home",
        "as_of": "2024-03-22",
        "stale": {"BBB": "2024-03-19", "CCC": None},
        "ingest": {
            "run_id": "run",
            "inputs": 2,
            "inputs_loaded": 1,
            "inputs_unchanged": 0,
            "inputs_rejected": 1,
            "rows_read": 10,
            "rows_loaded": 8,
            "rows_quarantined": 2,
            "rows_deferred": 0,
            "flags": 0,
            "tickers": ["AAA"],
            "errors": ["/d/bad.csv, line 1: the input is an HTML page, not CSV"],
        },
        "sequences": {
            "as_of": "2024-03-22",
            "tickers": ["AAA"],
            "train_windows": 40,
            "validation_windows": 8,
            "skipped": {},
        },
        "model": {
            "model_version": 5,
            "champion_version": 4,
            "action": "finetune",
            "reason": "3 training windows are new since champion v4",
            "created": True,
            "promoted": False,
            "decision": "not promoted: MAE 1.2 ... worse than champion v4's 1.1",
            "data_through": "2024-03-22",
            "tickers": ["AAA"],
            "champion_val_mase": 1.0123,
        },
        "forecast": {
            "as_of": "2024-03-22",
            "model_version": 4,
            "horizon": 5,
            "tickers": ["AAA"],
            "forecasts_written": 5,
            "stale": {},
        },
        "backtest": {
            "run_id": "0123456789abcdef",
            "as_of": "2024-03-01",
            "models": [
                {"model": "naive", "default": False, "mase": 1.0, "coverage": None},
                {"model": "default", "default": True, "mase": 1.003, "coverage": 0.9},
            ],
        },
        "retention": {
            "as_of": "2024-03-22",
            "model_versions": [],
            "reports": [],
            "bytes_freed": 0,
            "dry_run": False,
        },
        "report": "/tmp/home/reports/report-2024-03-22.html",
        "unchanged": False,
    }
)


def test_the_summary_says_what_was_stale_rejected_decided_and_how_good_it_is() -> None:
    text = render_markdown(SUMMARY)
    assert text.startswith("# pricecast as of 2024-03-22\n")
    assert "- **Stale, not forecast**: BBB (newest 2024-03-19), CCC (no prices)" in text
    assert "- Rejected: /d/bad.csv, line 1: the input is an HTML page, not CSV" in text
    assert "- Rows: 10 read, 8 loaded, 2 quarantined" in text
    assert "- Decision: **finetune**, 3 training windows are new since champion v4" in text
    assert "- New version v5: not promoted" in text
    assert "champion v4; validation MASE 1.0123 (loses to the naive forecast)" in text
    assert "| default | 1.0030 | 0.900 |" in text
    assert "| naive | 1.0000 | n/a |" in text
    assert "5 forecasts for 1 tickers, 5 trading days after 2024-03-22." in text


def test_the_report_artifact_tables_each_ticker_and_links_the_html_when_served() -> None:
    from flows.artifacts import report_link
    from pipeline.summary import render_forecast_report

    rows = [
        {
            "ticker": "BBB",
            "target_date": "2024-03-25",
            "horizon": 1,
            "yhat": 20.0,
            "yhat_lower": 19.0,
            "yhat_upper": 21.0,
        },
        {
            "ticker": "BBB",
            "target_date": "2024-03-26",
            "horizon": 2,
            "yhat": 20.5,
            "yhat_lower": 18.5,
            "yhat_upper": 22.5,
        },
        {
            "ticker": "AAA",
            "target_date": "2024-03-25",
            "horizon": 1,
            "yhat": 10.0,
            "yhat_lower": None,
            "yhat_upper": None,
        },
    ]
    path = "/srv/home/reports/report-2024-03-22.html"
    link = report_link(path, "https://reports.example.com/pricecast/")
    assert link == "https://reports.example.com/pricecast/report-2024-03-22.html"
    text = render_forecast_report("2024-03-22", 3, rows, path, link)
    lines = text.splitlines()
    assert lines[0] == "# Forecasts as of 2024-03-22 (model v3)"
    # Sorted by ticker; the width is (upper - lower) / forecast; no interval shows "-".
    assert lines[4] == "| AAA | 2024-03-25 | 10.00 | - | - | 2024-03-25 | 10.00 | - |"
    assert lines[5] == (
        "| BBB | 2024-03-25 | 20.00 | 19.00 to 21.00 | 10.0% | 2024-03-26 | 20.50 | "
        "18.50 to 22.50 |"
    )
    assert f"[the HTML report]({link})" in text
    unserved = render_forecast_report("2024-03-22", 3, rows, path, report_link(path, None))
    assert f"`{path}` on the machine that ran the flow" in unserved
    assert "PRICECAST_REPORT_BASE_URL" in unserved


def _forecast(ticker: str, horizon: int, yhat: float, half: float | None) -> dict:
    return {
        "ticker": ticker,
        "target_date": f"2024-03-{24 + horizon}",
        "horizon": horizon,
        "yhat": yhat,
        "yhat_lower": None if half is None else yhat - half,
        "yhat_upper": None if half is None else yhat + half,
    }


def test_artifacts_show_every_ticker_up_to_the_limit_then_the_widest_intervals() -> None:
    from pipeline.summary import artifact_rows, artifact_scope, render_forecast_report

    # Next-session widths relative to the forecast: AAA 10%, BBB 4%, CCC 20%, DDD 4%
    # (ties BBB by ticker), EEE none, FFF none as read from the database (NaN); the
    # second step is wider everywhere.
    unbounded = {**_forecast("FFF", 1, 30.0, None), "yhat_lower": math.nan, "yhat_upper": math.nan}
    rows = [
        _forecast("AAA", 2, 100.0, 30.0),
        _forecast("AAA", 1, 100.0, 5.0),
        _forecast("BBB", 1, 50.0, 1.0),
        _forecast("BBB", 2, 50.0, 20.0),
        _forecast("FFF", 2, 30.0, 9.0),
        unbounded,
        _forecast("CCC", 1, 10.0, 1.0),
        _forecast("DDD", 1, 25.0, 0.5),
        _forecast("EEE", 1, 40.0, None),
    ]
    everything, total = artifact_rows(rows, limit=6)
    assert everything == rows and total == 6
    assert artifact_scope(6, total) == ""

    for limit, expected in [
        (1, {"CCC"}),
        (2, {"CCC", "AAA"}),
        (3, {"CCC", "AAA", "BBB"}),
        (4, {"CCC", "AAA", "BBB", "DDD"}),
        (5, {"CCC", "AAA", "BBB", "DDD", "EEE"}),
    ]:
        shown, total = artifact_rows(rows, limit=limit)
        assert total == 6
        # Every step of the chosen tickers, in the order given.
        assert shown == [row for row in rows if row["ticker"] in expected], limit
    shown, _ = artifact_rows(rows, limit=2)
    assert artifact_scope(2, 6) == (
        "2 of 6 tickers, those with the widest next-session interval; "
        "every forecast is in the database's `forecasts` table"
    )
    text = render_forecast_report("2024-03-22", 3, shown, None, None, total_tickers=6)
    assert text.splitlines()[2] == (
        "2 of 6 tickers, those with the widest next-session interval; "
        "every forecast is in the database's `forecasts` table."
    )
    # A NaN interval reads as none, as ``None`` does.
    assert "| FFF | 2024-03-25 | 30.00 | - | - | 2024-03-26 | 30.00 | 21.00 to 39.00 |" in (
        render_forecast_report("2024-03-22", 3, [unbounded, rows[4]], None, None)
    )
    assert [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")][1:] == [
        "| AAA",
        "| CCC",
    ]
    # All of them shown: no such line.
    assert "tickers, those with" not in render_forecast_report(
        "2024-03-22", 3, rows, None, None, total_tickers=6
    )


def test_the_artifact_limit_holds_at_scale() -> None:
    from pipeline.summary import ARTIFACT_TICKERS, artifact_rows

    rows = [
        _forecast(f"T{index:04d}", horizon, 100.0, 1.0 + index % 997)
        for index in range(5000)
        for horizon in (1, 2, 3, 4, 5)
    ]
    shown, total = artifact_rows(rows)
    assert total == 5000
    assert len({row["ticker"] for row in shown}) == ARTIFACT_TICKERS
    assert len(shown) == 5 * ARTIFACT_TICKERS
    # The widest: half-widths 997 - 1 down, i.e. index % 997 from 996 down.
    assert min(row["yhat_upper"] - row["yhat_lower"] for row in shown) >= 2 * (1.0 + 996 - 19)
