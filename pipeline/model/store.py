"""Model files under ``<home>/models``, written atomically.

A global model is one file, ``model-vNNNNN.keras``; a per-ticker model is a
folder ``model-vNNNNN/`` holding ``<TICKER>.keras`` per ticker, and a grouped
one (``ModelConfig.ticker_groups`` above 1) a folder holding
``group-<i>-of-<n>.keras`` per group (``pipeline.model.groups``). Networks are
keyed by ticker, by group, or by ``GLOBAL`` for the one network of a global model.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ModelStoreError
from pipeline.files import path_digest, write_atomically
from pipeline.model.groups import is_grouped, ticker_networks
from pipeline.model.network import custom_objects, import_keras
from pipeline.model.numpy_lstm import read_networks

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

MODELS_DIR = "models"
#: The key of the single network of a global model.
GLOBAL = "*"


def model_path(home: Path, version: int, scope: str = "global") -> Path:
    """Where model version ``version`` is saved: a file for a ``global`` model (one
    network), else (``per_ticker``, ``grouped``) a folder."""
    name = f"model-v{version:05d}"
    return home / MODELS_DIR / (f"{name}.keras" if scope == "global" else name)


def save_networks(networks: Mapping[str, keras.Model], path: Path) -> Path:
    """Save a model's networks to ``path`` (a file for ``GLOBAL``, else a folder).

    Anything already at ``path`` belongs to a version whose registration
    failed (versions are registered after their files are saved); it is
    replaced, with a warning.
    """
    staging = staging_folder(path)
    try:
        for key, network in networks.items():
            save_network(network, network_file(staging, key))
        return publish_networks(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def staging_folder(path: Path) -> Path:
    """An empty folder beside ``path`` where a model's networks are saved one by one
    (``network_file``) before ``publish_networks`` moves them to ``path``."""
    staging = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def network_file(path: Path, key: str) -> Path:
    """The file of network ``key`` in a model's file or folder (or a staging folder)."""
    if path.is_file():
        return path
    return path / f"{'network' if key == GLOBAL else key}.keras"


def save_network(network: keras.Model, target: Path) -> None:
    """Save one network as a ``.keras`` file, written under a temporary name then renamed."""
    write_atomically(target, lambda temporary: _save(network, temporary), "train")


def publish_networks(staging: Path, path: Path) -> Path:
    """Move the networks saved in ``staging`` to ``path``: the file of a global model
    (``staging`` holds only ``GLOBAL``'s), or the folder of a per-ticker one.

    Anything already at ``path`` belongs to a version whose registration
    failed; it is replaced, with a warning.
    """
    if path.exists():
        logger.warning("replacing %s, left by a training that was not registered", path)
    if path.suffix == ".keras":
        network_file(staging, GLOBAL).replace(path)
        shutil.rmtree(staging)
        return path
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)
    return path


def _save(model: keras.Model, target: Path) -> None:
    # Keras picks the format from the suffix, so save under a .keras name first.
    named = target.with_name(target.name + ".keras")
    try:
        model.save(named)
        named.replace(target)
    finally:
        named.unlink(missing_ok=True)


def files_digest(path: Path) -> str:
    """The SHA-256 of a model's file, or of its folder's network files (by name).

    Raises:
        ModelStoreError: the file or folder is missing.
    """
    digest = path_digest(path)
    if digest is None:
        raise ModelStoreError(f"model file {path} is missing; retrain with --mode retrain")
    return digest


@dataclass(frozen=True)
class Damage:
    """Why a registered version's files cannot be used: they are missing, other bytes
    than the ones registered (``models.file_sha256``), or not readable networks."""

    version: int
    path: Path
    registered: str | None
    found: str | None
    problem: str

    def describe(self) -> str:
        """One line naming the version, the path and both digests."""
        found = self.found or "none, nothing is there"
        return (
            f"the files of model v{self.version} at {self.path} {self.problem} "
            f"(SHA-256 {found}; registered {self.registered or 'not recorded'})"
        )


def inspect_files(model_row: Mapping[str, object], read: bool = False) -> Damage | None:
    """What is wrong with a registered version's files, or ``None`` if nothing is.

    Args:
        model_row: the version's ``models`` row.
        read: also read the networks (in NumPy, as forecasting does), so that files
            registered before digests were kept, or registered broken, are caught too.
    """
    path = Path(str(model_row["file_path"]))
    registered = model_row.get("file_sha256")
    registered = None if registered is None else str(registered)

    def damage(found: str | None, problem: str) -> Damage:
        return Damage(int(str(model_row["version"])), path, registered, found, problem)

    try:
        found = files_digest(path)
    except (ModelStoreError, OSError):
        return damage(None, "are missing")
    if registered is not None and found != registered:
        return damage(
            found, "are not the ones it was registered with: they were replaced or changed since"
        )
    if read:
        try:
            read_networks(path)
        except (ModelStoreError, OSError, ValueError) as exc:
            return damage(found, f"cannot be read as networks ({exc})")
    return None


def check_files(model_row: Mapping[str, object]) -> Path:
    """The path of a registered version's files, after checking they are the files it was
    registered with (``models.file_sha256``; versions registered before digests were
    kept are not checked).

    Raises:
        ModelStoreError: the files are missing, or other bytes than those registered (a
            file replaced by another version's, truncated, or overwritten): using them
            would forecast with a model nobody trained for these tickers.
    """
    damage = inspect_files(model_row)
    if damage is not None:
        raise ModelStoreError(
            f"{damage.describe()}; the daily run retrains (`pricecast run`), or retrain "
            "with --mode retrain"
        )
    return Path(str(model_row["file_path"]))


def load_network(path: Path, for_training: bool = False) -> keras.Model:
    """Load one network file; ``for_training`` restores its optimizer state too.

    Raises:
        ModelStoreError: the file is missing or not a Keras model.
    """
    if not path.is_file():
        raise ModelStoreError(f"model file {path} is missing; retrain with --mode retrain")
    return _load(path, for_training)


def _load(path: Path, for_training: bool) -> keras.Model:
    keras = import_keras()
    try:
        return keras.models.load_model(path, compile=for_training, custom_objects=custom_objects())
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
    if is_grouped(files) and tickers is not None:
        networks = {key: _load(file, for_training) for key, file in files.items()}
        try:
            return ticker_networks(networks, tickers, f"model folder {path}")
        except ValueError as exc:
            raise ModelStoreError(str(exc)) from exc
    wanted = tickers if tickers is not None else list(files)
    missing = sorted(set(wanted) - set(files))
    if missing:
        raise ModelStoreError(f"model folder {path} has no network for {', '.join(missing)}")
    return {ticker: _load(files[ticker], for_training) for ticker in wanted}
