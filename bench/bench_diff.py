"""Benchmark: ``runbook diff`` of two 10,000-step runbooks that differ in 100 steps.

SPEC §6: the diff must take under 2 s and under 2x the time ``runbook validate`` takes for one
of them, measured in the same run.  Every figure is a whole process (start-up included),
timed with ``time.perf_counter`` around ``/usr/bin/time -v`` (which gives the peak RSS); the
commands are interleaved so that they share the machine's load, and medians are reported.
Beside them, the floors measured in the same run: the interpreter's start-up and libyaml's
event stream over both files (reading both files cannot cost less).

    .venv/bin/python bench/bench_diff.py [--repeat 5] [--output docs/benchmarks/diff.md]

The two runbooks come from the small generator below (100 phases of 100 steps; every tenth
phase runs its steps in three waves, every third phase is parallel with `needs`).  NEW differs
from OLD in 100 steps: 30 `with` edits, 15 renames, 10 removals, 10 additions, 10 weakened
`on_failure`, 10 shorter timeouts on steps naming a critical risk, 10 dropped `needs`, 5
removed rollbacks; and the pilot wave of one phase is enlarged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = 100
PER_PHASE = 100
BIN = Path(sys.executable).with_name("runbook")

# which step (phase, index) gets which difference in NEW: 100 distinct steps
EDITS: dict[tuple[int, int], str] = {}
_KINDS = [("with", 30), ("rename", 15), ("remove", 10), ("add", 10), ("weaken", 10)]
_KINDS += [("timeout", 10), ("needs", 10), ("rollback", 5)]


def _fits(kind: str, phase: int, index: int) -> bool:
    if (phase, index) in EDITS or (phase, index - 1) in EDITS:  # keep `needs` targets intact
        return False
    if kind == "timeout":  # on a step naming the critical risk
        return index % 5 in (0, 1, 3)
    if kind == "rollback":  # on a step that has one (checks have none)
        return index % 5 != 1
    return True


def _plan_edits() -> None:
    slot = 0
    for kind, count in _KINDS:
        for _ in range(count):
            phase = (slot * 37) % PHASES
            if kind == "needs":  # dropped needs only mean something in parallel phases
                phase = 3 * ((slot * 7) % 33)
            index = 10 + (slot * 13) % 80
            while not _fits(kind, phase, index):
                index += 1
            EDITS[(phase, index)] = kind
            slot += 1


_plan_edits()


def _header(lines: list[str]) -> None:
    lines += [
        "apiVersion: runbook/v1",
        "kind: Runbook",
        "metadata: {name: bench-diff, description: synthetic runbook for the diff benchmark}",
        "vars:",
        "  legacy_db: sqlite:///legacy.db",
        "  new_db: sqlite:///new.db",
        "  batch: {type: integer, default: 500}",
        "secrets:",
        "  api_token: {env: BENCH_TOKEN}",
        "defaults: {timeout: 10m, retries: {attempts: 2, delay: 1s}, on_failure: abort}",
        "risks:",
        "  - {id: data-loss, likelihood: low, impact: critical, contingencies: [page]}",
        "  - {id: slow, likelihood: medium, impact: low, contingencies: [page]}",
        "contingencies:",
        '  - {id: page, action: shell, with: {command: "echo page {{ failed_step.id }}"}}',
        "phases:",
    ]


def _body(p: int, i: int, edit: str | None, waves: bool) -> list[str]:
    """The step's action, with, on_failure, rollback: five kinds in turn."""
    kind = i % 5
    pct = " {{ wave.vars.percent }}" if waves else ""
    on_failure = "rollback" if kind in (0, 3) else "abort"
    if kind == 0:
        where = "id % 100 < {{ wave.vars.percent }}" if waves else "id > 0"
        table = "customers2" if edit == "with" else "customers"
        action = [
            "        action: sql.copy",
            "        with: {source: '{{ vars.legacy_db }}', target: '{{ vars.new_db }}', "
            f"table: {table}, key: id, where: '{where}'}}",
        ]
        rollback = (
            "{action: sql.exec, with: {dsn: '{{ vars.new_db }}', "
            f"sql: 'DELETE FROM {table} WHERE {where}'}}}}"
        )
    elif kind == 1:
        limit = 3 if edit == "with" else 1
        action = [
            "        action: check",
            "        with: {dsn: '{{ vars.new_db }}', query: 'SELECT count(*) FROM customers', "
            f"condition: 'value >= 0', count: 2, interval: 1s, failure_limit: {limit}}}",
        ]
        rollback = ""
    else:
        word = "changed" if edit == "with" else "step"
        action = [
            "        action: shell",
            f'        with: {{command: "echo {word} {p} {i}{pct}"}}',
        ]
        rollback = f'{{action: shell, with: {{command: "echo undo {p} {i}"}}}}'
    out = action
    out.append(f"        risks: [{'data-loss' if kind in (0, 1, 3) else 'slow'}]")
    out.append(f"        on_failure: {'continue' if edit == 'weaken' else on_failure}")
    if edit == "timeout":
        out.append("        timeout: 2m")
    if rollback:
        out.append(f"        rollback: {'none' if edit == 'rollback' else rollback}")
    return out


def _sid(p: int, i: int, new: bool) -> str | None:
    edit = EDITS.get((p, i)) if new else None
    if edit == "remove":
        return None
    return f"p{p}-s{i}" + ("-renamed" if edit == "rename" else "")


