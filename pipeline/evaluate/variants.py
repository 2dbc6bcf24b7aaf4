"""Named model configurations a backtest compares.

``default`` is whatever the settings say; the others change one thing, except
``tutorial``, the configuration of the tutorial this project grew from (one
min-max scaled model per ticker, ``LSTM(50)``, 20 epochs of batch 32, mse, no
early stopping, no damping; the tutorial had no intervals, so it gets static
conformal ones), kept so its results stay reproducible. ``ewma_intervals`` and
``static_intervals`` are the point network (``mae``) with the interval methods
that came before the distributional network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.model.config import ModelConfig
from pipeline.sequences.config import SequenceConfig


@dataclass(frozen=True)
class Variant:
    """One LSTM configuration in a backtest."""

    name: str
    sequence: SequenceConfig
    model: ModelConfig
    is_default: bool = False


def _tutorial(sequence: SequenceConfig, model: ModelConfig) -> Variant:
    return Variant(
        "tutorial",
        sequence.replace(window=10, scaling="minmax"),
        model.replace(
            units=50,
            epochs=20,
            batch_size=32,
            learning_rate=0.001,
            loss="mse",
            patience=0,
            scope="per_ticker",
            damping=False,
            intervals="static",
        ),
    )


def _changed(name: str, sequence: dict | None = None, model: dict | None = None):  # noqa: ANN202
    def make(base_sequence: SequenceConfig, base_model: ModelConfig) -> Variant:
        return Variant(
            name,
            base_sequence.replace(**(sequence or {})),
            base_model.replace(**(model or {})),
        )

    return make


VARIANTS: dict[str, Callable[[SequenceConfig, ModelConfig], Variant]] = {
    "default": lambda s, m: Variant("default", s, m, is_default=True),
    "tutorial": _tutorial,
    "minmax": _changed("minmax", {"scaling": "minmax"}),
    "log_ratio": _changed("log_ratio", {"scaling": "log_ratio"}),
    "per_ticker": _changed("per_ticker", model={"scope": "per_ticker"}),
    "global": _changed("global", model={"scope": "global"}),
    "mse": _changed("mse", model={"loss": "mse", "intervals": "ewma"}),
    "mae": _changed("mae", model={"loss": "mae", "intervals": "ewma"}),
    "window5": _changed("window5", {"window": 5}),
    "window20": _changed("window20", {"window": 20}),
    "units16": _changed("units16", model={"units": 16}),
    "units100": _changed("units100", model={"units": 100}),
    "batch32": _changed("batch32", model={"batch_size": 32}),
    "batch256": _changed("batch256", model={"batch_size": 256}),
    "no_early_stopping": _changed("no_early_stopping", model={"patience": 0}),
    "no_damping": _changed("no_damping", model={"damping": False}),
    "ewma_intervals": _changed("ewma_intervals", model={"loss": "mae", "intervals": "ewma"}),
    "static_intervals": _changed("static_intervals", model={"loss": "mae", "intervals": "static"}),
    "units50_batch256": _changed(
        "units50_batch256", model={"units": 50, "batch_size": 256, "learning_rate": 0.001}
    ),
}


def variants(names: list[str], sequence: SequenceConfig, model: ModelConfig) -> list[Variant]:
    """The named variants built on the given defaults.

    Raises:
        ValueError: a name is unknown.
    """
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(
            f"unknown model variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}"
        )
    return [VARIANTS[name](sequence, model) for name in names]


def describe_variants(variants: Sequence[Variant]) -> list[dict[str, Any]]:
    """JSON-ready parameters of each variant, for the runs table."""
    return [
        {
            "name": variant.name,
            "default": variant.is_default,
            "sequence": variant.sequence.to_dict(),
            "model": variant.model.to_dict(),
        }
        for variant in variants
    ]
