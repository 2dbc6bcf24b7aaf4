"""A backtest's result: every forecast point, and the metrics, tables and records made of them.

**Metrics** per model, ticker, fold and horizon step (``pipeline.scoring.metrics``):
MAE, RMSE, MAPE, MASE (against the naive forecast on the same points and
step, so naive scores exactly 1.00); for models with prediction intervals
(at ``interval_level``), their coverage, their coverage on the ticker's most
volatile fifth of test days (``coverage_high_vol``, the days
``pipeline.evaluate.plan.high_volatility_days`` flags), their mean width
relative to the last close, the interval score and MSIS (scaled by the mean
absolute daily change of the fold's training span); for models with quantiles
(``QUANTILE_LEVELS``), the scaled pinball loss of each and their mean.

``BacktestResult.metrics`` is what the backtest stage stores;
``table`` is what ``pricecast backtest`` prints, ``records`` what it writes
with ``--json``, and ``write_points`` every point, to recompute any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import columns as c
from pipeline.evaluate.volatility import QUANTILE_LEVELS
from pipeline.files import write_atomically
from pipeline.scoring.metrics import quantile_name, summarise

#: The columns of the quantiles in the points (``q05`` .. ``q95``).
QUANTILE_COLUMNS = tuple(quantile_name(level) for level in QUANTILE_LEVELS)


@dataclass
class BacktestResult:
    """Every forecast point of a backtest and its metrics.

    ``points`` has one row per model, ticker, fold, origin and step: ``model``,
    ``ticker``, ``fold``, ``horizon``, ``origin_date``, ``target_date``, ``y``,
    ``yhat``, ``naive`` (the last close), ``lower`` and ``upper`` (the interval at
    ``level``; NaN for a model without one), ``scale`` (the predicted standard
    deviation of the log return to the target, NaN where none), the quantiles
    ``q05`` .. ``q95``, ``score_scale`` (the fold's mean absolute daily change,
    MSIS's denominator) and ``high_vol``.
    """

    points: pd.DataFrame
    defaults: dict[str, bool]
    level: float = 0.9

    def metrics(self, by_fold: bool = True) -> pd.DataFrame:
        """Metrics per model, ticker, (fold,) and horizon step."""
        keys = ["model", c.TICKER, "fold", c.HORIZON] if by_fold else ["model", c.TICKER, c.HORIZON]
        rows = []
        for key, group in self.points.groupby(keys, sort=True):
            has_interval = group["lower"].notna().all()
            quantiles = {
                level: group[name]
                for level, name in zip(QUANTILE_LEVELS, QUANTILE_COLUMNS, strict=True)
                if name in group and group[name].notna().all()
            }
            metrics = summarise(
                group["y"],
                group["yhat"],
                group["naive"],
                group["lower"] if has_interval else None,
                group["upper"] if has_interval else None,
                level=self.level,
                scale=group["score_scale"],
                quantiles=quantiles or None,
                high_vol=group["high_vol"],
            )
            rows.append({**dict(zip(keys, key, strict=True)), **metrics})
        frame = pd.DataFrame(rows)
        frame["is_default"] = [bool(self.defaults.get(name)) for name in frame["model"]]
        return frame

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per model, ticker and horizon step (folds pooled)."""
        records = []
        for row in self.metrics(by_fold=False).to_dict("records"):
            record: dict[str, Any] = {
                "model": row["model"],
                "ticker": row[c.TICKER],
                "horizon": int(row[c.HORIZON]),
            }
            for name in RECORD_METRICS:
                record[name] = _plain(row.get(name))
            for name in QUANTILE_COLUMNS:
                record[f"spl_{name}"] = _plain(row.get(f"spl_{name}"))
            record["n"] = int(row["n"])
            record["n_high_vol"] = None if pd.isna(row["n_high_vol"]) else int(row["n_high_vol"])
            record["default"] = bool(row["is_default"])
            records.append(record)
        return records

    def export_points(self) -> pd.DataFrame:
        """Every forecast point with what its metrics need, for ``write_points``."""
        points = self.points.copy()
        points.insert(1, "is_default", [bool(self.defaults.get(m)) for m in points["model"]])
        points["level"] = self.level
        return points

    def write_points(self, path: Path) -> Path:
        """Write every forecast point to ``path``: Parquet for ``.parquet``, else CSV.

        One row per model, ticker, fold, origin and step, with ``model``,
        ``is_default``, ``ticker``, ``fold``, ``horizon``, ``origin_date``,
        ``target_date``, ``y``, ``yhat``, ``naive`` (the last close), ``lower`` and
        ``upper`` (the interval at ``level``, empty for models without one), ``scale``,
        the quantiles ``q05`` .. ``q95``, ``score_scale`` (MSIS's denominator) and
        ``high_vol``: enough to recompute every metric of the backtest.
        """
        points = self.export_points()
        if path.suffix.lower() in (".parquet", ".pq"):
            write_atomically(path, lambda to: points.to_parquet(to, index=False), "backtest")
        else:
            write_atomically(
                path, lambda to: points.to_csv(to, index=False, float_format="%.10g"), "backtest"
            )
        return path

    def table(self) -> pd.DataFrame:
        """Per model and horizon step, across tickers: mean and worst MASE, and the means of
        coverage (overall and on the volatile days), relative width, MSIS and scaled
        pinball loss (NaN for models without intervals or quantiles)."""
        pooled = self.metrics(by_fold=False)
        grouped = pooled.groupby(["model", c.HORIZON])
        table = pd.DataFrame(
            {
                "mase_mean": grouped["mase"].mean(),
                "mase_max": grouped["mase"].max(),
                "worst_ticker": grouped.apply(
                    lambda g: g.loc[g["mase"].idxmax(), c.TICKER], include_groups=False
                ),
                "coverage": grouped["coverage"].mean(),
                "coverage_min": grouped["coverage"].min(),
                "coverage_max": grouped["coverage"].max(),
                "coverage_high_vol": grouped["coverage_high_vol"].mean(),
                "width": grouped["width"].mean(),
                "msis": grouped["msis"].mean(),
                "spl": grouped["spl"].mean(),
                "points": grouped["n"].sum(),
            }
        ).reset_index()
        table["default"] = [bool(self.defaults.get(name)) for name in table["model"]]
        return table.sort_values([c.HORIZON, "mase_mean"]).reset_index(drop=True)


#: The metrics of a JSON record, besides the per-quantile losses.
RECORD_METRICS = (
    "mase",
    "mae",
    "rmse",
    "mape",
    "coverage",
    "coverage_high_vol",
    "width",
    "interval_score",
    "msis",
    "spl",
)


def _plain(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
