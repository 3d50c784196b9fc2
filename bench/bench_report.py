"""Benchmark of ``runbook report`` on a real 10,000-step run, and of Chromium opening the page.

    .venv/bin/python bench/bench_report.py [--steps 10000] [--repeat 3] [--no-browser]

1. Writes a runbook of N steps (100 phases; every tenth phase has 4 waves with a `check` gate
   per wave; one step of the last phase fails under `continue` and fires a contingency; one
   step needs a retry)
   and APPLIES it for real (``runbook apply --yes --max-parallel 8``) into a temp dir, so that
   the journal is the engine's own (about 4 records per step).  The same for a 1-step runbook.
2. Times ``runbook report FILE --format F --output OUT`` as a whole process (start-up, loading
   and validating the runbook, reading the journal, rendering, writing), the median of
   ``--repeat`` runs, for each format; the per-step figure is (T(N) − T(1)) / (N − 1).
3. Opens the HTML page in headless Chromium with SERVERS.md's flags: a screenshot (the timeline's
   succeeded-bar colour counted in its pixels) and ``--dump-dom`` (the SVG is in the DOM), timed.

Prints a Markdown table (the figures of docs/benchmarks/report.md) and the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUNBOOK = str(Path(sys.executable).with_name("runbook"))
PHASES = 100
LIMIT_S = 5.0


def runbook_text(n: int) -> str:
    """N step instances: sequential and parallel phases of `wait 0s`, wave phases with gates."""
    out = [
        "apiVersion: runbook/v1",
        "kind: Runbook",
        "metadata: {name: bench-report, description: synthetic run for the report benchmark}",
        "risks:",
        "  - {id: flaky, description: a step fails, likelihood: low, impact: low,"
        " contingencies: [page]}",
        "contingencies:",
        "  - {id: page, action: shell, with: {command: 'echo paged'}}",
        "phases:",
    ]
    phases = min(PHASES, n)
    per = [n // phases + (1 if i < n % phases else 0) for i in range(phases)]
    for p, count in enumerate(per):
        waves = 4 if p % 10 == 5 and count >= 8 and count % 4 == 0 else 0
        out.append(f"  - id: phase-{p}")
        out.append(f"    parallel: {'true' if p % 2 else 'false'}")
        if waves:
            out.append("    waves: [" + ", ".join(f"{{id: w{w}}}" for w in range(waves)) + "]")
        out.append("    steps:")
        steps = count // waves if waves else count
        for s in range(steps):
            sid = f"s{p}-{s}"
            if waves and s == steps - 1:
                out.append(
                    f"      - {{id: {sid}, action: check, with: {{command: 'echo 0.0{s % 10}',"
                    " condition: 'value < 0.5', count: 2, interval: 0s}}"
                )
            elif p == phases - 1 and s == 1:  # last phase: nothing downstream to skip
                out.append(
                    f"      - {{id: {sid}, action: shell, with: {{command: 'exit 1'}},"
                    " on_failure: continue, risks: [flaky], rollback: none}"
                )
            elif p == 7 and s == 2:
                cmd = "n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; test $n -ge 1"
                out.append(
                    f"      - {{id: {sid}, action: shell, with: {{command: '{cmd}'}},"
                    " retries: {attempts: 2, delay: 0s}, rollback: none}"
                )
            else:
                out.append(f"      - {{id: {sid}, action: wait, with: {{duration: 0s}}}}")
    return "\n".join(out) + "\n"


def apply(work: Path, n: int) -> tuple[Path, float]:
    work.mkdir(parents=True, exist_ok=True)
    file = work / "run.yaml"
    file.write_text(runbook_text(n))
    t0 = time.perf_counter()
    r = subprocess.run(
        [RUNBOOK, "apply", str(file), "--yes", "--max-parallel", "8"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - t0
    assert r.returncode in (0, 1), r.stderr[-2000:]
    return file, took


def _timed(work: Path, *args: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([RUNBOOK, *args], cwd=work, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    return took


def report_time(work: Path, fmt: str, out: Path) -> float:
    return _timed(work, "report", "run.yaml", "--format", fmt, "--output", str(out))


def browser(page: Path) -> dict[str, Any]:
    from runbook_engine.graph.colours import STYLES
    from tests.engine.browser import dump_dom, find_chromium, read_png, screenshot

    binary = find_chromium()
    if binary is None:
        return {"skipped": "no chromium"}
    png = page.with_suffix(".png")
    t0 = time.perf_counter()
    screenshot(binary, page.as_uri(), png, 1280, 1600)
    shot = time.perf_counter() - t0
    t0 = time.perf_counter()
    dom = dump_dom(binary, page.as_uri())
    dumped = time.perf_counter() - t0
    image = read_png(png)
    return {
        "screenshot_s": round(shot, 2),
        "dump_dom_s": round(dumped, 2),
        "green_pixels": image.count(STYLES["succeeded"].strong),
        "svg_in_dom": '<svg class="gantt"' in dom,
        "rects_in_dom": dom.count("<rect "),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    res: dict[str, Any] = {"steps": args.steps, "machine": _machine()}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        _, res["apply_big_s"] = apply(big, args.steps)
        _, res["apply_small_s"] = apply(small, 1)
        journal = big / ".runbook" / "bench-report" / "journal.jsonl"
        res["journal_bytes"] = journal.stat().st_size
        res["journal_records"] = journal.read_bytes().count(b"\n")
        res["validate_s"] = round(
            statistics.median(_timed(big, "validate", "run.yaml") for _ in range(args.repeat)), 3
        )
        for fmt in ("html", "markdown", "json"):
            ext = {"markdown": "md"}.get(fmt, fmt)
            times_big = [report_time(big, fmt, big / f"r.{ext}") for _ in range(args.repeat)]
            times_small = [report_time(small, fmt, small / f"r.{ext}") for _ in range(args.repeat)]
            tb, ts = statistics.median(times_big), statistics.median(times_small)
            res[fmt] = {
                "T_N_s": round(tb, 3),
                "T_1_s": round(ts, 3),
                "per_step_ms": round((tb - ts) / max(args.steps - 1, 1) * 1000, 4),
                "bytes": (big / f"r.{ext}").stat().st_size,
            }
        if not args.no_browser:
            res["browser"] = browser(big / "r.html")
    print(_table(res))
    print()
    print(json.dumps(res, indent=2))
    return 0 if res["html"]["T_N_s"] < LIMIT_S else 1


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python " + (
        platform.python_version()
    )


def _table(res: dict[str, Any]) -> str:
    n = res["steps"]
    lines = [
        f"{n:,}-step run: apply {res['apply_big_s']:.1f} s; journal "
        f"{res['journal_records']:,} records, {res['journal_bytes'] / 1e6:.1f} MB",
        "",
        f"| format | T({n:,}) whole process | T(1) | per step | output |",
        "|---|---|---|---|---|",
    ]
    for fmt in ("html", "markdown", "json"):
        r = res[fmt]
        lines.append(
            f"| {fmt} | {r['T_N_s']:.2f} s | {r['T_1_s']:.2f} s | {r['per_step_ms']:.3f} ms "
            f"| {r['bytes'] / 1e3:,.0f} kB |"
        )
    lines += ["", f"`runbook validate` of the same {n:,}-step file: {res['validate_s']:.2f} s"]
    b = res.get("browser")
    if b and "skipped" not in b:
        lines += [
            "",
            f"Chromium: screenshot {b['screenshot_s']:.1f} s ({b['green_pixels']:,} pixels of "
            f"succeeded bars), --dump-dom {b['dump_dom_s']:.1f} s ({b['rects_in_dom']:,} SVG "
            f"rects in the DOM, timeline present: {b['svg_in_dom']})",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
