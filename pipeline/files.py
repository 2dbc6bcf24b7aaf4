"""Small file helpers: content hashes and atomic writes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import StorageError, is_transient


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


def write_atomically(path: Path, write: Callable[[Path], None], stage: str = "") -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place.

    Readers never see a half-written file; a failed write leaves ``path`` as it was.

    Args:
        path: the file to write.
        write: writes the content to the path it is given.
        stage: what is writing (``sequences``, ``train``...), named in errors.

    Raises:
        StorageError: the write failed for good (``storage_error``): a full disk, a
            quota, a read-only filesystem, a denied permission. A transient
            ``OSError`` (``errors.is_transient``) is raised as it is.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        if is_transient(exc):
            raise
        raise storage_error(exc, path, stage) from exc
    os.close(handle)
    # mkstemp creates the file private (0600); give it the permissions of a normal new file.
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(temporary, 0o666 & ~umask)
        write(Path(temporary))
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        if is_transient(exc):
            raise
        raise storage_error(exc, path, stage) from exc
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_leftover_temporaries(paths: Sequence[Path]) -> int:
    """Remove the temporary files of ``write_atomically`` that a killed process left
    beside ``paths`` (``.<name>.<random>.tmp``; a SIGKILL runs no cleanup); one listing
    per folder. Only the temporaries of the paths given go: call it before writing those
    paths, holding whatever keeps any other writer of them away (the pipeline lock).

    Returns:
        How many were removed.
    """
    wanted: dict[Path, set[str]] = {}
    for path in paths:
        wanted.setdefault(path.parent, set()).add(path.name)
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            if name[1:-4].rsplit(".", 1)[0] in names:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


def write_text(path: Path, text: str, stage: str = "") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``write_atomically``), removing first
    what a writer of ``path`` killed mid-write left (``remove_leftover_temporaries``)."""
    remove_leftover_temporaries([path])
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), stage)


#: Advice per ``OSError`` number for a write that failed.
_WRITE_ADVICE = {
    errno.ENOSPC: "the disk is full; free space on the filesystem of {folder}",
    errno.EDQUOT: "the disk quota is exhausted; free space or raise the quota for {folder}",
    errno.EROFS: "the filesystem of {folder} is read-only; point PRICECAST_HOME elsewhere",
    errno.EACCES: "permission denied; check who may write to {folder}",
    errno.EPERM: "operation not permitted; check who may write to {folder}",
    errno.EFBIG: "the file is larger than the filesystem of {folder} allows",
}


def storage_error(exc: OSError, path: Path, stage: str = "") -> StorageError:
    """The error to raise when writing ``path`` failed for good with ``exc``: it names
    the path, the stage and what to do."""
    reason = exc.strerror or str(exc)
    code = errno.errorcode.get(exc.errno or 0)
    advice = _WRITE_ADVICE.get(exc.errno or 0, "check the disk and the folder {folder}")
    where = f" ({stage} stage)" if stage else ""
    return StorageError(
        f"cannot write {path}{where}: {reason}{f' [{code}]' if code else ''}; "
        + advice.format(folder=path.parent)
    )
