"""Model files: ``.keras`` files under ``<home>/models``, written atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ModelStoreError
from pipeline.files import write_atomically
from pipeline.model.network import import_keras

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

MODELS_DIR = "models"


def model_path(home: Path, version: int) -> Path:
    """Where model version ``version`` is saved."""
    return home / MODELS_DIR / f"model-v{version:05d}.keras"


def save_model(model: keras.Model, path: Path) -> Path:
    """Save ``model`` to ``path`` through a temporary file and a rename.

    A file already at ``path`` belongs to a version whose registration failed
    (versions are registered after their file is saved); it is replaced, with
    a warning.
    """
    if path.exists():
        logger.warning("replacing %s, left by a training that was not registered", path)
    write_atomically(path.with_suffix(".keras"), lambda temporary: _save(model, temporary))
    return path


def _save(model: keras.Model, temporary: Path) -> None:
    # Keras picks the format from the suffix, so save under a .keras name first.
    target = temporary.with_name(temporary.name + ".keras")
    model.save(target)
    target.replace(temporary)


def load_model(path: Path, *, for_training: bool = False) -> keras.Model:
    """Load a saved model; ``for_training`` restores its optimizer state too.

    Raises:
        ModelStoreError: the file is missing or not a Keras model.
    """
    keras = import_keras()

    if not path.exists():
        raise ModelStoreError(f"model file {path} is missing; retrain with --mode retrain")
    try:
        return keras.models.load_model(path, compile=for_training)
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"cannot load model file {path}: {exc}") from exc
