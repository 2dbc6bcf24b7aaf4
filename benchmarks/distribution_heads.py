"""Which scale should the intervals follow? The choice behind the distributional network.

Run ``python -m benchmarks.distribution_heads [--data stock_prices|arch] [--window 10]``.
One split per series (train on the first 72 %, calibrate and stop early on the next 8 %,
test on the last 20 %), 90 % intervals around the naive forecast, normalised conformal
multipliers per series, MSIS and coverage on the test span. The scales compared:

* ``ewma_default``: the EWMA scale of ``pipeline.model.scale`` (lambda 0.88 mixed with the
  long-run volatility);
* ``<loss>_window``: an ``LSTM(32)`` with a location-and-scale head trained on the scaled
  log-ratio windows alone, by the Gaussian or the Laplace negative log-likelihood;
* ``<loss>_window+vol``: the same with ``log(ewma / long_run)`` as a second input (what
  ``pipeline.model.predictor`` feeds the default network).

Measured (2-core machine, 2026-12-01), MSIS (mean coverage; lowest series'):

| scale | stock_prices, window 10 | stock_prices, window 20 | arch, window 10 |
|---|---|---|---|
| ewma_default | 14.111 (0.903; 0.800) | 14.111 (0.903; 0.800) | 8.207 (0.902; 0.896) |
| gaussian_window | 14.076 (0.910; 0.858) | 13.990 (0.910; 0.852) | 8.154 (0.907; 0.902) |
| gaussian_window+vol | 14.004 (0.901; 0.811) | 14.004 (0.905; 0.833) | 7.999 (0.904; 0.888) |
| laplace_window | 14.024 (0.912; 0.860) | 14.049 (0.911; 0.852) | 8.142 (0.910; 0.907) |
| laplace_window+vol | 14.001 (0.903; 0.806) | 14.002 (0.904; 0.833) | 8.008 (0.899; 0.882) |

The network's own scale beats the EWMA on both data sets, by 2.5 % on the ``arch`` series
with the volatility input; Gaussian and Laplace tie, and Laplace was kept because its
location is the median the ``mae`` point network already predicted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_JSON = Path(__file__).parent / "results" / "distribution_heads.json"
STOCK_PRICES = Path(__file__).resolve().parents[2] / "shared" / "data" / "stock_prices.csv"
LEVEL = 0.9


def load(data: str) -> dict[str, np.ndarray]:
    """Each series' positive closes, oldest first."""
    if data == "stock_prices":
        wide = pd.read_csv(STOCK_PRICES, index_col=0)
        return {ticker: wide[ticker].dropna().to_numpy() for ticker in wide.columns}
    from arch.data import nasdaq, sp500, wti

    out = {}
    for ticker, frame, column in (
        ("SP500", sp500.load(), "Close"),
        ("NASDAQ", nasdaq.load(), "Close"),
        ("WTI", wti.load(), "DCOILWTICO"),
    ):
        closes = pd.to_numeric(frame[column], errors="coerce").dropna()
        out[ticker] = closes[closes > 0].to_numpy()
    return out


def split(series: dict[str, np.ndarray], window: int) -> tuple[dict, dict]:
    """Per part (train, val, test), one entry per series: inputs, targets and scales."""
    from pipeline.model.scale import ewma_volatility, long_run_volatility, predicted_volatility

    parts: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    meta = {}
    for ticker, closes in series.items():
        n = len(closes)
        test_start = int(n * 0.8)
        val_start = int(test_start * 0.9)
        scale = float(np.std(np.diff(np.log(closes[:test_start]))))
        long_run = long_run_volatility(closes[:test_start])
        meta[ticker] = float(np.mean(np.abs(np.diff(closes[:test_start]))))
        ends = np.arange(max(window - 1, 100), n - 1)
        windows = np.stack([closes[e - window + 1 : e + 1] for e in ends])
        x = np.log(windows / windows[:, -1:]) / scale
        ewma = ewma_volatility(closes, ends)
        feature = np.repeat(np.log(ewma / long_run)[:, None, None], window, axis=1)
        both = np.concatenate([x[..., None], feature], axis=2)
        y = np.log(closes[ends + 1] / closes[ends]) / scale
        masks = {
            "train": ends + 1 < val_start,
            "val": (ends + 1 >= val_start) & (ends + 1 < test_start),
            "test": ends + 1 >= test_start,
        }
        for part, mask in masks.items():
            parts[part].append(
                {
                    "ticker": ticker,
                    "window": x[mask][..., None],
                    "window+vol": both[mask],
                    "y": y[mask],
                    "last": closes[ends][mask],
                    "target": closes[ends + 1][mask],
                    "ewma": predicted_volatility(closes, ends, long_run)[mask],
                    "scale": scale,
                }
            )
    return parts, meta


