"""``pipeline.files.remove_leftover_temporaries``: the temporaries of a writer killed in
``write_atomically``, and only those of the paths given."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.files import remove_leftover_temporaries

#: A process killed by SIGKILL inside ``write_atomically``, after writing the content.
_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from pipeline.files import write_atomically

def write(temporary):
    temporary.write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)

write_atomically(Path(sys.argv[1]), write, "sequences")
"""


def test_a_killed_writers_temporary_is_removed_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "BRK.B.parquet"
    target.write_bytes(b"old")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(target)],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (left,) = (p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert left.startswith(".BRK.B.parquet.")
    others = [".AAA.parquet.abc_12.tmp", ".BRK.parquet.x.tmp", "notes.tmp", "AAA.parquet"]
    for name in others:
        (tmp_path / name).write_bytes(b"x")

    assert remove_leftover_temporaries([target, tmp_path / "missing" / "X.parquet"]) == 1
    assert target.read_bytes() == b"old"  # the file itself is as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, "BRK.B.parquet"])
