"""Run every benchmark of bench/ in turn (each writes its own figures; see docs/benchmarks.md).

.venv/bin/python bench/run_all.py            # all of them (takes a while: 1M-row copies)
.venv/bin/python bench/run_all.py sql ssh    # some of them
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    "validate_plan",
    "engine",
    "sql",
    "ssh",
    "notify",
    "outbox",
    "diff",
    "report",
    "masking",
    "customers",
    "foreach",
]


def main(argv: list[str]) -> int:
    wanted = argv or BENCHES
    unknown = [w for w in wanted if w not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
        return 2
    failed = []
    for name in wanted:
        script = HERE / f"bench_{name}.py"
        print(f"== {script.name}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(script)])
        print(f"== {script.name}: exit {code} after {time.monotonic() - start:.0f}s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
