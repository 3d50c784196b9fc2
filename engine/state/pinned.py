"""The vars a run in progress is pinned to, read before the lease (SPEC §11: "a run stores its
vars; `apply` and `approve` without `--var` use them").

A read of the run and accept records only (one pass over the journal in SQLite, no fold; or,
for a state of an earlier version, its ``journal.jsonl``), so that a resume of a long journal
does not pay for a second fold. Nothing is written. A record that cannot be read is damage
(exit 2 naming its sequence number), as the store's own read says it.

Vars are stored masked like every record, so a var whose value equals a secret's is stored as
``***``: its value cannot be reused, and a masked value cannot show a change. The run (and
each ``accept``) therefore also stores ``var_hmacs``: per var, an HMAC-SHA256 of its value as
canonical JSON, keyed with a random key of this state kept in the database's ``meta``
(``var_key``; never printed, never journaled). The change check compares those. A var whose
value was masked (it held a secret's value) gets no HMAC but ``SECRET`` (the key sits in the
same file: an HMAC of a secret would let anyone holding the state file alone try candidates
offline): it cannot be compared, and a run given it again counts it as changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidInput, StateError
from ..masking import MASK, Masker
from . import db as dbm
from . import journal, legacy, location
from .status import FINISHED_RUNS, RunStatus
from .store import state_path


def run_vars(
    state_dir: str | os.PathLike[str], name: str, reopen: bool = False, strict: bool = False
) -> dict[str, Any] | None:
    """The vars of the last run when it is not finished (or, with ``reopen``, when it
    succeeded: ``--replace`` stays inside it); None when there is no such run. A value that
    was masked when stored (it held a secret's value) cannot be used again: it is left out,
    or, with ``strict`` (a command that runs steps), refused with exit 2 asking for it."""
    records: Iterable[tuple[int, dict[str, Any]]]
    if location.is_postgres(state_dir):
        from . import pg

        pgdb = pg.open_db(str(state_dir), name, write=False)
        if pgdb is None:
            return None
        try:
            records = _parsed(pgdb.path, journal.texts_of(pgdb, ("run", "accept")))
        finally:
            pgdb.close()
    else:
        base = state_path(state_dir, name)
        path = base / dbm.FILE
        if path.exists():
            records = _records(path, name)
        elif (base / legacy.FILE).exists():
            got = legacy.read(str(base / legacy.FILE), expect_name=name)
            records = ((seq, rec) for seq, rec in enumerate(got.records[1:], start=1))
        else:
            return None
    run: str | None = None
    status: str | None = None
    values: dict[str, Any] | None = None
    for _seq, rec in records:
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
    masked = sorted(k for k, v in values.items() if MASK in json.dumps(v, default=str))
    if masked and strict:
        names = " ".join(f"--var {k}=…" for k in masked)
        said = "its value" if len(masked) == 1 else "their values"
        raise InvalidInput(
            f"run {run} cannot reuse its var(s) {', '.join(masked)}: give {names} again: "
            f"{said} held a secret and was not stored (vars given are the whole set: give the "
            "run's other vars too). Nothing was written"
        )
    return {k: v for k, v in values.items() if k not in masked}


def _records(path: Any, name: str) -> Iterable[tuple[int, dict[str, Any]]]:
    db = dbm.open_reader(path, name)
    try:
        rows = journal.texts_of(db, ("run", "accept"))
    except sqlite3.DatabaseError as exc:
        raise dbm.damaged(path, exc) from None
    finally:
        db.close()
    return _parsed(path, rows)


def _parsed(path: object, rows: Iterable[tuple[int, str]]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for seq, text in rows:
        try:
            rec = json.loads(text)
        except (TypeError, ValueError, RecursionError):  # RecursionError: nested past bounds
            rec = None
        if not isinstance(rec, dict):
            raise StateError(
                f"{path}: journal record {seq} is damaged (not a JSON record); the state was "
                "left untouched"
            )
        out.append((int(seq), rec))
    return out


# -- keyed digests of the vars' raw values -------------------------------------------------

KEY = "var_key"  # the meta row holding this state's key (hex); on PostgreSQL, the column
# `var_key` of the runbook's row of `runbook.state` (one key per runbook)


def read_key(db: dbm.Database) -> bytes | None:
    """This state's var key, or None when none was made yet (no run stored digests)."""
    try:
        if db.dialect == "postgresql":
            rows = db.query(
                "SELECT var_key FROM runbook.state WHERE runbook = ? AND var_key IS NOT NULL",
                (getattr(db, "runbook", ""),),
            )
        else:
            rows = db.query("SELECT value FROM meta WHERE key = ?", (KEY,))
        return bytes.fromhex(str(rows[0][0])) if rows else None
    except (sqlite3.DatabaseError, ValueError):
        return None


def read_var_key(state_dir: str | os.PathLike[str], name: str) -> bytes | None:
    """The state's var key (``read_key``), read without the lock and without writing anything
    (``plan``, ``--dry-run``, an early refusal); None when there is none (or no state)."""
    if location.is_postgres(state_dir):
        from . import pg

        state_path(".", name)
        pdb = pg.open_db(str(state_dir), name, write=False)
        if pdb is None:
            return None
        try:
            return read_key(pdb)
        finally:
            pdb.close()
    path = state_path(state_dir, name) / dbm.FILE
    if not path.exists():
        return None
    db = dbm.open_reader(path, name)
    try:
        return read_key(db)
    finally:
        db.close()


def ensure_key(db: dbm.Database) -> bytes:
    """This state's var key, made (random, 256 bits) and committed on first use."""
    key = read_key(db)
    if key is not None:
        return key
    with db.transaction():
        if db.dialect == "postgresql":
            db.execute(
                "UPDATE runbook.state SET var_key = ? WHERE runbook = ? AND var_key IS NULL",
                (secrets.token_hex(32), getattr(db, "runbook", "")),
            )
        else:
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                (KEY, secrets.token_hex(32)),
            )
    key = read_key(db)
    assert key is not None
    return key


SECRET = "secret: not compared"  # a var_hmacs entry for a var that held a secret's value


def var_hmacs(
    key: bytes, values: Mapping[str, Any], masker: Masker | None = None
) -> dict[str, str]:
    """Per var, the keyed digest of its raw value (compared, never shown); with ``masker``
    (to be stored), ``SECRET`` for a value it masks."""
    held = {n for n, v in values.items() if masker is not None and masker.mask_value(v) != v}
    return {n: SECRET for n in held} | {
        name: hmac.new(
            key,
            json.dumps(
                value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
            ).encode("utf-8", "surrogatepass"),
            hashlib.sha256,
        ).hexdigest()
        for name, value in values.items()
        if name not in held
    }
