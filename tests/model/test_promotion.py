"""The promotion policy on registry rows and errors built by hand: no database, no files."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.config import ModelConfig
from pipeline.model.promotion import (
    ARCHITECTURE,
    Decision,
    Verdict,
    architecture,
    champion_drift,
    checks_drift,
    decide,
    gate,
    trained_through,
)
from pipeline.model.validation import SpanErrors

AS_OF = dt.date(2024, 3, 8)
#: A tolerance that is exact in binary, so the boundary cases are exact too.
CONFIG = ModelConfig(retrain_after_days=30, drift_tolerance=0.25)
PARAMS: dict[str, Any] = {
    "window": 5,
    "scaling": "minmax",
    "price_field": "close",
    "units": 8,
    "scope": "global",
    "loss": "laplace",
    "epochs": 3,
    "learning_rate": 0.001,
}
OTHER_ARCHITECTURE = {
    "window": 10,
    "scaling": "log_ratio",
    "price_field": "adj_close",
    "units": 16,
    "scope": "per_ticker",
    "ticker_groups": 4,
    "loss": "mse",
}


def champion_row(**changes: Any) -> dict[str, Any]:
    """A champion's registry row, as ``champion_model`` returns it."""
    row = {
        "version": 3,
        "hyperparameters": dict(PARAMS),
        "tickers": ["AAA", "BBB"],
        "data_through": dt.date(2024, 3, 1),
        "train_through": dt.date(2024, 2, 20),
        "val_mase": 0.9,
        "fingerprint": "f" * 64,
    }
    return {**row, **changes}


def retrain_row(days_old: int) -> dict[str, Any]:
    """The newest full retrain of the champion's lineage, ``days_old`` before ``AS_OF``."""
    return {"version": 1, "data_through": AS_OF - dt.timedelta(days=days_old)}


def run(
    requested: str = "auto",
    champion: dict[str, Any] | None = None,
    last_retrain: dict[str, Any] | None = None,
    tickers: tuple[str, ...] = ("AAA", "BBB"),
    params: dict[str, Any] = PARAMS,
    new_windows: int = 4,
    drift: tuple[float, float] | None = None,
) -> Decision:
    return decide(
        requested, champion, last_retrain, list(tickers), params, AS_OF, CONFIG, new_windows, drift
    )


def span(**tickers: tuple[float, float | None]) -> SpanErrors:
    """Errors on the newest span: per ticker ``(mae, msis)`` over 10 points, naive MAE 1."""
    return SpanErrors(
        {
            ticker: {"n": 10, "mae": mae, "naive_mae": 1.0, "mase": mae, "msis": msis}
            for ticker, (mae, msis) in tickers.items()
        }
    )


# --- decide: which training a run does ---------------------------------------------


def test_without_a_champion_auto_retrains_and_finetune_refuses() -> None:
    assert run(champion=None) == Decision("retrain", "no champion trained on data up to 2024-03-08")
    with pytest.raises(MissingDataError, match="no champion trained on data up to 2024-03-08"):
        run("finetune", champion=None)


def test_a_requested_retrain_retrains_whatever_the_champion() -> None:
    assert run("retrain", champion_row(), new_windows=0) == ("retrain", "retrain requested")
    assert run("retrain", None) == ("retrain", "retrain requested")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="mode must be one of auto, retrain, finetune"):
        run("fast", champion_row())


@pytest.mark.parametrize("key", ARCHITECTURE)
def test_an_architecture_change_retrains_and_cannot_be_fine_tuned(key: str) -> None:
    params = {**PARAMS, key: OTHER_ARCHITECTURE[key]}
    action, reason = run(champion=champion_row(), params=params)
    assert action == "retrain"
    assert reason.startswith("champion v3 has architecture {")
    assert f"'{key}': {OTHER_ARCHITECTURE[key]!r}" in reason.split("requested")[1]
    with pytest.raises(ConfigurationError, match="cannot fine-tune: champion v3 has architecture"):
        run("finetune", champion_row(), params=params)


def test_other_hyperparameters_are_no_architecture_change() -> None:
    params = {**PARAMS, "epochs": 50, "learning_rate": 0.01, "seed": 1}
    assert run(champion=champion_row(), params=params).action == "finetune"


