"""The live console view on a terminal (rich): what runs now, done/total, elapsed, waves.

Finished steps scroll above the live area as plain lines, so the terminal keeps a log.
Imported only when stdout is a terminal (rich costs start-up time).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..format.durations import format_duration
from ..format.printable import printable
from ..masking import Masker
from .lines import describe

_FINAL = {"succeeded", "failed", "skipped", "rolled_back", "rollback_failed"}


class LiveReporter:
    def __init__(self, masker: Masker, total: int, title: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.masker = masker
        self.total = total
        self.title = title
        self.start = time.monotonic()
        self.done = 0
        self.failed = 0
        self.running: dict[str, tuple[float, str]] = {}
        self.waves: dict[str, list[int]] = {}  # wave id -> [done, seen]
        self._lock = threading.Lock()
        self.console = Console(no_color="NO_COLOR" in os.environ, highlight=False)
        self.live = Live(
            get_renderable=self._render,
            console=self.console,
            refresh_per_second=4,
            transient=True,
        )
        self.live.start()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            elapsed = format_duration(time.monotonic() - self.start)
            head = Text(
                f"{self.title}  {self.done}/{self.total} done"
                + (f", {self.failed} failed" if self.failed else "")
                + f"  elapsed {elapsed}",
                style="bold",
            )
            table = Table.grid(padding=(0, 2))
            now = time.monotonic()
            for node, (since, line) in list(self.running.items())[:12]:
                table.add_row(
                    Text("▶ " + node, style="cyan"),
                    format_duration(now - since),
                    Text(printable(self.masker.mask(line)), style="dim"),
                )
            more = len(self.running) - 12
            parts: list[Any] = [head, table]
            if more > 0:
                parts.append(Text(f"  … and {more} more running", style="dim"))
            if self.waves:
                waves = "  ".join(f"{w} {d}/{n}" for w, (d, n) in self.waves.items())
                parts.append(Text("waves: " + waves, style="dim"))
            return Group(*parts)

    def records(self, recs: Sequence[dict[str, Any]]) -> None:
        for rec in recs:
            if rec.get("t") == "step":
                self._track(rec)
            text = describe(rec)
            if text:
                self.console.print(printable(self.masker.mask(text)), markup=False, highlight=False)

    def _track(self, rec: dict[str, Any]) -> None:
        node, status = rec["id"], rec["status"]
        wave = node[node.index("[") + 1 : -1] if node.endswith("]") and "[" in node else None
        with self._lock:
            if status in ("running", "rolling_back"):
                self.running[node] = (time.monotonic(), "")
                if wave is not None and status == "running":
                    self.waves.setdefault(wave, [0, 0])[1] += 1
            elif status in _FINAL or status in ("waiting", "unknown", "pending"):
                self.running.pop(node, None)
                if status in _FINAL:
                    self.done += 1
                    if wave is not None and status == "succeeded":
                        self.waves.setdefault(wave, [0, 0])[0] += 1
                if status in ("failed", "rollback_failed"):
                    self.failed += 1

    def progress(self, node: str, line: str) -> None:
        with self._lock:
            if node in self.running:
                self.running[node] = (self.running[node][0], line)

    def notice(self, text: str) -> None:
        self.console.print(printable(self.masker.mask(text)), markup=False, highlight=False)

    def lease(self, state: str, text: str) -> None:
        self.notice(f"notice: {text}")

    def summary(self, text: str, data: dict[str, Any]) -> None:
        self.live.stop()
        self.console.print(printable(self.masker.mask(text)), markup=False, highlight=False)

    def close(self) -> None:
        self.live.stop()
