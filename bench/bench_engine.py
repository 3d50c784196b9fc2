"""Benchmark of the execution engine (issue 3, "Speed"), next to the physical limits, in one run.

    .venv/bin/python bench/bench_engine.py [--repeat 3] [--no-ansible] [--no-resume]
        [--only NAME ...] [--runbook [LABEL=]PATH ...]

``--runbook`` names the ``runbook`` executable to time (default: this tree's
``.venv/bin/runbook``); given several times, every engine runs every scenario, interleaved
(repeat 1 of each engine, then repeat 2, ...), and a side-by-side table closes the report.

Every figure is a WHOLE PROCESS: ``/usr/bin/time -v .venv/bin/runbook --state-dir FRESH apply
FILE --yes`` with a fresh state dir per run, stdout to /dev/null.  The wall time is
``time.perf_counter`` around that process; the peak memory is ``/usr/bin/time -v``'s "Maximum
resident set size".  Runs are interleaved (repeat 1 of every scenario, then repeat 2, ...) so
that a change of the machine's load hits every scenario alike; min and median are reported.

Per-step figures exclude process start-up (SPEC §6): every runbook starts with the same phase
``base`` of ONE ``wait 0s`` step, and the N measured steps come after it; T(0) is the runbook
with only that phase, run with the same options, so per step = (T(N) - T(0)) / N exactly.

The physical limits are measured in the same run, before and after the scenarios: a bare
``sh -c true`` spawn (``subprocess.run``), one durable append (300 B + fsync, on the
filesystem of the state dirs) and a Python thread hand-off (submit to a ThreadPoolExecutor,
result back through a SimpleQueue: what the engine does per step).

ansible-core is installed by this script with pip into ``bench/out/engine/.venv-ansible``.
Everything it writes goes under ``bench/out/engine/`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "engine"
RUNBOOK = ROOT / ".venv" / "bin" / "runbook"
ANSIBLE_VENV = OUT / ".venv-ansible"
ANSIBLE_PIN = "ansible-core>=2.18,<2.20"

# -- runbooks ------------------------------------------------------------------------------------

WAIT = "{{id: {id}, action: wait, with: {{duration: 0s}}}}"
SHELL = "{{id: {id}, action: shell, with: {{command: '{cmd}'}}, rollback: none}}"
ARGV = "{{id: {id}, action: shell, with: {{argv: ['{cmd}']}}, rollback: none}}"


def runbook(name: str, phases: list[tuple[str, str, list[str]]]) -> str:
    """``phases``: (id, extra phase keys, step lines); a phase ``base`` (one wait 0s) first."""
    lines = ["apiVersion: runbook/v1", "kind: Runbook", f"metadata: {{name: {name}}}", "phases:"]
    lines += ["  - id: base", "    steps:", "      - " + WAIT.format(id="base-0")]
    for pid, extra, steps in phases:
        lines.append(f"  - id: {pid}")
        if extra:
            lines.append(f"    {extra}")
        lines.append("    steps:")
        lines += ["      - " + s for s in steps]
    return "\n".join(lines) + "\n"


def steps(n: int, kind: str = "wait", cmd: str = "true", fail_at: int | None = None) -> list[str]:
    out = []
    for i in range(n):
        template = WAIT if kind == "wait" else SHELL if kind == "shell" else ARGV
        if fail_at is not None and i == fail_at:
            out.append(SHELL.format(id=f"s{i}", cmd=cmd))
        else:
            out.append(template.format(id=f"s{i}", cmd=cmd))
    return out


def chains(count: int, length: int, seconds: float) -> list[tuple[str, str, list[str]]]:
    """``count`` independent phases (``needs: [base]``) of ``length`` sequential sleeps."""
    return [
        (
            f"chain{c}",
            "needs: [base]",
            [SHELL.format(id=f"c{c}-{i}", cmd=f"sleep {seconds}") for i in range(length)],
        )
        for c in range(count)
    ]


def write_runbooks() -> dict[str, Path]:
    files = {
        "base": runbook("bench", []),
        "wait-1k": runbook("bench", [("p", "", steps(1000))]),
        "wait-10k": runbook("bench", [("p", "", steps(10000))]),
        "shell-1k": runbook("bench", [("p", "", steps(1000, "shell"))]),
        "wait-1k-par": runbook("bench", [("p", "parallel: true", steps(1000))]),
        "wait-10k-par": runbook("bench", [("p", "parallel: true", steps(10000))]),
        "shell-1k-par": runbook("bench", [("p", "parallel: true", steps(1000, "shell"))]),
        "argv-200": runbook("bench", [("p", "", steps(200, "argv", "/bin/true"))]),
        "chains": runbook("bench", chains(8, 5, 0.5)),
        "resume-fail": runbook("bench", [("p", "", steps(10000, fail_at=5000, cmd="false"))]),
        "resume-fixed": runbook("bench", [("p", "", steps(10000, fail_at=5000, cmd="true"))]),
    }
    paths = {}
    for name, text in files.items():
        path = OUT / "runbooks" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths[name] = path
    return paths


def playbook(n: int) -> str:
    head = "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:"
    if n == 0:
        return head + " []\n"
    return head + "\n" + "".join(f"    - command: /bin/true\n      name: t{i}\n" for i in range(n))


# -- whole-process measurements ------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    rss_kb: int
    first_step: float | None = None  # process start -> first step `running` record of this run
    in_run: float | None = None  # first `running` -> last step record, from the journal
    cpu: float | None = None  # user + system seconds of the process (less load-dependent)


@dataclass
class Series:
    name: str
    cmd: str
    runs: list[Run] = field(default_factory=list)

    def walls(self) -> list[float]:
        return [r.wall for r in self.runs]

    def stat(self, key: str) -> tuple[float, float]:
        values = [getattr(r, key) for r in self.runs if getattr(r, key) is not None]
        return (min(values), statistics.median(values)) if values else (float("nan"),) * 2


def timed(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[float, int, int, float, float]:
    """(wall seconds, max RSS KB, exit code, wall-clock start, CPU seconds) of one process."""
    with tempfile.NamedTemporaryFile("r", dir=OUT, suffix=".time") as tfile:
        start_wall = time.time()
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-v", "-o", tfile.name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=OUT,
        )
        wall = time.perf_counter() - t0
        rss, cpu = 0, 0.0
        for line in Path(tfile.name).read_text().splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.rsplit(":", 1)[1])
            elif "User time (seconds)" in line or "System time (seconds)" in line:
                cpu += float(line.rsplit(":", 1)[1])
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
    return wall, rss, proc.returncode, start_wall, cpu


def journal_records(state_dir: Path) -> list[dict[str, Any]]:
    """The journal's records: the ``journal`` table of ``state.db``, or (an engine from before
    the SQLite state) the framed lines of ``journal.jsonl``."""
    db = state_dir / "bench" / "state.db"
    if db.exists():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return [json.loads(r) for (r,) in con.execute("SELECT rec FROM journal ORDER BY seq")]
        finally:
            con.close()
    path = state_dir / "bench" / "journal.jsonl"
    return [json.loads(line[9:]) for line in path.read_bytes().splitlines()]


def _ts(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def journal_times(recs: list[dict[str, Any]], start_wall: float) -> tuple[float, float]:
    """For the last run in the journal: process start -> its first step `running` record,
    and that record -> its last step record."""
    last_run = max(i for i, r in enumerate(recs) if r.get("t") == "run" and r.get("pid"))
    steps_ = [r for r in recs[last_run:] if r.get("t") == "step"]
    first = next(r for r in steps_ if r["status"] == "running")
    return _ts(first["at"]) - start_wall, _ts(steps_[-1]["at"]) - _ts(first["at"])


def apply(
    exe: Path, file: Path, extra: list[str], expect: int, state_dir: Path | None = None
) -> Run:
    own = state_dir is None
    sd = Path(tempfile.mkdtemp(prefix="state-", dir=OUT)) if state_dir is None else state_dir
    argv = [str(exe), "--state-dir", str(sd), "apply", str(file), "--yes", *extra]
    wall, rss, code, start_wall, cpu = timed(argv)
    if code != expect:
        raise SystemExit(f"{' '.join(argv)}: exit {code}, expected {expect}")
    first, in_run = journal_times(journal_records(sd), start_wall)
    if own:
        shutil.rmtree(sd)
    return Run(wall, rss, first, in_run, cpu)


def resume_run(exe: Path, paths: dict[str, Path]) -> tuple[Run, Run]:
    """Apply the runbook whose step s5000 fails (exit 1: stops half-way), then the fixed one."""
    sd = Path(tempfile.mkdtemp(prefix="state-", dir=OUT))
    try:
        first = apply(exe, paths["resume-fail"], [], 1, sd)
        second = apply(exe, paths["resume-fixed"], [], 0, sd)
        recs = journal_records(sd)
        done = sum(1 for r in recs if r.get("t") == "step" and r["status"] == "succeeded")
        assert done == 10001, done  # base-0 + s0..s9999, each once
    finally:
        shutil.rmtree(sd)
    return first, second


# -- ansible -------------------------------------------------------------------------------------


def ansible_setup() -> str:
    py = ANSIBLE_VENV / "bin" / "python"
    if not (ANSIBLE_VENV / "bin" / "ansible-playbook").exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", ANSIBLE_PIN], check=True)
    out = subprocess.run(
        [str(py), "-m", "pip", "show", "ansible-core"], capture_output=True, text=True, check=True
    ).stdout
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Version"))


def ansible(n: int) -> Run:
    book = OUT / "ansible" / f"tasks-{n}.yml"
    book.parent.mkdir(parents=True, exist_ok=True)
    book.write_text(playbook(n))
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(OUT / "ansible" / "home"),
        "ANSIBLE_LOCAL_TEMP": str(OUT / "ansible" / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": str(ANSIBLE_VENV / "bin" / "python"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
    }
    argv = [str(ANSIBLE_VENV / "bin" / "ansible-playbook"), "-i", "localhost,", str(book)]
    wall, rss, code, _, _ = timed(argv, env)
    if code != 0:
        raise SystemExit(f"ansible-playbook {book}: exit {code}")
    return Run(wall, rss)


# -- physical limits -----------------------------------------------------------------------------


def _med(fn: Callable[[], None], n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def limits() -> dict[str, tuple[float, float]]:
    out = {}
    out["spawn sh -c true"] = _med(lambda: subprocess.run(["sh", "-c", "true"], check=True), 300)
    path = OUT / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
    line = b"x" * 299 + b"\n"

    def append() -> None:
        os.write(fd, line)
        os.fsync(fd)

    try:
        out["append 300 B + fsync"] = _med(append, 1000)
    finally:
        os.close(fd)
        path.unlink()
    pool = ThreadPoolExecutor(max_workers=1)
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def hop() -> None:
        pool.submit(back.put, 1)
        back.get(timeout=5)

    out["thread hand-off (submit + result)"] = _med(hop, 3000)
    pool.shutdown()
    return out


# -- main ----------------------------------------------------------------------------------------

SCENARIOS: dict[str, tuple[str, list[str], int]] = {
    # name: (runbook, extra apply options, N measured steps)
    "base": ("base", [], 0),
    "wait-1k": ("wait-1k", [], 1000),
    "wait-10k": ("wait-10k", [], 10000),
    "shell-1k": ("shell-1k", [], 1000),
    "base-p8": ("base", ["--max-parallel", "8"], 0),
    "wait-1k-par": ("wait-1k-par", ["--max-parallel", "8"], 1000),
    "wait-10k-par": ("wait-10k-par", ["--max-parallel", "8"], 10000),
    "shell-1k-par": ("shell-1k-par", ["--max-parallel", "8"], 1000),
    "argv-200": ("argv-200", [], 200),
    "chains": ("chains", ["--max-parallel", "8"], 40),
}
BASE_OF = {k: ("base-p8" if "--max-parallel" in v[1] else "base") for k, v in SCENARIOS.items()}


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    return {
        "nproc": os.cpu_count(),
        "arch": platform.machine(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        "date": datetime.now().isoformat(timespec="seconds"),
    }


def per_step(series: dict[str, Series], name: str) -> tuple[float, float]:
    """(T(N) - T(0)) / N in seconds, from the minima and from the medians."""
    s, base, n = series[name], series[BASE_OF[name]], SCENARIOS[name][2]
    (wmin, wmed), (bmin, bmed) = s.stat("wall"), base.stat("wall")
    return (wmin - bmin) / n, (wmed - bmed) / n


def rows(series: dict[str, Series]) -> Iterator[str]:
    ms = 1000.0
    for name, s in series.items():
        wmin, wmed = s.stat("wall")
        rss = max(r.rss_kb for r in s.runs) / 1024
        _f_min, f_med = s.stat("first_step")
        line = f"| {name} | {wmin:.3f} | {wmed:.3f} | {rss:.0f} | {f_med * ms:.0f} |"
        n = SCENARIOS[name][2]
        if n and name != "chains" and BASE_OF[name] in series:
            pmin, pmed = per_step(series, name)
            _i_min, i_med = s.stat("in_run")
            line += f" {pmin * ms:.3f} | {pmed * ms:.3f} | {i_med / n * ms:.3f} |"
        else:
            line += " | | |"
        yield line


def uncompiled(exe: Path) -> tuple[str, int]:
    """(package folder, modules without bytecode) of the engine behind ``exe``.  With
    PYTHONDONTWRITEBYTECODE set (as here), an editable tree is compiled again by every process:
    its start-up would include that."""
    python = exe.read_text(errors="replace").splitlines()[0].removeprefix("#!").strip()
    probe = "import os, runbook_engine; print(os.path.dirname(runbook_engine.__file__))"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    folder = Path(out.stdout.strip())
    tag = sys.implementation.cache_tag
    missing = [
        p
        for p in folder.rglob("*.py")
        if not (p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").exists()
    ]
    return str(folder), len(missing)


def engines(values: list[str] | None) -> dict[str, Path]:
    """``[LABEL=]PATH`` -> {label: executable}; the default is this tree's .venv."""
    out: dict[str, Path] = {}
    for value in values or [str(RUNBOOK)]:
        label, _, path = value.rpartition("=")
        exe = Path(path).resolve()
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"--runbook {value}: not an executable")
        out[label or path] = exe
        folder, missing = uncompiled(exe)
        if missing:
            print(
                f"warning: {missing} modules of {folder} have no bytecode: every process "
                f"compiles them; first run: {exe.parent / 'python'} -m compileall -q {folder}",
                file=sys.stderr,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ansible", action="store_true")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--only", nargs="*", help="scenarios to run (their T(0) is added)")
    ap.add_argument(
        "--runbook",
        action="append",
        metavar="[LABEL=]PATH",
        help="the runbook executable to time (default: this tree's .venv); repeat to compare",
    )
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    exes = engines(args.runbook)
    info = machine()
    info["engines"] = {k: str(v) for k, v in exes.items()}
    print(json.dumps(info))
    paths = write_runbooks()
    names = list(SCENARIOS)
    if args.only:
        names = [n for n in names if n in args.only or n in {BASE_OF[o] for o in args.only}]
    ansible_version = None if args.no_ansible else ansible_setup()
    before = limits()
    series = {e: {n: Series(n, SCENARIOS[n][0]) for n in names} for e in exes}
    resume: dict[str, list[tuple[Run, Run]]] = {e: [] for e in exes}
    ans: dict[int, list[Run]] = {0: [], 200: []}
    for rep in range(args.repeat):
        for engine, exe in exes.items():
            for name in names:
                book, extra, _n = SCENARIOS[name]
                series[engine][name].runs.append(apply(exe, paths[book], extra, 0))
                print(f"rep {rep} {engine} {name}: {series[engine][name].runs[-1]}", flush=True)
            if not args.no_resume:
                resume[engine].append(resume_run(exe, paths))
                print(f"rep {rep} {engine} resume: {resume[engine][-1]}", flush=True)
        if ansible_version:
            for n in ans:
                ans[n].append(ansible(n))
                print(f"rep {rep} ansible-{n}: {ans[n][-1]}", flush=True)
    after = limits()
    info["loadavg_end"] = os.getloadavg()
    ms = 1000.0
    print("\n## machine\n")
    print(json.dumps(info))
    print("\n## limits (min / median, ms), before | after the scenarios\n")
    for k in before:
        b, a = before[k], after[k]
        print(f"| {k} | {b[0] * ms:.3f} / {b[1] * ms:.3f} | {a[0] * ms:.3f} / {a[1] * ms:.3f} |")
    for engine in exes:
        if len(exes) > 1:
            print(f"\n# engine {engine} ({exes[engine]})")
        report(before, after, series[engine], resume[engine], ans, ansible_version)
    if len(exes) > 1:
        side_by_side(series)
    dump = {
        "machine": info,
        "limits_before": before,
        "limits_after": after,
        "series": {
            e: {k: [vars(r) for r in s.runs] for k, s in ss.items()} for e, ss in series.items()
        },
        "resume": {e: [[vars(a), vars(b)] for a, b in rs] for e, rs in resume.items()},
        "ansible": {
            "version": ansible_version,
            **{str(k): [vars(r) for r in v] for k, v in ans.items()},
        },
    }
    (OUT / "results.json").write_text(json.dumps(dump, indent=1))


