"""Parameters of the network and its training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: ``laplace`` makes the network predict a distribution (``pipeline.model.network``).
LOSSES = ("mse", "mae", "huber", "laplace")
#: How prediction intervals are calibrated (``pipeline.model.validation``).
INTERVAL_METHODS = ("network", "ewma", "static")
SCOPES = ("global", "per_ticker")


@dataclass(frozen=True)
class ModelConfig:
    """The network (``LSTM(units)`` then ``Dense(2)``, a location and a scale, or
    ``Dense(1)`` under a point loss; adam) and its training.

    The tutorial's configuration is ``units=50, epochs=20, batch_size=32,
    loss="mse", patience=0, scope="per_ticker", damping=False`` with min-max
    scaling (the ``tutorial`` variant in ``pipeline.evaluate.variants``); the
    defaults here are the ones backtests chose (docs/forecasts.md, "Choosing the defaults").

    Attributes:
        units: LSTM units.
        epochs: the most epochs of a full retrain.
        batch_size: samples per gradient step.
        learning_rate: adam's learning rate.
        loss: ``laplace`` (the default): the network predicts the location and the
            scale of the next scaled log return, fitted by the Laplace negative
            log-likelihood, and reads the recent volatility as a second input; its
            location is a median, as under ``mae``. ``mse``, ``mae`` or ``huber``:
            the network predicts a point only.
        patience: stop a retrain after this many epochs without a better
            validation loss, keeping the best weights; 0 trains every epoch.
        scope: ``global`` (one network for every ticker) or ``per_ticker``.
        damping: fit, per ticker on the validation span, how far each
            prediction may move from the last close (0: the naive forecast,
            1: the network's own prediction); off uses the network as is.
        finetune_epochs: epochs when fine-tuning on new windows only.
        seed: seeds Python, NumPy and TensorFlow before every training.
        interval_level: coverage the prediction intervals aim for.
        intervals: ``network`` (the default, needs the ``laplace`` loss): the width
            follows the spread the network predicts for each forecast, scaled by
            multipliers calibrated on the validation span (normalised conformal
            scores); ``ewma``: the same with each ticker's EWMA volatility of daily
            log returns as the scale (any loss); ``static``: one conformal width per
            ticker and step, the same in calm and turbulent weeks (kept as variants).
        horizon: steps the intervals are calibrated for on validation data.
        retrain_after_days: in mode ``auto``, retrain rather than fine-tune once
            the lineage's last full retrain is this many days behind the as-of date.
        drift_tolerance: in mode ``auto``, retrain when the champion's error on
            the newest validation span exceeds its error when it was promoted
            by more than this fraction.
    """

    units: int = 32
    epochs: int = 20
    batch_size: int = 1024
    learning_rate: float = 0.003
    loss: str = "laplace"
    patience: int = 3
    scope: str = "global"
    damping: bool = True
    finetune_epochs: int = 3
    seed: int = 42
    interval_level: float = 0.9
    intervals: str = "network"
    horizon: int = 5
    retrain_after_days: int = 30
    drift_tolerance: float = 0.2

    def __post_init__(self) -> None:
        for name in ("units", "epochs", "batch_size", "finetune_epochs", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.patience < 0:
            raise ValueError(f"patience must be 0 or more, got {self.patience}")
        if self.intervals not in INTERVAL_METHODS:
            raise ValueError(f"intervals must be one of {INTERVAL_METHODS}, got {self.intervals!r}")
        if self.intervals == "network" and self.loss != "laplace":
            raise ValueError(
                f"intervals 'network' need the network's own scale, which loss {self.loss!r} "
                "does not give: use loss 'laplace', or intervals 'ewma' or 'static'"
            )
        if not 0.0 < self.interval_level < 1.0:
            raise ValueError(f"interval_level must be in (0, 1), got {self.interval_level}")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dictionary."""
        return asdict(self)

    def training_params(self) -> dict[str, Any]:
        """The parameters that shape the weights (policy settings left out)."""
        params = self.to_dict()
        for key in ("retrain_after_days", "drift_tolerance"):
            params.pop(key)
        return params
