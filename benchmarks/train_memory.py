"""Resident memory while one process trains many networks, with and without worker processes.

Run ``python -m benchmarks.train_memory [--models 100] [--epochs 2] [--json PATH]``;
see ``benchmarks/README.md`` for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.model.config import ModelConfig
from pipeline.model.fit import (
    NETWORKS_PER_WORKER,
    NetworkJob,
    NetworkOutcome,
    TrainingData,
    fit_model,
    network_jobs,
)
from pipeline.model.network import Workers, resident_memory_mb
from pipeline.model.span import span_series
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.files import ticker_windows

DEFAULT_JSON = Path(__file__).parent / "results" / "train_memory.json"
#: The options each part's process gets.
PASSED_ON = (
    "models",
    "epochs",
    "windows",
    "units",
    "batch_size",
    "learning_rate",
    "workers",
    "per_worker",
    "seed",
)
#: The issue's target: peak memory grows by less than this from the 10th to the last model.
TARGET = 0.10
PARTS = ("workers", "in_process", "naive")
LABELS = {
    "workers": "pipeline: worker processes",
    "in_process": "pipeline steps in one process",
    "naive": "naive Keras loop",
    "trainings": "successive train() calls",
}


def synthetic_data(
    tickers: int, windows: int, sequence: SequenceConfig, seed: int
) -> tuple[TrainingData, dict[str, Any]]:
    """``tickers`` tickers of GBM closes, ``windows`` windows each, windowed and scaled as the
    sequences stage does (``ticker_windows``); with each ticker's validation span."""
    rng = np.random.default_rng(seed)
    days = windows + sequence.window
    dates = [day.date() for day in pd.bdate_range("2010-01-04", periods=days)]
    windows, params, series = {}, {}, {}
    for index in range(tickers):
        ticker = f"T{index:03d}"
        steps = rng.normal(0.0003, 0.02, size=days)
        closes = (20.0 + rng.uniform(0, 200)) * np.exp(np.cumsum(steps))
        windows[ticker], description = ticker_windows(dates, closes, sequence)
        params[ticker] = description["scaler_params"]
        series[ticker] = span_series(windows[ticker])
    data = TrainingData(windows, params, sequence.window, sequence.scaling)
    return data, series


def part_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        units=args.units,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=0,
        scope="per_ticker",
        seed=args.seed,
    )


# ------------------------------------------------------------------ parts (one process each)


def run_pipeline_part(args: argparse.Namespace, workers: int, record: Callable) -> None:
    """The per-ticker training's own steps (``network_jobs``, ``fit_model``): every network
    seeded (``clear_session``), built, fitted, judged on its validation span, saved, released.
    ``workers`` processes fit them (each replaced after ``--per-worker``), or this one."""
    data, series = synthetic_data(args.models, args.windows, SequenceConfig(), args.seed)
    config = part_config(args)
    # Each network's file comes back as bytes in its outcome, and is dropped with it.
    jobs = network_jobs(data, series, config, config.epochs, None, "bench")
    started = time.perf_counter()

    def done(job: NetworkJob, outcome: NetworkOutcome) -> None:
        parent = resident_memory_mb()
        worker = outcome.rss_mb if workers else None
        record(
            parent_mb=parent,
            worker_mb=worker,
            worker_pid=outcome.pid if workers else None,
            rss_mb=parent + (worker or 0.0),
            seconds=time.perf_counter() - started,
        )

    with Workers(workers, args.per_worker) as pool:
        fit_model(jobs, pool, done)


def run_naive_part(args: argparse.Namespace, record: Callable) -> None:
    """The loop of the Keras examples: build, fit, evaluate and predict one network after
    another in one process, nothing kept, no ``clear_session``."""
    from pipeline.model.network import as_inputs, build_model, import_keras

    import_keras()
    data, _ = synthetic_data(args.models, args.windows, SequenceConfig(), args.seed)
    config = part_config(args)
    started = time.perf_counter()
    for index, ticker in enumerate(data.tickers):
        windows = data.windows[ticker]
        x, y = data.arrays(ticker, windows.train_rows())
        xv, yv = data.arrays(ticker, windows.validation_rows())
        network = build_model(data.window, config.units, config.learning_rate, config.loss, index)
        network.fit(
            as_inputs(x),
            y.astype(np.float32),
            epochs=config.epochs,
            batch_size=config.batch_size,
            validation_data=(as_inputs(xv), yv.astype(np.float32)),
            shuffle=True,
            verbose=0,
        )
        network.evaluate(as_inputs(xv), yv.astype(np.float32), batch_size=4096, verbose=0)
        network.predict_on_batch(as_inputs(np.resize(xv, (256, data.window))))
        del network
        rss = resident_memory_mb()
        record(parent_mb=rss, rss_mb=rss, seconds=time.perf_counter() - started)


def run_part(args: argparse.Namespace) -> None:
    """One part, in this process; its samples go to ``--out`` as JSON."""
    samples: list[dict[str, Any]] = []
    start_mb = resident_memory_mb()

    def record(**sample: Any) -> None:
        sample["model"] = len(samples) + 1
        samples.append(sample)
        if sample["model"] % 10 == 0 or sample["model"] == 1:
            print(
                f"[{time.strftime('%H:%M:%S')}] {args.part}: model {sample['model']}, "
                f"{sample['rss_mb']:,.0f} MiB, {sample['seconds']:.0f} s",
                flush=True,
            )

    if args.part == "workers":
        run_pipeline_part(args, args.workers, record)
    elif args.part == "in_process":
        run_pipeline_part(args, 0, record)
    elif args.part == "naive":
        run_naive_part(args, record)
    else:
        raise SystemExit(f"unknown part {args.part!r}; choose from {', '.join(PARTS)}")
    args.out.write_text(json.dumps({"start_mb": start_mb, "samples": samples}))


