"""The vars a run in progress is pinned to, read before the lock (SPEC §11: "a run stores its
vars; `apply` and `approve` without `--var` use them").

A read of the run and accept records only (one pass over the journal in SQLite, no fold), so
that a resume of a long journal does not pay for a second fold. Nothing is written.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from ..masking import MASK
from . import db as dbm
from . import journal, location
from .status import FINISHED_RUNS, RunStatus
from .store import state_path


def run_vars(
    state_dir: str | os.PathLike[str], name: str, reopen: bool = False
) -> dict[str, Any] | None:
    """The vars of the last run when it is not finished (or, with ``reopen``, when it
    succeeded: ``--replace`` stays inside it); None when there is no such run. A value that
    was masked when stored (it held a secret's value) is left out: it cannot be used again."""
    if location.is_postgres(state_dir):
        from . import pg

        pgdb = pg.open_db(str(state_dir), name, write=False)
        if pgdb is None:
            return None
        try:
            rows = journal.texts(pgdb, ("run", "accept"))
        finally:
            pgdb.close()
    else:
        path = state_path(state_dir, name) / dbm.FILE
        if not path.exists():
            return None
        db = dbm.open_reader(path, name)
        try:
            rows = journal.texts(db, ("run", "accept"))
        except sqlite3.DatabaseError as exc:
            raise dbm.damaged(path, exc) from None
        finally:
            db.close()
    run: str | None = None
    status: str | None = None
    values: dict[str, Any] | None = None
    for text in rows:
        try:
            rec = json.loads(text)
        except (TypeError, ValueError):
            continue  # damage: the store's fold refuses it, with its sequence number
        if not isinstance(rec, dict):
            continue
        if rec.get("t") == "run":
            if rec.get("run") != run:
                run, values = rec.get("run"), None
                if isinstance(rec.get("vars"), dict):
                    values = rec["vars"]
            status = rec.get("status")
        elif (
            rec.get("t") == "accept" and rec.get("run") == run and isinstance(rec.get("vars"), dict)
        ):
            values = rec["vars"]
    if run is None or values is None:
        return None
    if status in {s.value for s in FINISHED_RUNS} and not (
        reopen and status == RunStatus.SUCCEEDED.value
    ):
        return None
    return {k: v for k, v in values.items() if MASK not in json.dumps(v, default=str)}
