"""The wheel: built, installed (not editable) in a fresh virtualenv, and run from another folder.

What a Prefect worker's image gets from ``pip install pricecast-*.whl``: the
package must carry what it reads (the views of ``sql/``, the migrations,
``prefect.yaml``, the sample) and find them without a checkout beside it, and
Prefect must load every deployment's flow from its entrypoint there.

The wheel is built from a copy of the source tree (a build writes ``build/``
and ``*.egg-info`` beside the sources) by pip, which fetches the build backend
from the package index as ``make`` does. The new virtualenv gets pricecast
from the wheel only (``--no-deps``); the test environment's packages are
visible to it through a ``.pth`` file that lists their folder. A path in a
``.pth`` file adds the folder to ``sys.path`` without running the ``.pth``
files inside it, so the test environment's editable pricecast (a finder
installed by such a file) stays out, and ``pipeline`` must come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ("latest_forecasts", "forecast_accuracy", "model_leaderboard")
TINY_ENV = {
    "PRICECAST_WINDOW": "5",
    "PRICECAST_VALIDATION_FRACTION": "0.2",
    "PRICECAST_UNITS": "8",
    "PRICECAST_EPOCHS": "1",
    "PRICECAST_BATCH_SIZE": "256",
    "PRICECAST_HORIZON": "2",
}
#: Where an installed pricecast says it found its files (run in the new virtualenv), and
#: every deployment's entrypoint loaded as ``prefect deploy`` and a worker's flow run load
#: it (``load_flow_from_entrypoint``; a module path, nothing pulled): its flow's name and
#: the file the flow was imported from.
LOCATIONS = """
import json, os, sys
before = dict(os.environ)
import flows
imported_flows_changed_environ = dict(os.environ) != before
from alembic.script import ScriptDirectory
from prefect.flows import load_flow_from_entrypoint
import deployments.serve, pipeline
from pipeline.db.migrate import alembic_config
from pipeline.db.views import SQL_DIR
from pipeline.settings import bundled_sample_path
scripts = ScriptDirectory.from_config(alembic_config(None))
entrypoints = {}
for config in deployments.serve.read_deployment_configs():
    flow = load_flow_from_entrypoint(config["entrypoint"], use_placeholder_flow=False)
    module = sys.modules[flow.fn.__module__]
    entrypoints[config["name"]] = [config["entrypoint"], flow.name, module.__file__]
print(json.dumps({
    "environ_changed": imported_flows_changed_environ,
    "pipeline": pipeline.__file__,
    "flows": flows.__file__,
    "deployments": deployments.serve.__file__,
    "views": str(SQL_DIR),
    "migrations": scripts.dir,
    "revisions": len(list(scripts.walk_revisions())),
    "prefect_yaml": str(deployments.serve.PREFECT_FILE),
    "deployment_names": [d["name"] for d in deployments.serve.read_deployment_configs()],
    "sample": str(bundled_sample_path()),
    "entrypoints": entrypoints,
}))
"""


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command[:3]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,  # pipeline/sql -> ../sql, as git checks it out
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "results"
        ),
    )
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("pricecast-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A virtualenv with pricecast installed from ``wheel``; the test environment's
    packages (not its editable pricecast) visible behind it. Returns its ``bin``."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", where]).stdout.strip())
    shared = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "test-environment.pth").write_text("".join(f"{path}\n" for path in shared))
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
        + ["--no-deps", "--no-index", str(wheel)]
    )
    return venv / "bin"


def _clean_environment(tmp_path: Path) -> dict[str, str]:
    """The test process's environment without its Python path and pricecast or Prefect
    settings, with a home, a database and a Prefect home of its own."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PRICECAST_", "PREFECT_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        TINY_ENV,
        PRICECAST_HOME=str(tmp_path / "home"),
        PRICECAST_DATABASE_URL=f"sqlite:///{tmp_path / 'pricecast.db'}",
        PREFECT_HOME=str(tmp_path / "prefect"),
    )
    return env


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_pipeline_from_another_folder(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    revisions = sorted(p.name for p in (ROOT / "pipeline/db/migrations/versions").glob("*.py"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for view in VIEWS:  # the files of sql/ themselves, not the link
            packaged = archive.read(f"pipeline/sql/{view}.sql")
            assert packaged == (ROOT / "sql" / f"{view}.sql").read_bytes()
        (metadata,) = (name for name in names if name.endswith(".dist-info/METADATA"))
        requires = archive.read(metadata).decode()
    assert revisions and all(f"pipeline/db/migrations/versions/{r}" in names for r in revisions)
    assert {"pipeline/db/migrations/env.py", "pipeline/db/migrations/script.py.mako"} <= names
    assert {"deployments/prefect.yaml", "pipeline/data/sample_prices.csv"} <= names
    templates = {f"pipeline/report/templates/{name}" for name in ("report.html.j2", "report.css")}
    assert templates | {"pipeline/report/templates/sort.js"} <= names
    assert "Requires-Dist: h5py" in requires and "Requires-Dist: keras<4," in requires
    assert "Requires-Dist: jinja2" in requires and "Requires-Dist: matplotlib" in requires

    bin_dir = _fresh_venv(tmp_path, wheel)
    venv = bin_dir.parent.resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_environment(tmp_path)

    found = json.loads(
        _run([str(bin_dir / "python"), "-c", LOCATIONS], cwd=elsewhere, env=env).stdout
    )
    assert found["environ_changed"] is False  # importing flows sets no defaults
    for key in ("pipeline", "flows", "deployments", "views", "migrations", "prefect_yaml"):
        assert Path(found[key]).resolve().is_relative_to(venv), (key, found[key])
    assert Path(found["sample"]).resolve().is_relative_to(venv)
    assert found["revisions"] == len(revisions)
    assert found["deployment_names"] == ["daily", "weekly-retrain", "backfill"]

    loaded = found["entrypoints"]
    assert {name: flow for name, (_, flow, _) in loaded.items()} == {
        "daily": "daily-pipeline",
        "weekly-retrain": "daily-pipeline",
        "backfill": "backfill",
    }
    for entrypoint, _, module_file in loaded.values():
        assert ":" not in entrypoint  # a module path, imported without a checkout
        assert Path(module_file).resolve().is_relative_to(venv), (entrypoint, module_file)

    result = _run([str(bin_dir / "pricecast"), "run", "--source", "demo"], cwd=elsewhere, env=env)
    assert "forecasts: 10 written" in result.stdout, result.stdout
    with sqlite3.connect(tmp_path / "pricecast.db") as conn:
        views = {row[0] for row in conn.execute("select name from sqlite_master where type='view'")}
        latest = conn.execute("select ticker, count(*) from latest_forecasts group by ticker")
        assert dict(latest.fetchall()) == {t: 2 for t in ("AAPL", "AMZN", "GOOG", "JPM", "XOM")}
    assert set(VIEWS) <= views
    assert not list(elsewhere.iterdir())  # nothing written in the working folder
