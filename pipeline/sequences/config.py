"""Parameters of the sequences stage, declared once.

``SequenceFields`` declares each parameter with its type, default, bounds and
meaning; ``SequenceConfig`` is the frozen value the stage takes, and
``pipeline.settings.Settings`` inherits the same fields, read from
``PRICECAST_<NAME>`` (so ``PRICECAST_WINDOW`` and ``SequenceConfig.window``
cannot disagree on a default or a bound).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Scaling = Literal["minmax", "log_ratio"]
PriceField = Literal["close", "adj_close"]
SCALINGS = get_args(Scaling)
PRICE_FIELDS = get_args(PriceField)


class SequenceFields(BaseModel):
    """How closes become scaled windows."""

    window: int = Field(default=10, ge=2, description="Closes per input window (the seed: 10).")
    scaling: Scaling = Field(
        default="log_ratio",
        description="The scaler (pipeline.sequences.scaling): log_ratio, level-free, or "
        "minmax, which maps the training span to [0, 1] as the tutorial does; fitted per "
        "ticker on the training span only.",
    )
    validation_fraction: float = Field(
        default=0.1,
        gt=0.0,
        lt=0.5,
        description="Share of each ticker's newest windows held out for validation; the "
        "scaler never sees their closes.",
    )
    price_field: PriceField = Field(
        default="close",
        description="The price the model learns: close, or adj_close where a ticker has it "
        "on every day (else its closes, with a warning).",
    )


class SequenceConfig(SequenceFields):
    """The sequences stage's parameters: a frozen, validated value
    (``SequenceConfig(window=1)`` raises ``pydantic.ValidationError``, a ``ValueError``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dictionary."""
        return self.model_dump()

    def replace(self, **changes: Any) -> SequenceConfig:
        """A copy with ``changes``, validated like a new value."""
        return type(self)(**{**self.to_dict(), **changes})
