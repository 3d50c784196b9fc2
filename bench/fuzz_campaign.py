"""Fuzz campaign: thousands of mutated example runbooks through `runbook validate`.

    .venv/bin/python bench/fuzz_campaign.py                          # 10,000 real processes
    .venv/bin/python bench/fuzz_campaign.py --mode inprocess          # the same, in-process
    .venv/bin/python bench/fuzz_campaign.py --commands validate,plan,show,graph --mutants 2000
    .venv/bin/python bench/fuzz_campaign.py --replay 4711 --keep /tmp/m   # write mutant 4711

Mutant K of seed S is the example runbook ``random.Random(f"S:K")`` picks, with the mutations
it draws (bench/fuzz_mutations.py), so any mutant can be replayed on its own.

Each mutant is written to a file in a private folder and checked with each command in turn
(the next one only after an exit 0: `plan` needs a valid runbook). A result is an **internal
error** when the exit code is not 0 or 2, when the output says "internal error" or holds a
Python traceback, or when any file other than the mutant appeared in the folder (a crash log:
``XDG_STATE_HOME`` and ``--state-dir`` point into it; a state folder). A command that runs
longer than ``--timeout`` is counted apart.

``--mode process`` (the default) runs every command as a real ``runbook`` process: start-up,
imports and the exit code exactly as an operator gets them. ``--mode inprocess`` calls the
CLI entry (``runbook_engine.cli.run``, what the console script calls) in ``--jobs`` worker
processes, each reused for many mutants: the same checks, about 30 times faster, and it also
shows what state one run could leave for the next (caches).

The summary (counts by exit code, internal errors, timeouts, time) is printed and written as
JSON with ``--summary FILE``; failing mutants are kept in ``--keep DIR`` with their mutations.
Exit 0 when there was no internal error and no timeout, else 1.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fuzz_mutations import Mutation, Sources, mutate, random_mutations  # noqa: E402

RUNBOOK = str(Path(sys.executable).with_name("runbook"))
MUTANT = "mutant.yaml"


@dataclass
class Outcome:
    index: int
    results: list[tuple[str, int, float]] = field(default_factory=list)  # (command, exit, s)
    internal: list[str] = field(default_factory=list)  # what was wrong, per bad command
    timeouts: list[str] = field(default_factory=list)


def mutant(src: Sources, seed: int, index: int) -> tuple[int, list[Mutation], bytes]:
    rng = random.Random(f"{seed}:{index}")
    which = rng.randrange(len(src.texts))
    mutations = random_mutations(rng)
    return which, mutations, mutate(src, which, mutations)


def _extra_files(folder: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), folder)
        for d, dirs, files in os.walk(folder)
        for n in [*dirs, *files]
        if os.path.join(d, n) != str(folder / MUTANT)
    )


def _judge(command: str, code: int, output: str, folder: Path, out: Outcome) -> None:
    wrong = []
    if code not in (0, 2):
        wrong.append(f"exit {code}")
    if "internal error" in output:
        wrong.append("'internal error' printed")
    if "Traceback (most recent call last)" in output:
        wrong.append("a traceback printed")
    extra = _extra_files(folder)
    if extra:
        wrong.append(f"files written: {', '.join(extra[:3])}")
        for name in extra:
            path = folder / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    if wrong:
        first = next((line for line in output.splitlines() if "internal error" in line), "")
        out.internal.append(f"{command}: {'; '.join(wrong)} {first}".strip())


def _argv(command: str, folder: Path) -> list[str]:
    return ["--state-dir", str(folder / "state"), *command.split(), str(folder / MUTANT)]


def run_process(args: argparse.Namespace, folder: Path, index: int, data: bytes) -> Outcome:
    out = Outcome(index)
    (folder / MUTANT).write_bytes(data)
    env = {**os.environ, "NO_COLOR": "1", "XDG_STATE_HOME": str(folder / "xdg")}
    for command in args.commands:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [RUNBOOK, *_argv(command, folder)],
                capture_output=True,
                text=True,
                errors="replace",
                env=env,
                cwd=folder,
                timeout=args.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            out.timeouts.append(command)
            break
        elapsed = time.perf_counter() - start
        out.results.append((command, proc.returncode, elapsed))
        _judge(command, proc.returncode, proc.stdout + proc.stderr, folder, out)
        if proc.returncode != 0:
            break
    return out


def _inprocess_worker(job: tuple[argparse.Namespace, str, list[int]]) -> list[Outcome]:
    """A worker process: many mutants through ``cli.run``, with one private folder."""
    import signal

    from runbook_engine.cli import run

    args, folder_name, indexes = job
    folder = Path(folder_name)
    os.environ["NO_COLOR"] = "1"
    os.environ["XDG_STATE_HOME"] = str(folder / "xdg")
    os.chdir(folder)
    src = Sources()
    outcomes = []

    def too_long(signum: int, frame: Any) -> None:
        raise TimeoutError

    signal.signal(signal.SIGALRM, too_long)
    for index in indexes:
        _, _, data = mutant(src, args.seed, index)
        (folder / MUTANT).write_bytes(data)
        out = Outcome(index)
        for command in args.commands:
            buf_out, buf_err = io.StringIO(), io.StringIO()
            start = time.perf_counter()
            signal.alarm(int(args.timeout))
            try:
                with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
                    code = run(_argv(command, folder))
            except TimeoutError:
                out.timeouts.append(command)
                break
            except BaseException as exc:  # noqa: BLE001 - run() must never let one escape
                code = -1
                buf_err.write(f"internal error: escaped run(): {type(exc).__name__}: {exc}")
            finally:
                signal.alarm(0)
            elapsed = time.perf_counter() - start
            out.results.append((command, code, elapsed))
            _judge(command, code, buf_out.getvalue() + buf_err.getvalue(), folder, out)
            if code != 0:
                break
        outcomes.append(out)
    return outcomes


def campaign(args: argparse.Namespace) -> tuple[list[Outcome], float]:
    src = Sources()
    root = Path(tempfile.mkdtemp(prefix="runbook-fuzz-"))
    indexes = list(range(args.start, args.start + args.mutants))
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    try:
        if args.mode == "inprocess":
            chunks = [indexes[i :: args.jobs * 8] for i in range(args.jobs * 8)]
            jobs = []
            for n, chunk in enumerate(chunks):
                folder = root / f"w{n}"
                folder.mkdir()
                jobs.append((args, str(folder), chunk))
            with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
                for got in pool.imap_unordered(_inprocess_worker, jobs):
                    outcomes.extend(got)
                    _progress(outcomes, args.mutants, start)
        else:
            folders = []
            for n in range(args.jobs):
                (root / f"w{n}").mkdir()
                folders.append(root / f"w{n}")
            free: list[Path] = list(folders)

            def one(index: int) -> Outcome:
                folder = free.pop()
                try:
                    _, _, data = mutant(src, args.seed, index)
                    return run_process(args, folder, index, data)
                finally:
                    free.append(folder)

            with ThreadPoolExecutor(args.jobs) as pool:
                for out in pool.map(one, indexes):
                    outcomes.append(out)
                    if len(outcomes) % 500 == 0:
                        _progress(outcomes, args.mutants, start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return sorted(outcomes, key=lambda o: o.index), time.perf_counter() - start


def _progress(outcomes: list[Outcome], total: int, start: float) -> None:
    bad = sum(1 for o in outcomes if o.internal or o.timeouts)
    print(
        f"  {len(outcomes):>6,} / {total:,} mutants, {bad} bad, {time.perf_counter() - start:.0f}s",
        file=sys.stderr,
        flush=True,
    )


def summary(args: argparse.Namespace, outcomes: list[Outcome], elapsed: float) -> dict[str, Any]:
    by_command: dict[str, collections.Counter[int]] = {
        c: collections.Counter() for c in args.commands
    }
    times: dict[str, list[float]] = {c: [] for c in args.commands}
    for o in outcomes:
        for command, code, seconds in o.results:
            by_command[command][code] += 1
            times[command].append(seconds)
    internal = [{"mutant": o.index, "problems": o.internal} for o in outcomes if o.internal]
    timeouts = [{"mutant": o.index, "commands": o.timeouts} for o in outcomes if o.timeouts]
    return {
        "command": " ".join(sys.argv),
        "mode": args.mode,
        "seed": args.seed,
        "mutants": len(outcomes),
        "first_mutant": args.start,
        "commands": args.commands,
        "exit_codes": {c: {str(k): v for k, v in sorted(n.items())} for c, n in by_command.items()},
        "internal_errors": len(internal),
        "timeouts": len(timeouts),
        "seconds": round(elapsed, 1),
        "mutants_per_second": round(len(outcomes) / elapsed, 1) if elapsed else None,
        "median_ms": {c: round(statistics.median(t) * 1000, 1) for c, t in times.items() if t},
        "p99_ms": {
            c: round(sorted(t)[int(len(t) * 0.99) - 1] * 1000, 1) for c, t in times.items() if t
        },
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "jobs": args.jobs,
        },
        "failures": internal[:50],
        "timed_out": timeouts[:50],
    }


def keep(args: argparse.Namespace, outcomes: list[Outcome]) -> None:
    src = Sources()
    folder = Path(args.keep)
    folder.mkdir(parents=True, exist_ok=True)
    for o in outcomes:
        if o.internal or o.timeouts or args.replay is not None:
            which, mutations, data = mutant(src, args.seed, o.index)
            (folder / f"mutant-{args.seed}-{o.index}.yaml").write_bytes(data)
            note = {
                "example": str(
                    [
                        "acai-distributor-gradual-migration.yaml",
                        "subscription-platform-switch.yaml",
                    ][which]
                ),
                "mutations": [{**asdict(m), "data": m.data.hex()} for m in mutations],
                "outcome": asdict(o),
            }
            (folder / f"mutant-{args.seed}-{o.index}.json").write_text(json.dumps(note, indent=2))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mutants", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="index of the first mutant")
    ap.add_argument("--mode", choices=["process", "inprocess"], default="process")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--commands", default="validate", help="comma-separated, e.g. validate,plan")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per command")
    ap.add_argument("--summary", help="write the summary as JSON to this file")
    ap.add_argument("--keep", help="folder for failing mutants (and --replay's)")
    ap.add_argument("--replay", type=int, help="run only mutant N (with --keep: write it)")
    args = ap.parse_args(argv)
    args.commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    if args.replay is not None:
        args.start, args.mutants = args.replay, 1
    print(
        f"fuzz: {args.mutants:,} mutants (seed {args.seed}), {args.mode}, {args.jobs} job(s), "
        f"commands: {', '.join(args.commands)}",
        file=sys.stderr,
    )
    outcomes, elapsed = campaign(args)
    result = summary(args, outcomes, elapsed)
    if args.keep:
        keep(args, outcomes)
    text = json.dumps(result, indent=2)
    print(text)
    if args.summary:
        Path(args.summary).write_text(text + "\n", encoding="utf-8")
    return 1 if result["internal_errors"] or result["timeouts"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