def test_rows_from_before_price_field_and_scope_read_as_their_defaults() -> None:
    old = {key: value for key, value in PARAMS.items() if key not in ("price_field", "scope")}
    assert architecture(old) == architecture(PARAMS)
    assert run(champion=champion_row(hyperparameters=old)).action == "finetune"
    per_ticker = {**PARAMS, "scope": "per_ticker"}
    assert run(champion=champion_row(hyperparameters=old), params=per_ticker).action == "retrain"


def test_a_ticker_the_champion_does_not_cover_retrains() -> None:
    tickers = ("AAA", "BBB", "CCC", "DDD")
    assert run(champion=champion_row(), tickers=tickers) == (
        "retrain",
        "champion v3 does not cover CCC, DDD",
    )
    with pytest.raises(ConfigurationError, match="cannot fine-tune: champion v3 does not cover"):
        run("finetune", champion_row(), tickers=tickers)
    # Fewer tickers than the champion's are covered.
    assert run(champion=champion_row(), tickers=("AAA",)).action == "finetune"


def test_a_stale_retrain_retrains_in_auto_only() -> None:
    assert run(champion=champion_row(), last_retrain=retrain_row(31)) == (
        "retrain",
        "the last full retrain (v1, data through 2024-02-06) is 31 days old, more than 30",
    )
    # retrain_after_days itself is not stale.
    assert run(champion=champion_row(), last_retrain=retrain_row(30)).action == "finetune"
    assert run("finetune", champion_row(), last_retrain=retrain_row(300)).action == "finetune"


def test_drift_beyond_the_tolerance_retrains_in_auto_only() -> None:
    # Promoted at MASE 2.0; the tolerance is 25%: up to 2.5 is no drift.
    assert run(champion=champion_row(), drift=(2.51, 2.0)) == (
        "retrain",
        "champion v3's error drifted: MASE 2.510 on the newest span, 2.000 when promoted "
        "(tolerance 25%)",
    )
    assert run(champion=champion_row(), drift=(2.5, 2.0)).action == "finetune"
    assert run(champion=champion_row(), drift=(1.5, 2.0)).action == "finetune"
    assert run("finetune", champion_row(), drift=(9.0, 2.0)).action == "finetune"
    # No MASE to drift from.
    assert run(champion=champion_row(), drift=(9.0, 0.0)).action == "finetune"


def test_the_rules_apply_in_order() -> None:
    stale_and_drifted = run(champion=champion_row(), last_retrain=retrain_row(31), drift=(9.0, 1.0))
    assert "days old" in stale_and_drifted.reason
    wider_and_uncovered = run(
        champion=champion_row(), params={**PARAMS, "units": 16}, tickers=("AAA", "CCC")
    )
    assert "has architecture" in wider_and_uncovered.reason


def test_new_windows_fine_tune_and_none_reuse() -> None:
    assert run(champion=champion_row(), new_windows=12) == (
        "finetune",
        "12 training windows are new since champion v3",
    )
    assert run(champion=champion_row(), new_windows=0) == (
        "reuse",
        "no training windows newer than champion v3's (trained through 2024-02-20)",
    )
    # A fine-tune with nothing new to train on reuses the champion too.
    assert run("finetune", champion_row(), new_windows=0).action == "reuse"
    # Versions registered before train_through was recorded: through their data.
    older = champion_row(train_through=None)
    assert trained_through(older) == dt.date(2024, 3, 1)
    assert run(champion=older, new_windows=0).reason.endswith("(trained through 2024-03-01)")


@pytest.mark.parametrize("requested", ["auto", "retrain", "finetune"])
def test_a_damaged_champion_is_retrained_in_every_mode(requested: str) -> None:
    damaged = "the files of model v3 at m.keras are missing (SHA-256 none; registered abc)"
    for windows in (0, 12):
        decision = decide(
            requested,
            champion_row(),
            None,
            ["AAA", "BBB"],
            PARAMS,
            AS_OF,
            CONFIG,
            windows,
            None,
            damaged=damaged,
        )
        assert decision == ("retrain", f"{damaged}; retraining from the database")


# --- when the champion's drift is measured -----------------------------------------


