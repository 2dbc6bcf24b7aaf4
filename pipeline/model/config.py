"""Parameters of the network and its training, declared once.

``ModelFields`` declares each parameter with its type, default, bounds and
meaning; ``ModelConfig`` is the frozen value the train stage takes, and
``pipeline.settings.Settings`` inherits the same fields, read from
``PRICECAST_<NAME>``, so a setting and the stage's parameter cannot disagree.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: ``laplace`` makes the network predict a distribution (``pipeline.model.network``).
Loss = Literal["mse", "mae", "huber", "laplace"]
#: How prediction intervals are calibrated (``pipeline.model.validation``).
IntervalMethod = Literal["network", "ewma", "static"]
Scope = Literal["global", "per_ticker"]
LOSSES = get_args(Loss)
INTERVAL_METHODS = get_args(IntervalMethod)
SCOPES = get_args(Scope)


class ModelFields(BaseModel):
    """The network and its training (described under ``ModelConfig``)."""

    units: int = Field(default=32, ge=1, description="LSTM units.")
    epochs: int = Field(default=20, ge=1, description="The most epochs of a full retrain.")
    batch_size: int = Field(default=1024, ge=1, description="Samples per gradient step.")
    learning_rate: float = Field(default=0.003, gt=0.0, description="adam's learning rate.")
    loss: Loss = Field(
        default="laplace",
        description="laplace: the network predicts a distribution (location and scale); "
        "mse, mae or huber: a point only.",
    )
    patience: int = Field(default=3, ge=0, description="Early-stopping patience; 0 is off.")
    scope: Scope = Field(
        default="global", description="global (one network) or per_ticker (one per ticker)."
    )
    ticker_groups: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="With scope global: split the tickers into this many groups, one network "
        "each, a ticker's group fixed by a hash of its symbol (pipeline.model.groups); "
        "1 is one network for every ticker.",
    )
    damping: bool = Field(
        default=True, description="Fit per-ticker shrinkage toward the last close on validation."
    )
    finetune_epochs: int = Field(default=3, ge=1, description="Epochs of a fine-tune.")
    seed: int = Field(default=42, description="Seeds every training.")
    interval_level: float = Field(
        default=0.9, gt=0.0, lt=1.0, description="Coverage the prediction intervals aim for."
    )
    intervals: IntervalMethod = Field(
        default="network",
        description="Prediction intervals: network (widths follow the spread the network "
        "predicts; needs loss laplace), ewma (widths follow the EWMA volatility) or static "
        "(one width per ticker and step); all calibrated on the validation span.",
    )
    horizon: int = Field(
        default=5,
        ge=1,
        le=260,
        description="Trading days to forecast (and steps the intervals are calibrated for).",
    )
    retrain_after_days: int = Field(
        default=30,
        ge=0,
        description="In mode auto, retrain once the newest full retrain's data is this old.",
    )
    drift_tolerance: float = Field(
        default=0.2, ge=0.0, description="In mode auto, retrain when recent MASE grows this much."
    )

    @model_validator(mode="after")
    def _intervals_need_a_scale(self) -> ModelFields:
        if self.intervals == "network" and self.loss != "laplace":
            raise ValueError(
                f"PRICECAST_INTERVALS=network needs the network's own scale, which "
                f"PRICECAST_LOSS={self.loss} does not give: set PRICECAST_LOSS=laplace, or "
                "PRICECAST_INTERVALS=ewma or static"
            )
        return self

    @model_validator(mode="after")
    def _groups_need_global_scope(self) -> ModelFields:
        if self.ticker_groups > 1 and self.scope != "global":
            raise ValueError(
                f"PRICECAST_TICKER_GROUPS={self.ticker_groups} splits the tickers of one "
                f"network into groups, but PRICECAST_SCOPE={self.scope} already gives every "
                "ticker its own: set PRICECAST_TICKER_GROUPS=1, or PRICECAST_SCOPE=global"
            )
        return self


class ModelConfig(ModelFields):
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
        ticker_groups: with scope ``global``, the number of groups the tickers are
            split into, one network per group, each trained as its own job (on a
            Dask cluster, as its own task); a ticker's group is the SHA-256 of its
            symbol modulo this number (``pipeline.model.groups``), so adding or
            removing a ticker moves no other. 1 (the default) is one network.
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

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dictionary."""
        return self.model_dump()

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes``, validated like a new value."""
        return type(self)(**{**self.to_dict(), **changes})

    def training_params(self) -> dict[str, Any]:
        """The parameters that shape the weights (policy settings left out)."""
        params = self.to_dict()
        for key in ("retrain_after_days", "drift_tolerance"):
            params.pop(key)
        if params["ticker_groups"] == 1:
            # One network, as before groups existed: the registered hyperparameters and
            # fingerprints of ungrouped models stay those of earlier versions.
            params.pop("ticker_groups")
        return params
