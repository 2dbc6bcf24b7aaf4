"""Size and render time of the HTML report, from a handful of tickers to a thousand.

Run ``python -m benchmarks.report_size [--tickers 20,1000] [--repeat 3]``. For each
size, a SQLite database in a temporary folder gets what a daily pipeline would have
left in it: ``--days`` business days of closes per ticker (geometric Brownian motion,
fixed seed; every 50th ticker misses the last close, so it is stale), one model,
one-step forecasts from each of the last 30 sessions (so they are scored), and five
forecasts as of the last day with their interval and fan quantiles. Then
``write_report(conn, path, as_of)`` with its defaults, as ``pricecast report`` and
the daily run call it; the clock covers the whole call (reading the database,
drawing, writing the file). Each figure is the median of ``--repeat`` calls.

JSON in ``benchmarks/results/report_size.json``. Target (issue 14): the page for 1,000
tickers under 2 MB.

``charts`` counts the page's ``<svg>`` elements. The script calls ``write_report``
only as it has always been called, so it measures an older checkout too; run it from
another folder (``-m`` puts the current folder first on the path):
``cd /tmp && PYTHONPATH=<old tree>:<this tree> python -m benchmarks.report_size``.

Measured (2-core machine shared with other engineers' test runs, load average 1.2
to 1.3, 2026-12-01; Python 3.11, SQLite 3.40, matplotlib 3.11), median of 3; before:
the report as it was (a hand-written SVG price chart and error chart per ticker),
after: Jinja2 templates, an overview row per ticker, matplotlib charts of 24:

```
code                          | tickers | charts |       bytes | seconds
------------------------------+---------+--------+-------------+--------
before (hand-written SVG)     |      20 |     40 |     374,949 |    0.06
before (hand-written SVG)     |   1,000 |  2,000 |  18,523,647 |    3.33
after (Jinja2 + matplotlib)   |      20 |     20 |     431,287 |    2.29
after (Jinja2 + matplotlib)   |   1,000 |     24 |     782,525 |    4.07
```
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

DEFAULT_JSON = Path(__file__).parent / "results" / "report_size.json"
HORIZON = 5
SCORED_ORIGINS = 30


def synthetic_database(url: str, count: int, days: int, seed: int) -> dt.date:
    """Fill the database at ``url`` with ``count`` tickers' closes, one model and its
    forecasts; returns the as-of date of the newest forecasts."""
    from pipeline import columns as c
    from pipeline.db.migrate import open_database
    from pipeline.db.prices import upsert_prices
    from pipeline.db.schema import forecasts, models

    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2024-01-01", periods=days + HORIZON)
    history, future = dates[:days], [day.date() for day in dates[days:]]
    as_of = history[-1].date()
    tickers = [f"T{index:04d}" for index in range(count)]
    frames, rows = [], []
    for index, ticker in enumerate(tickers):
        volatility = rng.uniform(0.01, 0.03)
        closes = rng.uniform(10, 500) * np.exp(np.cumsum(rng.normal(0.0003, volatility, days)))
        shown = history if index % 50 else history[:-1]  # every 50th ticker is stale
        frames.append(
            pd.DataFrame({c.TICKER: ticker, c.TRADE_DATE: shown, c.CLOSE: closes[: len(shown)]})
        )
        last = float(closes[len(shown) - 1])
        for step in range(days - SCORED_ORIGINS - 1, days - 1):  # scored one-step forecasts
            yhat = float(closes[step] * (1 + rng.normal(0, volatility / 2)))
            rows.append(
                forecast_row(
                    ticker, history[step].date(), history[step + 1].date(), 1, yhat, volatility
                )
            )
        drift = rng.normal(0, 0.004)
        for horizon, target in enumerate(future, start=1):
            yhat = last * math.exp(drift * horizon)
            rows.append(
                forecast_row(ticker, as_of, target, horizon, yhat, volatility * math.sqrt(horizon))
            )
    prices = pd.concat(frames, ignore_index=True)
    for field in c.OPTIONAL_PRICE_FIELDS:
        prices[field] = np.nan
    prices[c.SOURCE] = "bench"
    engine = open_database(url)
    with engine.begin() as conn:
        upsert_prices(conn, prices.loc[:, list(c.PRICE_COLUMNS)])
        conn.execute(
            sa.insert(models),
            [
                {
                    "version": 1,
                    "fingerprint": "bench",
                    "mode": "retrain",
                    "parent_version": None,
                    "trained_at": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
                    "data_through": history[-40].date(),
                    "tickers": tickers,
                    "hyperparameters": {},
                    "val_loss": 0.1,
                    "val_mase": 0.98,
                    "promoted": True,
                    "decision": "promoted: first model",
                    "train_samples": 1,
                    "validation_samples": 1,
                    "epochs_run": 1,
                    "file_path": "/dev/null",
                }
            ],
        )
        conn.execute(sa.insert(forecasts), rows)
    engine.dispose()
    return as_of


def forecast_row(
    ticker: str, as_of: dt.date, target: dt.date, horizon: int, yhat: float, scale: float
) -> dict:
    """A ``forecasts`` row with a 90 % interval and the fan's quantiles of a log-normal."""

    def quantile(z: float) -> float:
        return yhat * math.exp(z * scale)

    return {
        "ticker": ticker,
        "as_of_date": as_of,
        "target_date": target,
        "model_version": 1,
        "horizon": horizon,
        "yhat": yhat,
        "yhat_lower": quantile(-1.645),
        "yhat_upper": quantile(1.645),
        "scale": scale,
        "yhat_q05": quantile(-1.645),
        "yhat_q25": quantile(-0.674),
        "yhat_q75": quantile(0.674),
        "yhat_q95": quantile(1.645),
    }


def measure(count: int, days: int, repeat: int, seed: int, folder: Path) -> dict:
    """Write the report of ``count`` synthetic tickers ``repeat`` times; its figures."""
    from pipeline.db.engine import connect
    from pipeline.report import write_report

    url = f"sqlite:///{folder / f'report-{count}.db'}"
    as_of = synthetic_database(url, count, days, seed)
    engine = connect(url)
    path = folder / f"report-{count}.html"
    seconds = []
    try:
        for _ in range(repeat):
            with engine.connect() as conn:
                started = time.perf_counter()
                write_report(conn, path, as_of)
                seconds.append(time.perf_counter() - started)
    finally:
        engine.dispose()
    page = path.read_text(encoding="utf-8")
    return {
        "tickers": count,
        "bytes": path.stat().st_size,
        "charts": len(re.findall(r"<svg\b", page)),
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", default="20,1000", help="sizes, separated by commas")
    parser.add_argument("--days", type=int, default=130, help="closes per ticker")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--label", default="", help="what code was measured, for the table")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    sizes = [int(size) for size in args.tickers.split(",") if size.strip()]
    import pipeline.report

    label = args.label or str(Path(pipeline.report.__file__).parent)
    with tempfile.TemporaryDirectory() as folder:
        results = [measure(size, args.days, args.repeat, args.seed, Path(folder)) for size in sizes]
    print(f"{'code':<30}| {'tickers':>7} | {'charts':>6} | {'bytes':>11} | seconds")
    print(f"{'-' * 30}+{'-' * 9}+{'-' * 8}+{'-' * 13}+--------")
    for row in results:
        print(
            f"{label[:30]:<30}| {row['tickers']:>7,} | {row['charts']:>6,} | "
            f"{row['bytes']:>11,} | {row['seconds']:>7.2f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "code": label,
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "days": args.days,
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
