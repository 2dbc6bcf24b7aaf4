"""The champion's span predictions kept from one day to the next (``span_cache``):
judging with them equals judging without, predicting only what they do not hold, and
nothing is taken that no longer holds (a revised close, other parameters, another
model, a damaged file).

Equal to float32 rounding: the NumPy forward pass runs in float32, and a window's
prediction can differ in its last bits with the batch it is computed in (a full pass
today and one tomorrow differ as much, the span having grown)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_MODEL, TINY_SEQUENCES
from sqlalchemy.engine import Engine
from test_train import DATES, prepare, run_train
from test_validation_grouped import _predictor, _series

from pipeline.db.models import champion_model
from pipeline.model.champion_span import evaluate_champion
from pipeline.model.span import SpanSeries
from pipeline.model.span_cache import (
    champion_span_path,
    load_span_cache,
    save_span_cache,
    span_cache,
)
from pipeline.model.train import _spans
from pipeline.model.validation import SpanErrors, judge_span
from pipeline.sequences.read import read_sequences

SALTS = {name: f"salt-{name}" for name in ("AAA", "BBB", "CCC", "DDD", "SHORT", "TINY")}


def _counted(predictor):  # noqa: ANN001, ANN202
    """``predictor`` with a list of the rows each forward pass predicted."""
    calls: list[int] = []
    original = predictor.predict_outputs

    def counted(tickers, windows, volatility=None):  # noqa: ANN001, ANN202
        calls.append(len(windows))
        return original(tickers, windows, volatility)

    predictor.predict_outputs = counted
    return calls


def _yesterday(series: dict[str, SpanSeries]) -> dict[str, SpanSeries]:
    """Each ticker's span a day earlier: one close fewer, its newest target gone."""
    return {
        name: SpanSeries(data.closes[:-1], data.targets[data.targets < len(data.closes) - 1])
        for name, data in series.items()
    }


@pytest.mark.parametrize("distributional", [True, False])
def test_kept_predictions_judge_as_a_full_pass_does(distributional: bool, tmp_path: Path) -> None:
    today = _series()
    predictor = _predictor(distributional, "global", "log_ratio")
    predictor.damping = {"AAA": 0.5, "BBB": 0.0}
    step = judge_span(predictor, _yesterday(today), 0.8, "network").step
    path = tmp_path / "cache.npz"
    save_span_cache(path, span_cache("model-1", step, SALTS))
    cache = load_span_cache(path, "model-1", SALTS)
    assert cache is not None

    expected = judge_span(predictor, today, 0.8, "network")
    calls = _counted(predictor)
    found = judge_span(predictor, today, 0.8, "network", cache=cache)
    # One pass, over each ticker's newest target only (TINY has none, DDD no parameters).
    assert calls == [4]
    _assert_same_errors(found.errors, expected.errors)
    np.testing.assert_allclose(found.step.predicted, expected.step.predicted, rtol=1e-6)
    np.testing.assert_allclose(found.step.spread, expected.step.spread, rtol=1e-6)


def _assert_same_errors(found, expected) -> None:  # noqa: ANN001
    assert sorted(found.per_ticker) == sorted(expected.per_ticker)
    for ticker, row in expected.per_ticker.items():
        assert found.per_ticker[ticker].keys() == row.keys()
        for key, value in row.items():
            if value is None:
                assert found.per_ticker[ticker][key] is None
            else:
                assert found.per_ticker[ticker][key] == pytest.approx(value, rel=1e-6, nan_ok=True)


def test_the_cache_holds_each_tickers_points_only() -> None:
    """Its arrays are its own, one ticker's points each: not views of the whole span's
    arrays (which kept one span-sized array per ticker alive: 22 GB at 5,000 tickers)."""
    predictor = _predictor(True, "global", "log_ratio")
    step = judge_span(predictor, _series(), 0.8, "network").step
    cache = span_cache("model-1", step, SALTS)
    for name, known in cache.tickers.items():
        count = int((_series()[name].targets >= 4).sum())
        for values in (known.targets, known.predicted, known.spread):
            assert values.base is None and len(values) == count