def score(parts: dict, meta: dict, sigma_of) -> np.ndarray:  # noqa: ANN001
    """Per series: MSIS and coverage of conformal intervals normalised by ``sigma_of``."""
    out = []
    for val, test in zip(parts["val"], parts["test"], strict=True):
        scores = np.abs(val["target"] - val["last"]) / (val["last"] * sigma_of(val))
        k = len(scores)
        q = np.quantile(scores, min(1.0, np.ceil((k + 1) * LEVEL) / k), method="higher")
        half = q * sigma_of(test) * test["last"]
        lower, upper, y = test["last"] - half, test["last"] + half, test["target"]
        alpha = 1 - LEVEL
        penalty = 2 / alpha * ((lower - y) * (y < lower) + (y - upper) * (y > upper))
        msis = np.mean(upper - lower + penalty) / meta[test["ticker"]]
        out.append((msis, np.mean((y >= lower) & (y <= upper))))
    return np.array(out)


def fit_head(parts: dict, loss: str, key: str):  # noqa: ANN201
    """An LSTM(32) with a location-and-scale head; returns the scale of each entry."""
    from pipeline.model.network import import_keras, seed_everything

    keras = import_keras()
    ops = keras.ops

    def nll(y_true, y_pred):  # noqa: ANN001, ANN202
        target, location = ops.reshape(y_true, (-1,)), y_pred[:, 0]
        b = ops.softplus(y_pred[:, 1]) + 1e-3
        if loss == "gaussian":
            return ops.log(b) + 0.5 * ops.square((target - location) / b)
        return ops.log(b) + ops.abs(target - location) / b

    seed_everything(42)
    x = np.concatenate([p[key] for p in parts["train"]]).astype("float32")
    y = np.concatenate([p["y"] for p in parts["train"]]).astype("float32")
    xv = np.concatenate([p[key] for p in parts["val"]]).astype("float32")
    yv = np.concatenate([p["y"] for p in parts["val"]]).astype("float32")
    model = keras.Sequential(
        [keras.Input(shape=x.shape[1:]), keras.layers.LSTM(32), keras.layers.Dense(2)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss=nll)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    model.fit(
        x, y, batch_size=1024, epochs=20, validation_data=(xv, yv), verbose=0, callbacks=[stop]
    )

    def sigma(entry: dict) -> np.ndarray:
        out = model.predict(entry[key].astype("float32"), batch_size=8192, verbose=0)
        return (np.logaddexp(0.0, out[:, 1]) + 1e-3) * entry["scale"]

    return sigma


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("stock_prices", "arch"), default="stock_prices")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    parts, meta = split(load(args.data), args.window)
    rows = [("ewma_default", score(parts, meta, lambda entry: entry["ewma"]), 0.0)]
    for loss in ("gaussian", "laplace"):
        for key in ("window", "window+vol"):
            started = time.perf_counter()
            sigma = fit_head(parts, loss, key)
            rows.append((f"{loss}_{key}", score(parts, meta, sigma), time.perf_counter() - started))
    print(f"{args.data}, window {args.window}: MSIS (coverage; lowest series')")
    for name, result, seconds in rows:
        print(
            f"{name:22s} {result[:, 0].mean():7.3f} ({result[:, 1].mean():.3f}; "
            f"{result[:, 1].min():.3f})  {seconds:5.0f} s"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "data": args.data,
        "window": args.window,
        "machine": platform.platform(),
        "scales": {
            name: {
                "msis": float(result[:, 0].mean()),
                "coverage": float(result[:, 1].mean()),
                "coverage_min": float(result[:, 1].min()),
                "seconds": seconds,
            }
            for name, result, seconds in rows
        },
    }
    args.json.write_text(json.dumps(record, indent=2))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
