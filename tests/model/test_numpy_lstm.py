"""The NumPy forward pass agrees with Keras, and reads saved models without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ModelStoreError
from pipeline.model.network import build_model
from pipeline.model.numpy_lstm import NumpyLSTM, read_keras_file, read_networks
from pipeline.model.store import GLOBAL, model_path, save_networks


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A small network fitted one epoch on noise (so no weight is at its initial value)."""
    rng = np.random.default_rng(3)
    model = build_model(window=6, units=8, learning_rate=0.01, loss="mae", seed=11)
    x = rng.normal(0, 1, (256, 6, 1)).astype(np.float32)
    model.fit(x, x[:, -1, 0] * 0.5, epochs=1, batch_size=32, verbose=0)
    path = save_networks({GLOBAL: model}, model_path(tmp_path_factory.mktemp("home"), 1))
    return model, path


def test_the_forward_pass_matches_keras(trained: tuple[object, Path]) -> None:
    model, _ = trained
    windows = np.random.default_rng(5).normal(0, 2, (300, 6)).astype(np.float32)
    expected = np.asarray(model.predict_on_batch(windows[..., None])).reshape(-1)
    got = NumpyLSTM.from_keras(model).predict(windows)
    assert got.shape == (300,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.std(got) > 0  # not a constant: the recurrence matters


def test_a_saved_file_reads_to_the_same_weights(trained: tuple[object, Path]) -> None:
    model, path = trained
    from_file = read_keras_file(path)
    from_model = NumpyLSTM.from_keras(model)
    for name in ("kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias"):
        np.testing.assert_array_equal(getattr(from_file, name), getattr(from_model, name))
    assert read_networks(path).keys() == {GLOBAL}


def test_per_ticker_folders_and_missing_networks(
    trained: tuple[object, Path], tmp_path: Path
) -> None:
    model, _ = trained
    folder = save_networks({"AAA": model, "BBB": model}, tmp_path / "model-v00002")
    assert sorted(read_networks(folder)) == ["AAA", "BBB"]
    assert sorted(read_networks(folder, ["BBB"])) == ["BBB"]
    with pytest.raises(ModelStoreError, match="no network for CCC"):
        read_networks(folder, ["AAA", "CCC"])
    with pytest.raises(ModelStoreError, match="is missing"):
        read_networks(tmp_path / "nowhere.keras")


def test_files_that_are_not_such_networks_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelStoreError, match="cannot read model file"):
        read_keras_file(junk)
    other = tmp_path / "other.keras"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("config.json", '{"config": {"layers": [{"class_name": "Dense"}]}}')
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(ModelStoreError, match="one LSTM and one Dense"):
        read_keras_file(other)


def test_reading_a_model_imports_no_tensorflow(trained: tuple[object, Path]) -> None:
    _, path = trained
    code = (
        "import sys; from pathlib import Path; "
        "from pipeline.model.numpy_lstm import read_keras_file; "
        f"net = read_keras_file(Path({str(path)!r})); "
        "import numpy as np; net.predict(np.zeros((2, 6))); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_a_distributional_network_matches_keras_and_reloads_for_training(tmp_path: Path) -> None:
    """Two inputs per step (scaled close, volatility feature), two outputs (location, scale);
    the saved file reads in NumPy and loads in Keras with its Laplace loss for a fine-tune."""
    from pipeline.model.store import load_network

    rng = np.random.default_rng(8)
    model = build_model(window=6, units=8, learning_rate=0.01, loss="laplace", seed=2)
    x = rng.normal(0, 1, (256, 6, 2)).astype(np.float32)
    y = (x[:, -1, 0] * np.exp(x[:, 0, 1])).astype(np.float32)
    first = model.fit(x, y, epochs=2, batch_size=32, verbose=0).history["loss"]
    assert first[-1] < first[0]  # the likelihood loss trains
    windows = rng.normal(0, 2, (50, 6, 2)).astype(np.float32)
    expected = np.asarray(model.predict_on_batch(windows))
    got = NumpyLSTM.from_keras(model).predict(windows)
    assert got.shape == (50, 2) and NumpyLSTM.from_keras(model).features == 2
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    path = save_networks({GLOBAL: model}, model_path(tmp_path, 3))
    np.testing.assert_allclose(read_keras_file(path).predict(windows), expected, atol=1e-6)
    with pytest.raises(ValueError, match="takes 2 features, got 1"):
        read_keras_file(path).predict(windows[..., 0])
    reloaded = load_network(path, for_training=True)
    assert reloaded.loss is not None
    reloaded.fit(x, y, epochs=1, batch_size=32, verbose=0)  # compiles with the Laplace loss


def test_the_laplace_loss_is_the_negative_log_likelihood() -> None:
    from pipeline.model.network import laplace_loss, network_scale

    y = np.array([[0.5], [-1.0], [2.0]], dtype=np.float32)
    out = np.array([[0.0, 0.3], [0.5, -1.0], [2.0, 2.0]], dtype=np.float32)
    b = np.log1p(np.exp(out[:, 1])) + 1e-3
    np.testing.assert_allclose(network_scale(out[:, 1]), b, rtol=1e-6)
    by_hand = np.log(b) + np.abs(y[:, 0] - out[:, 0]) / b
    got = np.asarray(laplace_loss()(y, out))
    np.testing.assert_allclose(got, by_hand, rtol=1e-5)


def test_the_blocks_of_a_forward_pass_on_threads_give_the_same_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several blocks (``_ROWS`` rows each) on several threads: each block computed as
    alone, in order, so the outputs are exactly those of one thread."""
    import pipeline.model.numpy_lstm as numpy_lstm

    rng = np.random.default_rng(5)
    units = 8
    network = NumpyLSTM(
        (rng.normal(size=(2, 4 * units)) * 0.3).astype(np.float32),
        (rng.normal(size=(units, 4 * units)) * 0.3).astype(np.float32),
        (rng.normal(size=4 * units) * 0.1).astype(np.float32),
        rng.normal(size=(units, 2)).astype(np.float32),
        np.zeros(2, np.float32),
    )
    windows = rng.normal(size=(3 * numpy_lstm._ROWS + 17, 6, 2)).astype(np.float32)
    monkeypatch.setattr(numpy_lstm, "_THREADS", 1)
    alone = network.predict(windows)
    monkeypatch.setattr(numpy_lstm, "_THREADS", 3)
    threaded = network.predict(windows)
    assert threaded.shape == (len(windows), 2)
    np.testing.assert_array_equal(threaded, alone)