def side_by_side(series: dict[str, dict[str, Series]]) -> None:
    """Medians of every engine, scenario by scenario: wall, start -> first step, peak RSS,
    and per step (T(N) - T(0)) / N of the wall time and of the CPU time (user + system)."""
    ms = 1000.0
    labels = list(series)
    print("\n## side by side (medians)\n")
    cols = ["wall s", "start -> first step ms", "RSS MB", "per step ms", "CPU per step ms"]
    print("| scenario | " + " | ".join(f"{e}: {c}" for e in labels for c in cols) + " |")
    print("|---|" + "---|" * (len(cols) * len(labels)))
    for name in next(iter(series.values())):
        cells = []
        for e in labels:
            s, n = series[e][name], SCENARIOS[name][2]
            per = cpu = ""
            if n and name != "chains" and BASE_OF[name] in series[e]:
                per = f"{per_step(series[e], name)[1] * ms:.3f}"
                base = series[e][BASE_OF[name]].stat("cpu")[1]
                cpu = f"{(s.stat('cpu')[1] - base) / n * ms:.3f}"
            rss = max(r.rss_kb for r in s.runs) / 1024
            cells += [
                f"{s.stat('wall')[1]:.3f}",
                f"{s.stat('first_step')[1] * ms:.0f}",
                f"{rss:.0f}",
                per,
                cpu,
            ]
        print(f"| {name} | {' | '.join(cells)} |")
    for a, b in (("wait-1k", "wait-10k"), ("wait-1k-par", "wait-10k-par")):
        for e in labels:
            if a in series[e] and b in series[e]:
                ratio = per_step(series[e], b)[1] / per_step(series[e], a)[1]
                print(f"- {e}: {b} / {a} per step: {ratio:.2f}x")


