"""One full-size run: `pricecast run` with default hyperparameters on the bundled sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import table_snapshot

from pipeline.db.engine import connect
from pipeline.settings import bundled_sample_path

PRICECAST = str(Path(sys.executable).parent / "pricecast")


@pytest.mark.slow
def test_the_default_pipeline_twice_on_the_bundled_sample(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRICECAST_")}
    env.update(PRICECAST_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"))
    first = subprocess.run(
        [PRICECAST, "run", "--source", "demo"], capture_output=True, text=True, env=env, timeout=900
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    db_path = tmp_path / "home" / "pricecast.db"
    assert f"database:  sqlite:///{db_path}" in first.stdout
    assert "forecasts: 25 written" in first.stdout
    assert "v1 (retrain" in first.stdout

    engine = connect(f"sqlite:///{db_path}")
    before = table_snapshot(engine)
    with engine.connect() as conn:
        model = conn.execute(
            sa.text("SELECT hyperparameters, epochs_run, val_mase, promoted FROM models")
        ).one()
        forecasts = pd.read_sql("SELECT * FROM forecasts", conn)
    assert len(before["prices"]) == 5 * 1328
    params = json.loads(model.hyperparameters)
    assert (params["units"], params["window"], params["epochs"]) == (32, 10, 20)
    assert (params["batch_size"], params["learning_rate"]) == (1024, 0.003)
    assert 1 <= model.epochs_run <= 20 and model.promoted
    assert 0 < model.val_mase < 1.05
    assert (forecasts["yhat_lower"] < forecasts["yhat"]).all()
    assert (forecasts["yhat"] < forecasts["yhat_upper"]).all()
    # The forecasts are prices near the last close, not scaled values.
    sample = pd.read_csv(bundled_sample_path()).iloc[-1]
    for ticker, group in forecasts.groupby("ticker"):
        assert len(group) == 5
        assert group["yhat"].between(0.8 * sample[ticker], 1.2 * sample[ticker]).all()

    second = subprocess.run(
        [PRICECAST, "run", "--source", "demo"], capture_output=True, text=True, env=env, timeout=900
    )
    assert second.returncode == 0, second.stderr[-3000:]
    # Nothing new: the second run stops after ingesting and reports the first.
    assert "unchanged: nothing changed since the run that finished at" in second.stdout
    assert "v1 (retrain" in second.stdout
    assert table_snapshot(engine) == before
