"""Small file helpers: content hashes and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def sha256_bytes(payload: bytes) -> str:
    """Hex SHA-256 of ``payload``."""
    return hashlib.sha256(payload).hexdigest()


def sha256_json(payload: Any) -> str:
    """Hex SHA-256 of ``payload`` as canonical JSON (sorted keys, no spaces, ``str`` of
    values JSON has no type for, such as dates): equal descriptions, equal digests.

    The fingerprints of a training's inputs and of a backtest's are such digests.
    """
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return sha256_bytes(text.encode())


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path_digest(path: Path, pattern: str = "*.keras") -> str | None:
    """Hex SHA-256 of a file's bytes, or of a folder's files matching ``pattern`` (the
    canonical JSON of each name and its digest); ``None`` when ``path`` is neither."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return None
    return sha256_json({file.name: sha256_file(file) for file in sorted(path.glob(pattern))})


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place.

    Readers never see a half-written file; a failed write leaves ``path`` as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    # mkstemp creates the file private (0600); give it the permissions of a normal new file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
