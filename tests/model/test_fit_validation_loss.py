"""A fitted network's validation loss comes from the pass that judges it
(``fit_network``): the loss ``evaluate`` gives over the validation windows, to float32
rounding, for one distributional network and for a point network of each group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_MODEL, TINY_SEQUENCES
from test_groups import DATES, GROUPED, _prepared

from pipeline.model.fit import fit_network
from pipeline.model.store import load_network
from pipeline.model.train import plan_training


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(TINY_MODEL, id="distributional"),
        pytest.param(GROUPED.replace(loss="mse", intervals="ewma"), id="point-grouped"),
    ],
)
def test_the_validation_loss_is_the_one_evaluate_gives(config, tmp_path: Path) -> None:  # noqa: ANN001
    engine, home = _prepared(tmp_path, "loss", DATES[59])
    with engine.begin() as conn:
        plan = plan_training(conn, home, DATES[59], None, "retrain", TINY_SEQUENCES, config)
    assert plan.jobs
    for job in plan.jobs:
        outcome = fit_network(job)
        ((loss, samples),) = outcome.val_losses
        saved = tmp_path / f"{job.key}.keras"
        saved.write_bytes(outcome.weights)
        network = load_network(saved, for_training=True)
        tickers = sorted(job.series)
        rows = {ticker: job.data.windows[ticker].validation_rows() for ticker in tickers}
        x_val, y_val = job.data.stacked(tickers, rows)
        assert samples == len(x_val) > 0
        expected = network.evaluate(x_val, y_val, batch_size=4096, verbose=0)
        # Each window's loss is of order 1 (the Laplace one, log b + |y - mu| / b, sums to
        # near 0): float32 rounding, absolute.
        assert loss == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
        assert np.isfinite(loss)
    engine.dispose()
