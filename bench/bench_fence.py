"""What the lease's fence adds to one checkpoint: ``Store.stage`` + ``Store.flush`` of one record
with and without the fence (``SELECT epoch FROM lease WHERE id = 1`` first inside the write
transaction), alternated in one process.

The state database runs with ``synchronous = OFF`` here so that the figure is the engine's
work per commit, not the disk's fsync (measured apart by ``bench_engine.py``'s limits).

    .venv/bin/python bench/bench_fence.py --records 2000 --repeat 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from runbook_engine.masking import Masker
from runbook_engine.state.db import Database
from runbook_engine.state.store import Store


def fence(db: Database) -> None:
    """The lease's check as ``Lease.fence`` runs it: one primary-key read, compared."""
    got = db.query("SELECT epoch FROM lease WHERE id = 1")
    if not got or got[0][0] != 1:
        raise RuntimeError("lease lost")


def one(store: Store, records: int) -> float:
    """Seconds per checkpoint of one record."""
    t0 = time.perf_counter()
    for i in range(records):
        store.stage({"t": "step", "id": f"s{i}", "status": "running", "attempt": 1})
        store.flush()
    return (time.perf_counter() - t0) / records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), "bench", Masker())
        store.db.execute("PRAGMA synchronous = OFF")
        with store.db.transaction(fenced=False):
            store.db.execute(
                "INSERT INTO lease (id, epoch, host, pid, user, command, started, seconds)"
                " VALUES (1, 1, 'h', 1, 'u', 'bench', 'now', 30)"
            )
        got: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.repeat):
            for name, f in (("without", None), ("with", fence)):
                store.fence_with(f)
                got[name].append(one(store, args.records))
        store.close()
    t = {k: statistics.median(v) * 1e6 for k, v in got.items()}
    print(f"checkpoint of one record, median of {args.repeat} x {args.records}:")
    print(
        f"  without fence {t['without']:.1f} us, with fence {t['with']:.1f} us, "
        f"fence adds {t['with'] - t['without']:.1f} us"
    )


if __name__ == "__main__":
    main()