def _step(p: int, i: int, new: bool, waves: bool, parallel: bool) -> list[str]:
    edit = EDITS.get((p, i)) if new else None
    sid = _sid(p, i, new)
    if sid is None:
        return []
    out = [f"      - id: {sid}", *_body(p, i, edit, waves)]
    before = _sid(p, i - 1, new) if i else None
    if parallel and before and edit != "needs":
        out.append(f"        needs: [{before}]")
    if edit == "add":
        out += [
            f"      - id: p{p}-s{i}-extra",
            "        action: shell",
            f'        with: {{command: "echo extra {p} {i}"}}',
            "        risks: [slow]",
            "        rollback: none",
        ]
    return out


def generate(new: bool) -> str:
    lines: list[str] = []
    _header(lines)
    for p in range(PHASES):
        waves = p % 10 == 5
        parallel = p % 3 == 0 and not waves
        lines.append(f"  - id: phase-{p}")
        if parallel:
            lines.append("    parallel: true")
        if waves:
            pilot = 5 if new and p == 5 else 1
            lines.append(
                f"    waves: [{{id: pilot, vars: {{percent: {pilot}}}}}, "
                "{id: half, vars: {percent: 50}}, {id: all, vars: {percent: 100}}]"
            )
        lines.append("    steps:")
        for i in range(PER_PHASE):
            lines.extend(_step(p, i, new, waves, parallel))
    return "\n".join(lines) + "\n"


# `runbook diff` with the side-by-side loading switched off: what the diff costs on one core
ONE_CORE = (
    "import runbook_engine.review.load as d; d.PARALLEL_BYTES = 1 << 62\n"
    "from runbook_engine.cli import main; main(['diff', 'old.yaml', 'new.yaml'])"
)


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS KiB, exit code) of one whole process."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], cwd=cwd, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, int(m.group(1)) if m else 0, proc.returncode


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (`nproc`), {platform.machine()}, {cpu}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--output", help="also write the markdown report to this file")
    ns = ap.parse_args()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    (work / "old.yaml").write_text(generate(new=False))
    (work / "new.yaml").write_text(generate(new=True))
    py = sys.executable
    floor_yaml = (
        "import yaml,sys\n"
        "L=getattr(yaml,'CSafeLoader',yaml.SafeLoader)\n"
        "for f in sys.argv[1:]:\n    sum(1 for _ in yaml.parse(open(f).read(), Loader=L))"
    )
    commands = {
        "python start-up (floor)": [py, "-c", "pass"],
        "libyaml events of both files (floor)": [py, "-c", floor_yaml, "old.yaml", "new.yaml"],
        "runbook validate new.yaml": [str(BIN), "validate", "new.yaml"],
        "runbook diff old.yaml new.yaml": [str(BIN), "diff", "old.yaml", "new.yaml"],
        "the same diff in one process (no second core)": [py, "-c", ONE_CORE],
    }
    expect = {
        "runbook validate new.yaml": 0,
        "runbook diff old.yaml new.yaml": 1,
        "the same diff in one process (no second core)": 1,
    }
    for name, cmd in commands.items():  # warm-up (page cache, .pyc) and exit codes
        _, _, code = timed(cmd, work)
        if code != expect.get(name, 0):
            print(f"{name}: exit {code}, expected {expect.get(name, 0)}", file=sys.stderr)
            return 2
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
    for _ in range(ns.repeat):
        for name, cmd in commands.items():
            wall, rss, _ = timed(cmd, work)
            runs[name].append((wall, rss))
    med = {n: statistics.median(w for w, _ in r) for n, r in runs.items()}
    doc = json.loads(
        subprocess.run(
            [str(BIN), "diff", "--format", "json", "old.yaml", "new.yaml"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    steps = {
        n: sum(1 for line in (work / n).read_text().splitlines() if line.startswith("      - id:"))
        for n in ("old.yaml", "new.yaml")
    }
    diff_t, validate_t = med["runbook diff old.yaml new.yaml"], med["runbook validate new.yaml"]
    ratio = diff_t / validate_t
    ok = diff_t < 2.0 and ratio < 2.0
    lines = [
        f"Machine: {machine()}.",
        "",
        f"Command: `{Path(py).relative_to(Path.cwd()) if Path(py).is_relative_to(Path.cwd()) else py} "
        f"bench/bench_diff.py --repeat {ns.repeat}` ({ns.repeat} interleaved runs after a warm-up; "
        "medians; whole processes).",
        "",
        f"Input: old.yaml {steps['old.yaml']:,} steps ({(work / 'old.yaml').stat().st_size / 1e6:.1f} MB), "
        f"new.yaml {steps['new.yaml']:,} steps; 100 phases, 10 with 3 waves. "
        f"The diff found {len(doc['changes'])} changes and {len(doc['flags'])} flags "
        f"({', '.join(sorted({f['rule'] for f in doc['flags']}))}).",
        "",
        "| what | median wall (s) | min–max (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in runs.items():
        walls = [w for w, _ in r]
        rss = statistics.median(m for _, m in r) / 1024
        lines.append(
            f"| {name} | {med[name]:.3f} | {min(walls):.3f}–{max(walls):.3f} | {rss:.0f} |"
        )
    load = os.getloadavg()
    lines += [
        "",
        f"Load average (1 min) before the runs: {load_before:.2f}; after: {load[0]:.2f}, on "
        f"{os.cpu_count()} CPUs (other work on the machine shows here: `diff` loads its two "
        "sides on two cores, so it suffers first when one is busy).",
        "",
        f"diff / validate = {ratio:.2f} (bound: under 2); diff = {diff_t:.2f} s (bound: under 2 s): "
        f"{'PASS' if ok else 'FAIL'}.",
    ]
    report = "\n".join(lines)
    print(report)
    if ns.output:
        Path(ns.output).write_text(report + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
