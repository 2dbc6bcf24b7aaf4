"""The report rendered by a real browser: headless Chromium screenshots more than a blank page.

Chromium is Debian's ``chromium`` package (``apt-get install chromium``). Where
it is missing the test skips with the reason, unless
``PRICECAST_REQUIRE_CHROMIUM=1`` (set by ``.ci/run``), which makes it fail.
The screenshot is decoded here (PNG: zlib and the five row filters), so the
test needs nothing beyond NumPy.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_report import AS_OF, insert_report_rows

from pipeline.db.migrate import open_database
from pipeline.report import write_report

WIDTH, HEIGHT = 1200, 2000
#: The report's colours (pipeline/report/build.py) as Chromium paints them.
HISTORY_BLUE = (29, 78, 216)
FORECAST_ORANGE = (234, 88, 12)
BAND_ON_WHITE = (254, 224, 200)  # #fb923c at 28% opacity over white


def find_chromium() -> str:
    """The Chromium executable, or skip (fail when ``PRICECAST_REQUIRE_CHROMIUM=1``)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    reason = (
        "Chromium is not installed (on Debian: apt-get install chromium), "
        "so the report is not rendered in a browser"
    )
    if os.environ.get("PRICECAST_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{reason}; PRICECAST_REQUIRE_CHROMIUM=1 requires it")
    pytest.skip(reason)


def screenshot(chromium: str, page: Path, png: Path, workdir: Path) -> None:
    """Render ``page`` in headless Chromium at WIDTH x HEIGHT into ``png``."""
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
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={png}",
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
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"Chromium did not finish the screenshot of {page} within 120 s")
    tail = stderr.decode(errors="replace")[-2000:]
    assert process.returncode == 0, f"Chromium exited with {process.returncode}: {tail}"
    assert png.is_file(), f"Chromium wrote no screenshot to {png}: {tail}"


def _paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    to_left, to_up, to_up_left = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
    if to_left <= to_up and to_left <= to_up_left:
        return left
    return up if to_up <= to_up_left else up_left


def decode_png(payload: bytes) -> np.ndarray:
    """An 8-bit, non-interlaced RGB or RGBA PNG as a (height, width, 3) uint8 array (RGB).

    Raises:
        ValueError: not a PNG, or a kind this decoder does not read.
    """
    if payload[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    offset, data, header = 8, [], None
    while offset < len(payload):
        (length,) = struct.unpack(">I", payload[offset : offset + 4])
        kind = payload[offset + 4 : offset + 8]
        body = payload[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            data.append(body)
        elif kind == b"IEND":
            break
        offset += 12 + length
    if header is None:
        raise ValueError("PNG without an IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    channels = {2: 3, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace != 0:
        raise ValueError(
            f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}"
        )
    raw = zlib.decompress(b"".join(data))
    stride = width * channels
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    image = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for index in range(height):
        kind, line = rows[index, 0], rows[index, 1:]
        if kind == 0:  # None
            row = line.copy()
        elif kind == 1:  # Sub: a running sum per channel
            row = np.cumsum(line.reshape(width, channels), axis=0, dtype=np.uint64)
            row = (row % 256).astype(np.uint8).reshape(stride)
        elif kind == 2:  # Up
            row = line + previous  # uint8 arithmetic wraps modulo 256
        elif kind in (3, 4):  # Average, Paeth: each byte depends on the one just decoded
            out = bytearray(stride)
            line_bytes, up_bytes = line.tobytes(), previous.tobytes()
            for i in range(stride):
                left = out[i - channels] if i >= channels else 0
                up = up_bytes[i]
                if kind == 3:
                    predicted = (left + up) >> 1
                else:
                    up_left = up_bytes[i - channels] if i >= channels else 0
                    predicted = _paeth(left, up, up_left)
                out[i] = (line_bytes[i] + predicted) & 0xFF
            row = np.frombuffer(bytes(out), dtype=np.uint8)
        else:
            raise ValueError(f"row {index} has the unknown PNG filter {kind}")
        image[index] = row
        previous = row
    return image.reshape(height, width, channels)[:, :, :3]


def near(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 24) -> np.ndarray:
    """Pixels within ``tolerance`` of ``colour`` on every channel."""
    return (np.abs(image.astype(np.int16) - np.array(colour)) <= tolerance).all(axis=2)


def test_decode_png_reads_every_row_filter() -> None:
    width, height = 5, 6
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    flat = pixels.reshape(height, width * 3).astype(np.int32)
    filtered = bytearray()
    for index in range(height):
        kind = index % 5
        row, up = flat[index], flat[index - 1] if index else np.zeros(width * 3, dtype=np.int32)
        left = np.concatenate([np.zeros(3, dtype=np.int32), row[:-3]])
        up_left = np.concatenate([np.zeros(3, dtype=np.int32), up[:-3]])
        predicted = [
            np.zeros_like(row),
            left,
            up,
            (left + up) // 2,
            np.array([_paeth(a, b, c) for a, b, c in zip(left, up, up_left, strict=True)]),
        ][kind]
        filtered += bytes([kind]) + bytes(((row - predicted) % 256).astype(np.uint8))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(bytes(filtered))) + chunk(b"IEND", b"")
    np.testing.assert_array_equal(decode_png(png), pixels)


def test_chromium_renders_the_report_with_charts(tmp_path: Path) -> None:
    chromium = find_chromium()
    engine = open_database(f"sqlite:///{tmp_path / 'pricecast.db'}")
    try:
        with engine.begin() as conn:
            insert_report_rows(conn)
        with engine.connect() as conn:
            page = write_report(conn, tmp_path / "report.html", AS_OF)
    finally:
        engine.dispose()
    png = tmp_path / "report.png"
    screenshot(chromium, page, png, tmp_path)

    image = decode_png(png.read_bytes())
    where = f"(screenshot: {png})"
    assert image.shape == (HEIGHT, WIDTH, 3), where
    # Ink: text, lines and fills, i.e. anything neither white nor the pale page and card greys.
    ink = (image.min(axis=2) < 200) | (np.ptp(image, axis=2) > 40)
    assert ink.mean() > 0.04, f"only {ink.mean():.1%} of the page is drawn on {where}"
    rows_with_ink = ink.any(axis=1)
    assert (
        rows_with_ink[: HEIGHT // 2].mean() > 0.3 and rows_with_ink[HEIGHT // 2 :].mean() > 0.3
    ), f"the drawing does not run down the page {where}"
    # Many colours: text anti-aliasing, lines, the band, the header.
    quantised = {tuple(c) for c in (image[::2, ::2] // 16).reshape(-1, 3).tolist()}
    assert len(quantised) > 60, f"only {len(quantised)} colours {where}"
    # Dark text (the header band and the headings).
    assert (image.max(axis=2) < 60).sum() > 5000, f"no dark text or header {where}"
    # The price history line runs across the chart; the forecast and its interval are drawn.
    blue = near(image, HISTORY_BLUE)
    assert blue.sum() > 800, f"the close line is missing {where}"
    columns = np.flatnonzero(blue.any(axis=0))
    assert columns.max() - columns.min() > WIDTH // 2, f"the close line is short {where}"
    assert near(image, FORECAST_ORANGE).sum() > 150, f"the forecast line is missing {where}"
    assert near(image, BAND_ON_WHITE, tolerance=10).sum() > 600, f"no interval band {where}"
