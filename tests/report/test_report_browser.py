"""The report in a real browser: headless Chromium runs its script without an error,
and clicks on the overview's "Move" heading sort the rows by their forecast move.

What the other tests cannot see: that the inline script runs in a browser and
sorts by the keys the page carries. Chromium prints the DOM after the page's
scripts ran (``--dump-dom``). It loads a copy of the report with two test
scripts added: one before the page's own (it records any error), one after
it (it clicks the heading twice). The page's structure itself is checked in
``test_report.py``.

Chromium is Debian's ``chromium`` package (``apt-get install chromium``). Where
it is missing the test skips with the reason, unless
``PRICECAST_REQUIRE_CHROMIUM=1`` (set by ``.ci/run``), which makes it fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from report_page import parse
from test_report import AS_OF, insert_report_rows

from pipeline.db.migrate import open_database
from pipeline.report import write_report

#: Before the page's script: every uncaught error goes into an attribute of <html>.
RECORD_ERRORS = (
    "<script>window.addEventListener('error', function (event) {"
    " var root = document.documentElement;"
    " root.setAttribute('data-errors', (root.getAttribute('data-errors') || '') + event.message);"
    " });</script>"
)
#: After it: click the "Move" heading's button (the page's script made it) twice: largest
#: move first, then smallest first.
CLICK_MOVE = (
    "<script>var move = document.querySelector('#overview-table th[data-sort=\"move\"] button');"
    " move.click(); move.click();"
    " document.documentElement.setAttribute('data-clicked', 'move twice');</script>"
)


def find_chromium() -> str:
    """The Chromium executable, or skip (fail when ``PRICECAST_REQUIRE_CHROMIUM=1``)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    reason = (
        "Chromium is not installed (on Debian: apt-get install chromium), "
        "so the report is not run in a browser"
    )
    if os.environ.get("PRICECAST_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{reason}; PRICECAST_REQUIRE_CHROMIUM=1 requires it")
    pytest.skip(reason)


def dump_dom(chromium: str, page: Path, workdir: Path) -> str:
    """The DOM of ``page`` after its scripts ran, as headless Chromium serialises it."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-crash-reporter",
        f"--user-data-dir={workdir / 'profile'}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(workdir)}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"Chromium did not load {page} within 120 s")
    tail = stderr.decode(errors="replace")[-2000:]
    assert process.returncode == 0, f"Chromium exited with {process.returncode}: {tail}"
    dom = stdout.decode()
    assert "<html" in dom, f"Chromium printed no DOM: {tail}"
    return dom


def test_chromium_runs_the_script_and_clicks_sort_the_overview(tmp_path: Path) -> None:
    chromium = find_chromium()
    engine = open_database(f"sqlite:///{tmp_path / 'pricecast.db'}")
    try:
        with engine.begin() as conn:
            insert_report_rows(conn)  # AAA moves +0.4 %, BBB -0.2 %
        with engine.connect() as conn:
            report = write_report(conn, tmp_path / "report.html", AS_OF)
    finally:
        engine.dispose()
    document = report.read_text(encoding="utf-8")
    assert document.count("<script>") == 1 and document.count("</body>") == 1
    harness = tmp_path / "harness.html"
    harness.write_text(
        document.replace("<script>", RECORD_ERRORS + "<script>", 1).replace(
            "</body>", CLICK_MOVE + "</body>"
        ),
        encoding="utf-8",
    )

    page = parse(dump_dom(chromium, harness, tmp_path))
    root = page.find("html")
    assert "data-errors" not in root.attrs, root.attrs["data-errors"]
    assert root.attrs.get("data-clicked") == "move twice"
    table = page.by_id("overview-table")
    headings = {th.attrs["data-sort"]: th for th in table.iter("th") if "data-sort" in th.attrs}
    assert all(list(th.iter("button")) for th in headings.values())  # the script made buttons
    assert headings["move"].attrs["aria-sort"] == "ascending"
    assert "aria-sort" not in headings["order"].attrs
    rows = list(table.find("tbody").iter("tr"))
    moves = [float(row.attrs["data-move"]) for row in rows]
    assert [row.attrs["data-ticker"] for row in rows] == ["BBB", "AAA"]  # not the page's order
    assert moves == sorted(moves)
    assert len(list(page.iter("svg", class_="chart"))) == 2
