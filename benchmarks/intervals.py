"""Interval quality of the LSTM variants against the volatility baselines, on real series.

Run ``python -m benchmarks.intervals [--variants default,ewma_intervals,static_intervals]
[--horizons 1,5] [--json PATH]``. Two data sets, each backtested on its own (5 expanding
folds over the last 20 % of every series, every model refitted per fold on its training
span):

* ``stock_prices``: the 20 stocks of ``../shared/data/stock_prices.csv`` (1989-2018);
* ``arch``: three series the project never trained on, shipped with the ``arch``
  package: the S&P 500 and NASDAQ Composite closes (1999-2018) and the WTI crude oil
  spot price (1986-2019, with its gaps).

For each data set and horizon it prints, per model, the mean and worst MASE over the
series, the mean coverage of the 90 % intervals (and the lowest and highest series',
and on each series' most volatile fifth of test days), the mean relative width, MSIS
and scaled pinball loss, and writes them all to JSON (``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

DEFAULT_JSON = Path(__file__).parent / "results" / "intervals.json"
STOCK_PRICES = Path(__file__).resolve().parents[2] / "shared" / "data" / "stock_prices.csv"
COLUMNS = (
    "model",
    "mase_mean",
    "mase_max",
    "coverage",
    "coverage_min",
    "coverage_max",
    "coverage_high_vol",
    "width",
    "msis",
    "spl",
)


def arch_series(folder: Path) -> Path:
    """The ``arch`` package's S&P 500, NASDAQ and WTI closes as one long CSV file."""
    from arch.data import nasdaq, sp500, wti

    frames = []
    for ticker, frame, column in (
        ("SP500", sp500.load(), "Close"),
        ("NASDAQ", nasdaq.load(), "Close"),
        ("WTI", wti.load(), "DCOILWTICO"),
    ):
        closes = pd.to_numeric(frame[column], errors="coerce").dropna()
        closes = closes[closes > 0]
        frames.append(
            pd.DataFrame(
                {"ticker": ticker, "date": closes.index.strftime("%Y-%m-%d"), "close": closes}
            )
        )
    path = folder / "arch_series.csv"
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    return path


def run(data: Path, variants: list[str], horizons: list[int], work: Path) -> dict[str, Any]:
    """Ingest ``data`` into a new SQLite database and backtest every variant per horizon."""
    from pipeline.db.migrate import open_database
    from pipeline.db.prices import latest_trade_date
    from pipeline.evaluate.plan import BacktestConfig
    from pipeline.evaluate.stage import run_backtest
    from pipeline.evaluate.variants import variants as build_variants
    from pipeline.ingest.load import ingest_paths
    from pipeline.settings import Settings

    settings = Settings(database_url=f"sqlite:///{work / 'prices.db'}", home=work)
    engine = open_database(settings.resolved_database_url)
    with engine.begin() as conn:
        report = ingest_paths(conn, [data], run_id="bench")
    with engine.connect() as conn:
        as_of = latest_trade_date(conn)
    print(
        f"{data.name}: {report.rows_loaded} closes loaded, {report.rows_quarantined} "
        f"quarantined, tickers {', '.join(report.tickers)}; as of {as_of}"
    )
    chosen = build_variants(variants, settings.sequence_config(), settings.training_config())
    out: dict[str, Any] = {}
    for horizon in horizons:
        config = BacktestConfig(folds=5, horizon=horizon, test_fraction=0.2)
        started = time.perf_counter()
        with engine.begin() as conn:
            result = run_backtest(conn, as_of, chosen, config).result
        seconds = time.perf_counter() - started
        table = result.table()
        table = table[table["horizon"] == horizon].sort_values("msis", na_position="last")
        out[f"h{horizon}"] = {
            "seconds": round(seconds, 1),
            "points": int(table["points"].iloc[0]),
            "models": [
                {key: _plain(row[key]) for key in COLUMNS} for row in table.to_dict("records")
            ],
            "records": result.records(),
        }
    engine.dispose()
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return value
    return None if pd.isna(value) else round(float(value), 4)


def print_table(name: str, horizon: str, part: dict[str, Any]) -> None:
    print(f"\n{name}, {horizon}: {part['points']} points per model, {part['seconds']} s")
    header = (
        f"{'model':<18} {'MASE':>7} {'max':>7} {'cov':>6} {'min':>6} {'max':>6} "
        f"{'vol':>6} {'width':>7} {'MSIS':>7} {'SPL':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in part["models"]:

        def cell(key: str, width: int, digits: int, row: dict[str, Any] = row) -> str:
            value = row[key]
            return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

        print(
            f"{row['model']:<18} {cell('mase_mean', 7, 4)} {cell('mase_max', 7, 4)} "
            f"{cell('coverage', 6, 3)} {cell('coverage_min', 6, 3)} "
            f"{cell('coverage_max', 6, 3)} {cell('coverage_high_vol', 6, 3)} "
            f"{cell('width', 7, 4)} {cell('msis', 7, 3)} {cell('spl', 7, 4)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="default,ewma_intervals,static_intervals")
    parser.add_argument("--horizons", default="1,5")
    parser.add_argument("--datasets", default="stock_prices,arch")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    variants = [name for name in args.variants.split(",") if name]
    horizons = [int(h) for h in args.horizons.split(",") if h]
    results: dict[str, Any] = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "variants": variants,
    }
    with tempfile.TemporaryDirectory(prefix="pricecast-intervals-") as tmp:
        folder = Path(tmp)
        files = {"stock_prices": STOCK_PRICES, "arch": None}
        for name in args.datasets.split(","):
            data = files[name] or arch_series(folder)
            work = folder / name
            work.mkdir()
            results[name] = run(data, variants, horizons, work)
            for horizon, part in results[name].items():
                print_table(name, horizon, part)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
