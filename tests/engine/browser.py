"""Headless Chromium (SERVERS.md's full flag list) and a PNG reader written on ``zlib``, for
the tests that look at the HTML report as a browser draws it."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def flags(profile: str) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]


def chromium(binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run Chromium with a new empty profile that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [binary, *flags(profile), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def screenshot(binary: str, url: str, out: Path, width: int, height: int) -> None:
    r = chromium(binary, f"--screenshot={out}", f"--window-size={width},{height}", url)
    assert out.exists() and out.stat().st_size > 0, r.stderr[-2000:]


def dump_dom(binary: str, url: str) -> str:
    r = chromium(binary, "--virtual-time-budget=15000", "--dump-dom", url)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@dataclass
class Image:
    width: int
    height: int
    rgba: bytes  # 4 bytes per pixel, rows top to bottom

    def count(self, hex_colour: str) -> int:
        """Pixels of exactly this colour (opaque)."""
        want = bytes.fromhex(hex_colour.lstrip("#")) + b"\xff"
        n = 0
        start = self.rgba.find(want)
        while start >= 0:
            if start % 4 == 0:
                n += 1
                start = self.rgba.find(want, start + 4)
            else:
                start = self.rgba.find(want, start + 1)
        return n

    def distinct_colours(self, step: int = 7) -> int:
        seen = set()
        for i in range(0, len(self.rgba) - 3, 4 * step):
            seen.add(self.rgba[i : i + 4])
        return len(seen)

    def share_not_white(self, step: int = 7) -> float:
        total = other = 0
        for i in range(0, len(self.rgba) - 3, 4 * step):
            total += 1
            other += self.rgba[i : i + 3] != b"\xff\xff\xff"
        return other / max(total, 1)


def read_png(path: Path) -> Image:
    """An 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes) as RGBA bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = colour = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    bpp = 4 if colour == 6 else 3
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    out = bytearray()
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        _unfilter(f, line, prev, bpp)
        if bpp == 3:
            rgba = bytearray(width * 4)
            rgba[0::4], rgba[1::4], rgba[2::4] = line[0::3], line[1::3], line[2::3]
            rgba[3::4] = b"\xff" * width
            out += rgba
        else:
            out += line
        prev = line
    return Image(width, height, bytes(out))


def _unfilter(f: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    n = len(line)
    if f == 0:
        return
    if f == 1:
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
    elif f == 2:
        for i in range(n):
            line[i] = (line[i] + prev[i]) & 0xFF
    elif f == 3:
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
    elif f == 4:
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF
    else:
        raise AssertionError(f"unknown PNG filter {f}")
