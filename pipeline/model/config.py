"""Parameters of the network and its training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """The seed's network (``LSTM(units)`` then ``Dense(1)``, adam, mse) and its training.

    Attributes:
        units: LSTM units (the seed uses 50).
        epochs: epochs of a full retrain (the seed uses 20).
        batch_size: samples per gradient step (the seed uses 32).
        learning_rate: adam's learning rate (Keras' default, as in the seed).
        finetune_epochs: epochs when fine-tuning on new windows only.
        seed: seeds Python, NumPy and TensorFlow before every training.
        retrain_after_days: in mode ``auto``, retrain rather than fine-tune once
            the lineage's last full retrain is this many days behind the as-of date.
    """

    units: int = 50
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 0.001
    finetune_epochs: int = 3
    seed: int = 42
    retrain_after_days: int = 30

    def __post_init__(self) -> None:
        for name in ("units", "epochs", "batch_size", "finetune_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def architecture(self) -> dict[str, Any]:
        """The parameters that define the network's shape; a change forces a retrain."""
        return {"units": self.units}

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dictionary."""
        return asdict(self)
