"""Training time of one universe as 1 network or as ticker groups, in 1 or 2 processes.

Run ``python -m benchmarks.train_groups [--tickers 200] [--groups 1 4] [--workers 1 2]
[--json PATH]``; see ``benchmarks/README.md`` for what is measured and how to read it.

Each cell fits the networks of one training (``fit.network_jobs`` for a global model of
``--tickers`` synthetic tickers split into ``ticker_groups`` groups, each network fitted,
damped, judged and calibrated by ``fit.fit_network``, its file's bytes returned) in
``network.Workers`` of that many processes: the train stage's fit step as ``train()``
runs it, worker start-up (a TensorFlow import per process) included.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.train_memory import synthetic_data
from pipeline.model.config import ModelConfig
from pipeline.model.fit import NETWORKS_PER_WORKER, fit_model, network_jobs
from pipeline.model.network import Workers
from pipeline.model.validation import with_long_run_volatility
from pipeline.sequences.config import SequenceConfig

DEFAULT_JSON = Path(__file__).parent / "results" / "train_groups.json"


def measure(
    args: argparse.Namespace, groups: int, workers: int, data: Any, series: Any
) -> dict[str, Any]:
    """One cell: the wall time of fitting every network of the grouping in ``workers``."""
    config = ModelConfig(
        units=args.units,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=0,
        ticker_groups=groups,
        seed=args.seed,
    )
    jobs = network_jobs(data, series, config, config.epochs, None, "bench")
    started = time.perf_counter()
    with Workers(workers, NETWORKS_PER_WORKER) as pool:
        model = fit_model(jobs, pool)
    seconds = time.perf_counter() - started
    return {
        "groups": groups,
        "workers": workers,
        "networks": len(jobs),
        "seconds": round(seconds, 1),
        "fit_seconds": round(model.fitted.seconds, 1),
        "train_samples": model.fitted.train_samples,
        "val_mase": round(float(model.errors.mase), 4),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training time for 1 network vs ticker groups, in 1 or more processes."
    )
    parser.add_argument("--tickers", type=int, default=200, help="synthetic tickers (200)")
    parser.add_argument("--windows", type=int, default=500, help="windows per ticker (500)")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4], help="(1 4)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="(1 2)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per network (2)")
    parser.add_argument("--units", type=int, default=32, help="LSTM units (32, the default)")
    parser.add_argument("--batch-size", type=int, default=1024, help="(1024, the default)")
    parser.add_argument("--seed", type=int, default=42, help="(42)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"({DEFAULT_JSON})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sequence = SequenceConfig()
    data, series = synthetic_data(args.tickers, args.windows, sequence, args.seed)
    # The default network: distributional (laplace), reading each ticker's volatility.
    params = with_long_run_volatility(data.params, series)
    data = dataclasses.replace(data, params=params, distributional=True)
    cells = [
        measure(args, groups, workers, data, series)
        for groups in args.groups
        for workers in args.workers
    ]
    header = "| groups | workers | networks | wall s | fit s (sum) | train samples | MASE |"
    print(header)
    print("|---|---|---|---|---|---|---|")
    for cell in cells:
        print(
            f"| {cell['groups']} | {cell['workers']} | {cell['networks']} | {cell['seconds']} "
            f"| {cell['fit_seconds']} | {cell['train_samples']} | {cell['val_mase']} |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "options": {key: value for key, value in vars(args).items() if key != "json"},
                "window": sequence.window,
                "cells": cells,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