@pytest.mark.parametrize(
    ("requested", "params", "new_windows", "val_mase", "expected"),
    [
        ("auto", PARAMS, 4, 0.9, True),
        ("finetune", PARAMS, 4, 0.9, False),
        ("retrain", PARAMS, 4, 0.9, False),
        ("auto", {**PARAMS, "units": 16}, 4, 0.9, False),
        ("auto", PARAMS, 0, 0.9, False),
        ("auto", PARAMS, 4, None, False),
        ("auto", PARAMS, 4, 0.0, False),
    ],
)
def test_drift_is_measured_only_when_auto_could_fine_tune(
    requested: str, params: dict[str, Any], new_windows: int, val_mase: float | None, expected: bool
) -> None:
    champion = champion_row(val_mase=val_mase)
    assert checks_drift(requested, champion, params, new_windows) is expected


def test_champion_drift_pairs_the_mase_now_and_when_promoted() -> None:
    champion = champion_row(val_mase=0.9)
    assert champion_drift(champion, span(AAA=(1.2, None), BBB=(0.8, None))) == (1.0, 0.9)
    assert champion_drift(champion, None) is None
    assert champion_drift(champion, SpanErrors()) is None


# --- gate: whether a new version is promoted ---------------------------------------

CHAMPION = {"version": 3}
THEIRS = span(AAA=(1.0, 10.0), BBB=(1.0, 10.0))


def test_the_first_model_is_promoted() -> None:
    assert gate(span(AAA=(5.0, 50.0)), None, None) == Verdict(
        True, "promoted: first model, no champion to compare with", None, None
    )


@pytest.mark.parametrize("errors", [None, SpanErrors()])
def test_a_champion_that_could_not_be_judged_is_replaced(errors: SpanErrors | None) -> None:
    assert gate(span(AAA=(5.0, 50.0)), CHAMPION, errors) == Verdict(
        True, "promoted: champion v3 could not be evaluated", None, None
    )


def test_a_damaged_champion_is_replaced_without_a_comparison() -> None:
    assert gate(span(AAA=(5.0, 50.0)), CHAMPION, THEIRS, damaged=True) == Verdict(
        True,
        "promoted: champion v3's files are damaged, so it can neither be compared nor forecast",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("mae", "msis", "promoted", "point", "interval"),
    [
        (0.9, 9.0, True, "no worse than", "no worse than"),
        (1.0, 10.0, True, "no worse than", "no worse than"),  # tied on both
        (1.1, 9.0, False, "worse than", "no worse than"),
        (0.9, 11.0, False, "no worse than", "worse than"),
        (1.1, 11.0, False, "worse than", "worse than"),
    ],
)
def test_the_gate_needs_mae_and_msis_no_worse(
    mae: float, msis: float, promoted: bool, point: str, interval: str
) -> None:
    verdict = gate(span(AAA=(mae, msis), BBB=(mae, msis)), CHAMPION, THEIRS)
    assert verdict.promoted is promoted
    assert (verdict.champion_mae, verdict.champion_msis) == (1.0, 10.0)
    assert verdict.decision == (
        f"{'promoted' if promoted else 'not promoted'}: MAE {mae:.6g} on the newest span is "
        f"{point} champion v3's 1 (MASE {mae:.4f} vs 1.0000); "
        f"interval MSIS {msis:.4g} is {interval} its 10"
    )


def test_without_intervals_on_either_side_the_mae_decides() -> None:
    no_intervals = span(AAA=(1.0, None), BBB=(1.0, None))
    verdict = gate(span(AAA=(0.9, 99.0), BBB=(0.9, 99.0)), CHAMPION, no_intervals)
    assert verdict == Verdict(
        True,
        "promoted: MAE 0.9 on the newest span is no worse than champion v3's 1 "
        "(MASE 0.9000 vs 1.0000)",
        1.0,
        None,
    )
    assert not gate(span(AAA=(1.1, None)), CHAMPION, THEIRS).promoted


def test_the_gate_compares_only_the_tickers_both_cover() -> None:
    # BBB is much worse for the challenger, but the champion has no errors for it.
    challenger = span(AAA=(0.9, 9.0), BBB=(50.0, 500.0))
    verdict = gate(challenger, CHAMPION, span(AAA=(1.0, 10.0), CCC=(0.1, 1.0)))
    assert verdict.promoted
    assert (verdict.champion_mae, verdict.champion_msis) == (1.0, 10.0)
