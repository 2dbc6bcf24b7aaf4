"""A Keras network's large passes go through its XLA-compiled forward pass
(``predictor._predict_compiled``): the same outputs as ``predict_on_batch`` and the
NumPy pass to float32 rounding, one compilation per network whatever the rows."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.model import predictor as predictor_module
from pipeline.model.network import build_model
from pipeline.model.numpy_lstm import NumpyLSTM
from pipeline.model.predictor import Predictor
from pipeline.model.store import GLOBAL
from pipeline.sequences.scaling import get_scaler


@pytest.fixture(scope="module")
def network() -> object:
    """A small distributional network fitted one epoch on noise."""
    rng = np.random.default_rng(4)
    model = build_model(window=6, units=8, learning_rate=0.01, loss="laplace", seed=5)
    x = rng.normal(0, 1, (256, 6, 2)).astype(np.float32)
    model.fit(x, x[:, -1, 0] * np.exp(x[:, 0, 1]), epochs=1, batch_size=32, verbose=0)
    return model


def test_compiled_passes_agree_with_keras_and_numpy_and_compile_once(
    network: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predictor_module, "_COMPILED_ROWS", 512)
    windows = np.random.default_rng(6).normal(0, 2, (1300, 6, 2)).astype(np.float32)
    got = predictor_module._predict_compiled(network, windows)  # 2 full blocks, 1 padded
    assert got.shape == (1300, 2)
    expected = np.asarray(network.predict_on_batch(windows))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, NumpyLSTM.from_keras(network).predict(windows), atol=1e-6)
    assert np.std(got[:, 0]) > 0
    # Rows do not depend on the padding or on the block they fall in.
    np.testing.assert_allclose(
        predictor_module._predict_compiled(network, windows[700:703]), got[700:703], atol=1e-6
    )
    forward = predictor_module._COMPILED[network]
    assert forward.experimental_get_tracing_count() == 1


def test_a_point_network_compiled_gives_one_output_a_row() -> None:
    model = build_model(window=4, units=8, learning_rate=0.01, loss="mse", seed=1)
    windows = np.random.default_rng(2).normal(0, 1, (40, 4)).astype(np.float32)
    got = predictor_module._predict_compiled(model, windows)
    assert got.shape == (40,)
    expected = np.asarray(model.predict_on_batch(windows[..., None])).reshape(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_predictor_compiles_passes_from_xla_min_rows(
    network: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    windows = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (900, 6)), axis=1))
    tickers = ["A"] * 450 + ["B"] * 450
    predictor = Predictor(
        window=6,
        scaler=get_scaler("minmax"),
        params={
            "A": {"min": 80.0, "max": 120.0, "volatility": 0.01},
            "B": {"min": 90.0, "max": 130.0, "volatility": 0.02},
        },
        networks={GLOBAL: network},
    )
    volatility = np.full(900, 0.012)
    calls: list[int] = []
    compiled = predictor_module._predict_compiled

    def spy(net: object, encoded: np.ndarray) -> np.ndarray:
        calls.append(len(encoded))
        return compiled(net, encoded)

    monkeypatch.setattr(predictor_module, "_predict_compiled", spy)
    monkeypatch.setattr(predictor_module, "XLA_MIN_ROWS", 10**9)
    plain = predictor.predict_outputs(tickers, windows, volatility)
    assert calls == []
    monkeypatch.setattr(predictor_module, "XLA_MIN_ROWS", 900)
    fast = predictor.predict_outputs(tickers, windows, volatility)
    assert calls == [900]
    for a, b in zip(plain, fast, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fits_compiled_with_xla_repeat_to_the_bit_under_deterministic_ops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``fit_networks`` compiles a large fit's steps with XLA (``XLA_MIN_SAMPLE_EPOCHS``,
    here lowered), after ``seed_everything`` made TensorFlow's ops deterministic: two
    such fits give the same weights, and it trains (the loss falls)."""
    from pipeline.model import fit as fit_module
    from pipeline.model.network import seed_everything

    rng = np.random.default_rng(9)
    x = rng.normal(0, 1, (512, 6, 2)).astype(np.float32)
    y = (0.5 * x[:, -1, 0]).astype(np.float32)
    compiled: list[bool] = []
    original = fit_module.compile_with_xla
    monkeypatch.setattr(
        fit_module, "compile_with_xla", lambda net: compiled.append(original(net)) or compiled[-1]
    )
    monkeypatch.setattr(fit_module, "XLA_MIN_SAMPLE_EPOCHS", 1024)

    def fitted() -> tuple[np.ndarray, list[float]]:
        seed_everything(0)
        model = build_model(window=6, units=8, learning_rate=0.01, loss="laplace", seed=3)
        assert model.jit_compile is False  # Keras' own choice on a CPU, deterministic ops
        if len(x) * 2 >= fit_module.XLA_MIN_SAMPLE_EPOCHS:
            fit_module.compile_with_xla(model)
        history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, shuffle=True)
        assert model.jit_compile is True
        weights = np.concatenate([w.reshape(-1) for w in model.get_weights()])
        return weights, history.history["loss"]

    first, losses = fitted()
    second, _ = fitted()
    assert compiled == [True, True]
    np.testing.assert_array_equal(first, second)
    assert losses[-1] < losses[0]


def test_a_compiled_pass_does_not_keep_its_network_alive() -> None:
    import gc

    model = build_model(window=4, units=8, learning_rate=0.01, loss="mse", seed=1)
    predictor_module._predict_compiled(model, np.zeros((8, 4), np.float32))
    assert model in predictor_module._COMPILED
    before = len(predictor_module._COMPILED)
    del model
    gc.collect()
    assert len(predictor_module._COMPILED) == before - 1
