"""Parameters of the sequences stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SCALINGS = ("minmax", "log_ratio")
PRICE_FIELDS = ("close", "adj_close")


@dataclass(frozen=True)
class SequenceConfig:
    """How closes become scaled windows.

    Attributes:
        window: closes per input window (the seed uses 10).
        scaling: the scaler (``pipeline.sequences.scaling``): ``log_ratio``, level-free
            (the default), or ``minmax``, which maps the training span to [0, 1] as the
            tutorial does.
        validation_fraction: share of each ticker's newest windows held out for
            validation; the scaler never sees their closes.
        price_field: ``close``, or ``adj_close`` for adjusted closes where a
            ticker has them on every day (else its closes, with a warning).
    """

    window: int = 10
    scaling: str = "log_ratio"
    validation_fraction: float = 0.1
    price_field: str = "close"

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be at least 2, got {self.window}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.price_field not in PRICE_FIELDS:
            raise ValueError(f"price_field must be one of {PRICE_FIELDS}, got {self.price_field!r}")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError(
                f"validation_fraction must be in (0, 0.5), got {self.validation_fraction}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dictionary."""
        return asdict(self)