def test_nothing_is_taken_that_no_longer_holds(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    today = _series()
    predictor = _predictor(True, "global", "log_ratio")
    step = judge_span(predictor, today, 0.8, "network").step
    path = tmp_path / "cache.npz"
    save_span_cache(path, span_cache("model-1", step, SALTS))
    points = len(step.predicted)
    calls = _counted(predictor)

    # Another model, or no file: none of it.
    assert load_span_cache(path, "model-2", SALTS) is None
    assert load_span_cache(tmp_path / "none.npz", "model-1", SALTS) is None

    # A revised close of AAA: AAA is predicted again, the others are not.
    revised = dict(today)
    closes = today["AAA"].closes.copy()
    closes[30] *= 1.01
    revised["AAA"] = SpanSeries(closes, today["AAA"].targets)
    judged = judge_span(
        predictor, revised, 0.8, "network", cache=load_span_cache(path, "model-1", SALTS)
    )
    aaa = int((today["AAA"].targets >= 4).sum())
    assert calls == [aaa]
    _assert_same_errors(judged.errors, judge_span(predictor, revised, 0.8, "network").errors)

    # Other parameters for BBB (another salt): BBB is predicted again.
    calls.clear()
    salts = {**SALTS, "BBB": "other"}
    judge_span(predictor, today, 0.8, "network", cache=load_span_cache(path, "model-1", salts))
    assert calls == [int((today["BBB"].targets >= 4).sum())]

    # A damaged file: a warning, and every point predicted.
    path.write_bytes(path.read_bytes()[:100])
    calls.clear()
    with caplog.at_level(logging.WARNING):
        assert load_span_cache(path, "model-1", SALTS) is None
    assert "ignoring the champion's kept predictions" in caplog.text
    judge_span(predictor, today, 0.8, "network", cache=None)
    assert calls == [points]

    with pytest.raises(ValueError, match="damping"):
        judge_span(predictor, today, 0.8, "network", damp=True, cache=span_cache("k", step, {}))


def _judge(engine: Engine, home: Path, day: dt.date) -> SpanErrors | None:
    """The champion as of ``day`` judged by the train stage on the span of ``day``."""
    prepare(engine, home, day)
    with engine.connect() as conn:
        champion = champion_model(conn, day)
        files = read_sequences(conn, home, day, None, TINY_SEQUENCES)
        config = TINY_MODEL.replace(drift_tolerance=100.0)
        return evaluate_champion(conn, home, champion, _spans(files.windows, config))


def test_the_train_stage_keeps_the_champions_predictions(engine: Engine, home: Path) -> None:
    """Judged a day later, the champion's errors are the ones a run without the kept
    predictions finds, and the file is rewritten for the new span."""
    prepare(engine, home, DATES[59])
    run_train(engine, home, DATES[59])
    path = champion_span_path(home)

    assert _judge(engine, home, DATES[60]) is not None
    first = path.read_bytes()
    kept = _judge(engine, home, DATES[61])
    assert path.read_bytes() != first  # the newest points added
    path.unlink()
    fresh = _judge(engine, home, DATES[61])
    assert kept is not None and fresh is not None
    _assert_same_errors(kept, fresh)


def test_a_promoted_model_leaves_its_predictions_for_the_next_day(
    engine: Engine, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The model the train stage promotes leaves the predictions it was judged with: the
    next day judges it predicting only the new points, with the errors a full pass gives."""
    prepare(engine, home, DATES[59])
    run_train(engine, home, DATES[59])
    path = champion_span_path(home)
    assert path.exists()

    with caplog.at_level(logging.DEBUG, logger="pipeline.model.validation"):
        kept = _judge(engine, home, DATES[60])
    assert kept is not None
    (message,) = [r.getMessage() for r in caplog.records if "kept from an earlier" in r.message]
    found, total = (int(word) for word in message.split()[:3:2])
    tickers = len(kept.per_ticker)
    # Each ticker's newest point is new (its target the newest close); the rest were kept.
    assert total - found == tickers and found > 0
    path.unlink()
    fresh = _judge(engine, home, DATES[60])
    assert fresh is not None
    _assert_same_errors(kept, fresh)
