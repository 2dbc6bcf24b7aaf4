"""Model files under ``<home>/models``, written atomically.

A global model is one file, ``model-vNNNNN.keras``; a per-ticker model is a
folder ``model-vNNNNN/`` holding ``<TICKER>.keras`` per ticker. Networks are
keyed by ticker, or by ``GLOBAL`` for the one network of a global model.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ModelStoreError
from pipeline.files import write_atomically
from pipeline.model.network import import_keras

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

MODELS_DIR = "models"
#: The key of the single network of a global model.
GLOBAL = "*"


def model_path(home: Path, version: int, scope: str = "global") -> Path:
    """Where model version ``version`` is saved."""
    name = f"model-v{version:05d}"
    return home / MODELS_DIR / (f"{name}.keras" if scope == "global" else name)


def save_networks(networks: Mapping[str, keras.Model], path: Path) -> Path:
    """Save a model's networks to ``path`` (a file for ``GLOBAL``, else a folder).

    Anything already at ``path`` belongs to a version whose registration
    failed (versions are registered after their files are saved); it is
    replaced, with a warning.
    """
    if path.exists():
        logger.warning("replacing %s, left by a training that was not registered", path)
    if set(networks) == {GLOBAL}:
        write_atomically(path, lambda temporary: _save(networks[GLOBAL], temporary))
        return path
    staging = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for ticker, network in networks.items():
        _save(network, staging / f"{ticker}.keras")
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)
    return path


def _save(model: keras.Model, target: Path) -> None:
    # Keras picks the format from the suffix, so save under a .keras name first.
    named = target.with_name(target.name + ".keras")
    model.save(named)
    named.replace(target)


def _load(path: Path, for_training: bool) -> keras.Model:
    keras = import_keras()
    try:
        return keras.models.load_model(path, compile=for_training)
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"cannot load model file {path}: {exc}") from exc


def load_networks(
    path: Path, tickers: list[str] | None = None, *, for_training: bool = False
) -> dict[str, keras.Model]:
    """Load a model's networks; ``for_training`` restores optimizer state too.

    Args:
        path: the model's file or folder.
        tickers: for a per-ticker model, the tickers to load (default all).
        for_training: compile the networks with their saved optimizer state.

    Raises:
        ModelStoreError: the files are missing or not Keras models.
    """
    if not path.exists():
        raise ModelStoreError(f"model file {path} is missing; retrain with --mode retrain")
    if path.is_file():
        return {GLOBAL: _load(path, for_training)}
    files = {file.stem: file for file in sorted(path.glob("*.keras"))}
    wanted = tickers if tickers is not None else list(files)
    missing = sorted(set(wanted) - set(files))
    if missing:
        raise ModelStoreError(f"model folder {path} has no network for {', '.join(missing)}")
    return {ticker: _load(files[ticker], for_training) for ticker in wanted}
