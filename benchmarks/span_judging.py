"""The validation-span work of an incremental day, at many tickers, without a database.

Run ``python -m benchmarks.span_judging [--tickers 1000] [--years 3] [--json PATH]``;
see ``benchmarks/README.md`` (``span_judging``) for what is measured.

Synthetic closes (``end_to_end.synthetic_closes``) become each ticker's windows
in memory (``windows_frame``, as the sequences stage builds them), then one
global distributional network with random weights (``NumpyLSTM``, the default
architecture: ``LSTM(32)``, two features, two outputs) goes through what
training does after its last epoch and what judging the champion does:
the long-run volatility, the damping, the one-step errors with their MSIS, and
the interval calibration over the horizon. The weights are random: the figures
are times, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.end_to_end import synthetic_closes
from pipeline.model.calibration import calibrate_intervals
from pipeline.model.numpy_lstm import NumpyLSTM
from pipeline.model.predictor import Predictor
from pipeline.model.span import span_series
from pipeline.model.store import GLOBAL
from pipeline.model.validation import evaluate_span, fit_damping, with_long_run_volatility
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.files import windows_frame
from pipeline.sequences.scaling import get_scaler
from pipeline.sequences.windows import TickerWindows

DEFAULT_JSON = Path(__file__).parent / "results" / "span_judging.json"


def random_network(units: int = 32, seed: int = 0) -> NumpyLSTM:
    """A distributional ``LSTM(units)`` then ``Dense(2)`` with small random weights."""
    rng = np.random.default_rng(seed)
    return NumpyLSTM(
        kernel=rng.normal(0, 0.3, (2, 4 * units)).astype(np.float32),
        recurrent_kernel=rng.normal(0, 0.3, (units, 4 * units)).astype(np.float32),
        bias=np.zeros(4 * units, np.float32),
        dense_kernel=rng.normal(0, 0.1, (units, 2)).astype(np.float32),
        dense_bias=np.zeros(2, np.float32),
    )


def measure(tickers: int, years: int, seed: int) -> dict[str, Any]:
    config = SequenceConfig()
    closes = synthetic_closes(tickers, years * 252, seed)
    dates = np.array(closes.index, dtype="datetime64[D]")
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(name: str, call: Any) -> Any:
        start, start_cpu = time.perf_counter(), time.process_time()
        value = call()
        timings[name] = time.perf_counter() - start
        cpu[name] = time.process_time() - start_cpu
        return value

    built = timed(
        "windows (sequences stage, in memory)",
        lambda: {
            name: windows_frame(name, dates, closes[name].to_numpy(), config)
            for name in closes.columns
        },
    )
    series = timed(
        "span_series",
        lambda: {
            name: span_series(TickerWindows.from_frame(frame, config.window, name))
            for name, (frame, _) in built.items()
        },
    )
    params = timed(
        "with_long_run_volatility",
        lambda: with_long_run_volatility(
            {name: description["scaler_params"] for name, (_, description) in built.items()},
            series,
        ),
    )
    predictor = Predictor(
        window=config.window,
        scaler=get_scaler(config.scaling),
        params=params,
        networks={GLOBAL: random_network()},
    )
    predictor.damping = timed("fit_damping", lambda: fit_damping(predictor, series))
    errors = timed(
        "evaluate_span (judging, MSIS)", lambda: evaluate_span(predictor, series, 0.9, "network")
    )
    intervals = timed(
        "calibrate_intervals (horizon 5)",
        lambda: calibrate_intervals(predictor, series, 5, 0.9, "network"),
    )
    points = sum(int(row["n"]) for row in errors.per_ticker.values())
    return {
        "tickers": tickers,
        "years": years,
        "validation_points": points,
        "seconds": timings,
        "cpu_seconds": cpu,
        "check": {
            "mase": errors.mase,
            "msis": errors.msis,
            "mean_damping": float(np.mean(list(predictor.damping.values()))),
            "calibrated": sum(value is not None for value in intervals.values()),
        },
        "machine": platform.node(),
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['tickers']} tickers x {result['years']} years, "
        f"{result['validation_points']:,} validation points",
        "",
        f"{'step':<40} | seconds | CPU seconds",
        f"{'-' * 40}-+---------+------------",
    ]
    lines += [
        f"{name:<40} | {value:7.2f} | {result['cpu_seconds'][name]:11.2f}"
        for name, value in result["seconds"].items()
    ]
    lines += ["", "check: " + json.dumps(result["check"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=1000)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    result = measure(args.tickers, args.years, args.seed)
    print(report(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