# ------------------------------------------------------------------------------- report


def growth(samples: list[dict[str, Any]], first: int) -> dict[str, Any]:
    """How the running peak of ``rss_mb`` grew from model ``first`` to the last model."""
    rss = np.array([sample["rss_mb"] for sample in samples])
    peak = np.maximum.accumulate(rss)
    if len(rss) < first:
        return {"from_model": first, "to_model": len(rss), "ratio": None, "meets_target": None}
    ratio = float(peak[-1] / peak[first - 1] - 1)
    return {
        "from_model": first,
        "to_model": len(rss),
        "peak_from_mb": float(peak[first - 1]),
        "peak_to_mb": float(peak[-1]),
        "ratio": ratio,
        "meets_target": ratio < TARGET,
        "mb_per_model": float((rss[-1] - rss[first - 1]) / max(1, len(rss) - first)),
    }


def format_table(parts: dict[str, dict[str, Any]], models: int, first: int) -> str:
    names = list(parts)
    header = ["model", *[LABELS[name] for name in names]]
    lines = [header]
    shown = sorted({1, first, *range(10, models + 1, 10), models})
    for model in shown:
        row = [str(model)]
        for name in names:
            samples = parts[name]["samples"]
            row.append(f"{samples[model - 1]['rss_mb']:,.0f}" if model <= len(samples) else "")
        lines.append(row)
    row = [f"growth {first}th-{models}th"]
    for name in names:
        ratio = parts[name]["growth"]["ratio"]
        row.append("" if ratio is None else f"{ratio:+.1%}")
    lines.append(row)
    row = ["MiB per model"]
    for name in names:
        per_model = parts[name]["growth"].get("mb_per_model")
        row.append("" if per_model is None else f"{per_model:+.1f}")
    lines.append(row)
    row = ["seconds"]
    for name in names:
        row.append(f"{parts[name]['seconds']:.0f}")
    lines.append(row)
    widths = [max(len(line[index]) for line in lines) for index in range(len(header))]
    rendered = []
    for number, line in enumerate(lines):
        cells = [
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        rendered.append(" | ".join(cells).rstrip())
        if number == 0:
            rendered.append("-+-".join("-" * width for width in widths))
    return "\n".join(rendered)


def spawn_part(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Run one part in a fresh interpreter, so that no part inherits another's memory."""
    out = folder / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.train_memory",
        "--part",
        name,
        "--out",
        str(out),
        *(f"--{key.replace('_', '-')}={getattr(args, key)}" for key in PASSED_ON),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    result = json.loads(out.read_text())
    result["seconds"] = time.perf_counter() - started
    return result


def machine_info(load_before: tuple[float, float, float]) -> dict[str, object]:
    import keras
    import tensorflow as tf

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", type=int, default=100, help="networks per part (100)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per network (2)")
    parser.add_argument("--windows", type=int, default=2500, help="windows per ticker (2500)")
    defaults = ModelConfig()  # the pipeline's own sizes
    parser.add_argument(
        "--units", type=int, default=defaults.units, help=f"LSTM units ({defaults.units})"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"batch size ({defaults.batch_size})",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.learning_rate,
        help=f"adam's ({defaults.learning_rate})",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    parser.add_argument(
        "--per-worker",
        type=int,
        default=NETWORKS_PER_WORKER,
        help=f"networks a worker fits before it is replaced ({NETWORKS_PER_WORKER})",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic closes (42)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated ({','.join(PARTS)})"
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        default=len(PARTS),
        help=f"parts run at a time, each in its own process ({len(PARTS)})",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"({DEFAULT_JSON})")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part:
        run_part(args)
        return 0
    names = [name.strip() for name in args.parts.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    load_before = os.getloadavg()
    first = min(10, args.models)
    print(
        f"{args.models} networks per part: LSTM({args.units}), {args.windows} windows of "
        f"{SequenceConfig().window} closes per ticker, {args.epochs} epochs; parts "
        f"{', '.join(names)}, {args.concurrent} at a time",
        flush=True,
    )
    parts: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="train_memory_") as folder,
        futures.ThreadPoolExecutor(max_workers=max(1, args.concurrent)) as threads,
    ):
        running = {name: threads.submit(spawn_part, name, args, Path(folder)) for name in names}
        for name, future in running.items():
            parts[name] = future.result()
    for result in parts.values():
        result["growth"] = growth(result["samples"], first)
    print()
    print(format_table(parts, args.models, first))
    for name, result in parts.items():
        verdict = result["growth"]["meets_target"]
        if verdict is not None:
            print(
                f"{LABELS[name]}: peak {result['growth']['peak_from_mb']:,.0f} MiB after model "
                f"{first}, {result['growth']['peak_to_mb']:,.0f} MiB after model {args.models}: "
                f"{'meets' if verdict else 'misses'} the target (< {TARGET:.0%})"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "train_memory",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "parameters": {key: getattr(args, key) for key in PASSED_ON},
        "model_config": dataclasses.asdict(part_config(args)),
        "target": f"running peak of rss_mb grows by less than {TARGET:.0%} from model {first} "
        f"to model {args.models}",
        "parts": {name: {"label": LABELS[name], **result} for name, result in parts.items()},
        "machine": machine_info(load_before),
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
