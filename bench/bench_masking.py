"""Benchmark of masking: every record and every output is masked (SPEC §9), in every form of
every secret, so its cost per text is measured next to the plain substring search it replaces.

    .venv/bin/python bench/bench_masking.py [--repeat 5]

Texts: a 300-byte journal record and a 16 KiB output with no secret in them (the common case),
with 0, 1 and 3 secrets declared.  The limit in the same run: one ``str.replace`` pass per
secret (what masking did before it knew the derived forms).  Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook_engine.masking import Masker

SECRETS = {"pw": "s3cr'et p@ss", "tok": "tok-9f8e7d6c5b4a", "smtp": "Sm7p-passw0rd!"}


def best(fn: object, text: str, n: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn(text)  # type: ignore[operator]
        times.append((time.perf_counter() - start) / n)
    return min(times)


def plain(values: list[str]) -> object:
    def mask(text: str) -> str:
        for v in values:
            if v in text:
                text = text.replace(v, "***")
        return text

    return mask


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    record = json.dumps(
        {"t": "step", "id": "copy[pilot]", "status": "succeeded", "attempt": 1,
         "outputs": {"rows_copied": 1234, "stdout": "copied 1234 rows"}, "at": "2026-12-02"}
    )  # fmt: skip
    rnd = random.Random(1)
    output = "".join(
        rnd.choice(string.ascii_letters + string.digits + " \n'\"%") for _ in range(16384)
    )
    for count in (0, 1, 3):
        secrets = dict(list(SECRETS.items())[:count])
        masker = Masker(secrets)
        bare = plain(list(secrets.values()))
        for label, text, n in (("300 B record", record, 20000), ("16 KiB output", output, 500)):
            got = best(masker.mask, text, n, args.repeat)
            limit = best(bare, text, n, args.repeat)
            print(
                f"{count} secret(s), {len(masker._values):2d} forms, {label:13s}: "
                f"{got * 1e6:7.1f} µs   (one replace per secret: {limit * 1e6:6.1f} µs)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