def report(
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
    series: dict[str, Series],
    resume: list[tuple[Run, Run]],
    ans: dict[int, list[Run]],
    ansible_version: str | None,
) -> None:
    """One engine's tables and goals."""
    ms = 1000.0
    goals: list[tuple[str, str, str, bool]] = []  # (goal, figure, compared with, met)
    fsync = statistics.median([before["append 300 B + fsync"][1], after["append 300 B + fsync"][1]])
    spawn = statistics.median([before["spawn sh -c true"][1], after["spawn sh -c true"][1]])
    print("\n## whole processes\n")
    print(
        "| scenario | wall min s | wall median s | max RSS MB | start -> first step ms (median)"
        " | per step ms (mins) | per step ms (medians) | per step ms in the journal (median) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for line in rows(series):
        print(line)
    for name, limit in (("wait-1k", 0.5), ("wait-10k", 0.5), ("shell-1k", 2.0)):
        if name in series:
            floor = fsync + (spawn if "shell" in name else 0.0)
            pmed = per_step(series, name)[1] * ms
            goals.append(
                (
                    f"{name}: < {limit} ms per step",
                    f"{pmed:.3f} ms",
                    f"floor {floor * ms:.3f} ms (fsync{' + spawn' if 'shell' in name else ''})",
                    pmed < limit,
                )
            )
    for a, b in (("wait-1k", "wait-10k"), ("wait-1k-par", "wait-10k-par")):
        if a in series and b in series:
            ratio = per_step(series, b)[1] / per_step(series, a)[1]
            goals.append((f"{b} per step within 1.2x of {a}", f"{ratio:.2f}x", "", ratio <= 1.2))
    if "chains" in series:
        wmed = series["chains"].stat("wall")[1]
        span = wmed - series[BASE_OF["chains"]].stat("wall")[1]
        in_run = series["chains"].stat("in_run")[1]
        goals.append(
            (
                "8 chains x 5 x sleep 0.5, --max-parallel 8: within 1.1x of 2.5 s",
                f"{span:.3f} s = {span / 2.5:.3f}x (wall {wmed:.3f} s; journal {in_run:.3f} s)",
                "ideal 2.5 s",
                span <= 2.75,
            )
        )
    if "wait-10k" in series:
        rss = max(r.rss_kb for r in series["wait-10k"].runs) / 1024
        goals.append(("wait-10k peak RSS < 300 MB", f"{rss:.0f} MB", "", rss < 300))
    if resume:
        fails = Series("resume: first apply (fails at s5000)", "", [r[0] for r in resume])
        fixed = Series("resume: second apply", "", [r[1] for r in resume])
        print("\n## resume\n")
        for s in (fails, fixed):
            (wmin, wmed), (fmin, fmed) = s.stat("wall"), s.stat("first_step")
            rss = max(r.rss_kb for r in s.runs) / 1024
            print(
                f"| {s.name} | wall {wmin:.3f} / {wmed:.3f} s | start -> first step "
                f"{fmin * ms:.0f} / {fmed * ms:.0f} ms | max RSS {rss:.0f} MB |"
            )
        fmed = fixed.stat("first_step")[1]
        fresh = series["wait-10k"].stat("first_step")[1] if "wait-10k" in series else float("nan")
        goals.append(
            (
                "resume of 10k steps: start -> first step < 1 s",
                f"{fmed * ms:.0f} ms",
                f"fresh wait-10k: {fresh * ms:.0f} ms",
                fmed < 1.0,
            )
        )
    if ansible_version:
        goals.extend(ansible_report(series, ans, ansible_version))
    print("\n## goals\n")
    print("| goal | figure (medians) | compared with | met |\n|---|---|---|---|")
    for goal, figure, against, met in goals:
        print(f"| {goal} | {figure} | {against} | {'yes' if met else 'NO'} |")


def ansible_report(
    series: dict[str, Series], ans: dict[int, list[Run]], version: str
) -> list[tuple[str, str, str, bool]]:
    ms = 1000.0
    a0 = statistics.median(r.wall for r in ans[0])
    a200 = statistics.median(r.wall for r in ans[200])
    a0min, a200min = min(r.wall for r in ans[0]), min(r.wall for r in ans[200])
    per = (a200 - a0) / 200
    print(f"\n## ansible-core {version}\n")
    print(
        f"| ansible 0 tasks | {a0min:.3f} / {a0:.3f} s | 200 tasks | {a200min:.3f} / "
        f"{a200:.3f} s | per task {(a200min - a0min) / 200 * ms:.2f} / {per * ms:.2f} ms |"
    )
    if "argv-200" not in series:
        return []
    ours = per_step(series, "argv-200")[1]
    return [
        (
            "200 x /bin/true: over 100x faster per step than ansible-core",
            f"{per / ours:.0f}x ({ours * ms:.3f} ms vs {per * ms:.1f} ms)",
            f"ansible-core {version}",
            per / ours > 100,
        )
    ]


if __name__ == "__main__":
    main()
