"""XLA for the default network: one forward pass three ways, and a fit two ways.

Run ``python -m benchmarks.xla [--rows 262144] [--samples 262144] [--repeat 3] [--json PATH]``.

**Forward pass.**
Training predicts with the Keras network it has just fitted: the damping, the
champion gate's one-step errors and the interval calibration's path steps, five
passes over every validation window (1.26 million at 5,000 tickers). This times
one pass of the default architecture (``LSTM(32)`` over 10 steps, two features,
``Dense(2)``), untrained, over ``--rows`` random windows:

* **keras**: ``predict_on_batch`` in chunks of 8,192 rows (``predictor._predict``);
* **xla**: the same network compiled with XLA, blocks of 4,096 rows
  (``predictor._predict_compiled``, used from ``predictor.XLA_MIN_ROWS`` rows), with
  its one compilation timed apart;
* **numpy**: the NumPy forward pass the main process predicts with
  (``numpy_lstm.NumpyLSTM``).

Wall and CPU seconds per row, best of ``--repeat``: CPU time is the one to compare
when other jobs share the machine (two cores). The largest difference from the
NumPy pass is printed: they must agree to float32 rounding.

**Fit.** Two epochs of the default network (batch 1,024, TensorFlow's ops made
deterministic by ``seed_everything``, as training does) on ``--samples`` random
windows with early stopping's per-epoch validation on as many, as Keras compiles
it and compiled with XLA (``network.compile_with_xla``, used from
``network.XLA_MIN_SAMPLE_EPOCHS``): CPU seconds of the epochs, of the first small
fit that compiles the steps, and whether two compiled fits give the same weights.

JSON in ``benchmarks/results/xla.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model import predictor as predictor_module
from pipeline.model.network import build_model, compile_with_xla, seed_everything
from pipeline.model.numpy_lstm import NumpyLSTM

DEFAULT_JSON = Path(__file__).parent / "results" / "xla.json"


def _timed(run: Callable[[], np.ndarray], repeat: int) -> tuple[float, float, np.ndarray]:
    """Best wall and CPU seconds of ``repeat`` runs, and the last outputs."""
    wall, cpu, out = float("inf"), float("inf"), np.empty(0)
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        out = run()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu, out


def measure(rows: int, repeat: int, seed: int = 0) -> dict[str, Any]:
    network = build_model(10, 32, 1e-3, "laplace", seed)
    numpy_network = NumpyLSTM.from_keras(network)
    windows = np.random.default_rng(seed).normal(0.0, 1.0, (rows, 10, 2)).astype(np.float32)
    chunk = predictor_module._CHUNK

    def keras() -> np.ndarray:
        return np.concatenate(
            [
                predictor_module._predict(network, windows[start : start + chunk])
                for start in range(0, rows, chunk)
            ]
        )

    started = time.perf_counter()
    predictor_module._predict_compiled(network, windows[: predictor_module._COMPILED_ROWS])
    compile_seconds = time.perf_counter() - started
    runs = {
        "keras": keras,
        "xla": lambda: predictor_module._predict_compiled(network, windows),
        "numpy": lambda: numpy_network.predict(windows),
    }
    result: dict[str, Any] = {
        "rows": rows,
        "repeat": repeat,
        "xla_compile_seconds": compile_seconds,
        "machine": platform.machine(),
        "ways": {},
    }
    outputs = {}
    for name, run in runs.items():
        wall, cpu, outputs[name] = _timed(run, repeat)
        result["ways"][name] = {
            "wall_us_per_row": wall / rows * 1e6,
            "cpu_us_per_row": cpu / rows * 1e6,
        }
    result["max_abs_difference_from_numpy"] = {
        name: float(np.max(np.abs(outputs[name] - outputs["numpy"]))) for name in ("keras", "xla")
    }
    return result


def _fit(samples: int, xla: bool, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (2 * samples, 10, 2)).astype(np.float32)
    y = (0.3 * x[:, -1, 0] + rng.normal(0.0, 0.1, 2 * samples)).astype(np.float32)
    seed_everything(seed)
    network = build_model(10, 32, 1e-3, "laplace", seed)
    compiled = compile_with_xla(network) if xla else False
    started = time.process_time()
    network.fit(
        x[:2048],
        y[:2048],
        batch_size=1024,
        epochs=1,
        verbose=0,
        validation_data=(x[-2048:], y[-2048:]),
    )
    first = time.process_time() - started
    started_wall, started = time.perf_counter(), time.process_time()
    network.fit(
        x[:samples],
        y[:samples],
        batch_size=1024,
        epochs=2,
        verbose=0,
        shuffle=True,
        validation_data=(x[samples:], y[samples:]),
    )
    return {
        "xla": compiled,
        "first_fit_cpu_seconds": first,
        "epochs_cpu_seconds": time.process_time() - started,
        "epochs_wall_seconds": time.perf_counter() - started_wall,
        "weights": np.concatenate([w.reshape(-1) for w in network.get_weights()]),
    }


def measure_fit(samples: int) -> dict[str, Any]:
    runs = {
        "keras": _fit(samples, False),
        "xla": _fit(samples, True),
        "xla again": _fit(samples, True),
    }
    result: dict[str, Any] = {"samples": samples, "epochs": 2, "ways": {}}
    for name, run in runs.items():
        result["ways"][name] = {key: value for key, value in run.items() if key != "weights"}
    result["xla_repeats_to_the_bit"] = bool(
        np.array_equal(runs["xla"]["weights"], runs["xla again"]["weights"])
    )
    result["max_abs_weight_difference_xla_keras"] = float(
        np.max(np.abs(runs["xla"]["weights"] - runs["keras"]["weights"]))
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=262_144)
    parser.add_argument("--samples", type=int, default=262_144)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    result = measure(args.rows, args.repeat)
    print(f"{args.rows} windows of 10 x 2, LSTM(32) then Dense(2); best of {args.repeat}")
    print(f"{'way':<6} | wall us/row | CPU us/row | max |diff| from numpy")
    for name, way in result["ways"].items():
        difference = result["max_abs_difference_from_numpy"].get(name)
        shown = "" if difference is None else f"{difference:.2e}"
        print(
            f"{name:<6} | {way['wall_us_per_row']:11.2f} | {way['cpu_us_per_row']:10.2f} | {shown}"
        )
    print(f"XLA compilation (first block included): {result['xla_compile_seconds']:.2f} s")
    fit = measure_fit(args.samples)
    result["fit"] = fit
    print(f"\nfit: {args.samples} samples, 2 epochs, validated each epoch on as many")
    print(f"{'way':<9} | epochs CPU s | epochs wall s | first fit CPU s (compiles)")
    for name, way in fit["ways"].items():
        print(
            f"{name:<9} | {way['epochs_cpu_seconds']:12.2f} | {way['epochs_wall_seconds']:13.2f}"
            f" | {way['first_fit_cpu_seconds']:.2f}"
        )
    print(
        f"XLA fits repeat to the bit: {fit['xla_repeats_to_the_bit']}; largest weight "
        f"difference from Keras' own: {fit['max_abs_weight_difference_xla_keras']:.2e}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
