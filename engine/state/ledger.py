"""The ledger: one row per entity of every cohort, and the history of its journey (SPEC §7).

Tables of the state database (``db.py``, schema version 2): ``cohort`` (the frozen draw of each
cohort), ``entity`` (cohort, key, wave, state, reason, stratum, rank, attributes) and
``transition`` (every change of state with step, run, wave attempt and time), ``message``
(every message an entity was sent). Everything here is set-wise SQL: one statement moves a
wave, never one Python round-trip per entity. The functions take the database and run inside
the caller's transaction, so that a step's marks commit with the journal record of its success.

Journey states: pending < notified < moved < verified; and excluded, failed, compensated,
late, vanished. A mark never lowers a state and never overwrites ``failed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import dialect
from .db import Database

ORDER = ("pending", "notified", "moved", "verified")
STATES = (*ORDER, "excluded", "failed", "compensated", "late", "vanished", "unknown")
# every state a wave member can be in while its wave is drawn (not excluded, late, vanished);
# `unknown`: a per-member call cut by a crash, until the operator resolves it
MEMBER_STATES = (*ORDER, "failed", "compensated", "unknown")


@dataclass(frozen=True)
class Frozen:
    """A cohort as drawn: when, and what decided it."""

    name: str
    frozen_at: str
    digest: str
    definition: dict[str, Any]
    summary: dict[str, Any]


@dataclass(frozen=True)
class Mark:
    """What a step did to its wave's members, committed with the step's success.

    ``keys``: only these members (None: every member of the wave); ``failed``: members that
    failed, with the reason, marked ``failed`` whatever ``state`` says."""

    cohort: str
    wave: str
    state: str | None
    step: str
    run: str
    attempt: int
    keys: Sequence[Any] | None = None
    failed: Sequence[tuple[Any, str]] = ()
    unknown: Sequence[Any] = ()
    # foreach: a member whose own call succeeds on a re-run is no longer failed (its failure
    # was that call's); set-wise marks never overwrite `failed`
    revive: bool = False


def has_ledger(db: Database) -> bool:
    return dialect.has_table(db, "entity")


def frozen(db: Database, cohort: str) -> Frozen | None:
    if not has_ledger(db):
        return None
    rows = db.query(
        "SELECT frozen_at, digest, definition, summary FROM cohort WHERE name = ?", (cohort,)
    )
    if not rows:
        return None
    at, digest, definition, summary = rows[0]
    return Frozen(cohort, at, digest, json.loads(definition), json.loads(summary))


def write_draw(
    db: Database,
    cohort: str,
    at: str,
    run: str | None,
    digest: str,
    definition: dict[str, Any],
    summary: dict[str, Any],
    rows: Iterable[tuple[Any, str | None, str, str | None, str | None, int, str]],
) -> None:
    """The frozen draw: ``rows`` are (key, wave, state, reason, stratum, rank, attrs JSON)."""
    db.execute(
        "INSERT INTO cohort (name, frozen_at, run, digest, definition, summary)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (cohort, at, run, digest, json.dumps(definition), json.dumps(summary)),
    )
    dialect.load_entities(db, cohort, at, rows)


def _lower_than(state: str) -> tuple[str, ...]:
    return ORDER[: ORDER.index(state)]


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _keys_table(db: Database, keys: Iterable[Any]) -> str:
    """``key IN (SELECT key FROM …)`` of these keys (a temporary table)."""
    return f"key IN (SELECT key FROM {dialect.keys_table(db, 'mark_keys', keys)})"


def _move(
    db: Database,
    m: Mark,
    state: str,
    where: str,
    params: Sequence[Any],
    at: str,
    reason: str | None,
) -> int:
    """Members of the wave matching ``where`` go to ``state``, each with a transition row."""
    base = "FROM entity WHERE cohort = ? AND wave = ? AND " + where
    args = (m.cohort, m.wave, *params)
    db.execute(
        "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
        f" SELECT cohort, key, ?, ?, ?, ?, ?, ? {base}",
        (state, m.step, m.run, m.attempt, reason, at, *args),
    )
    cur = db.execute(
        "UPDATE entity SET state = ?, updated_at = ?, reason = ?"
        f" WHERE {dialect.same_rows(db, base)}",
        (state, at, reason, *args),  # a new state says its own reason, or none
    )
    return int(cur.rowcount)


def apply_mark(db: Database, m: Mark, at: str) -> dict[str, int]:
    """Apply one ``Mark``; returns how many members changed, by state."""
    out: dict[str, int] = {}
    if m.failed:
        by_reason: dict[str, list[Any]] = {}
        for key, why in m.failed:
            by_reason.setdefault(why, []).append(key)
        for why, keys in by_reason.items():
            among = _keys_table(db, keys)
            states = tuple(s for s in MEMBER_STATES if s not in ("failed", "compensated"))
            where = f"state IN ({_placeholders(len(states))}) AND {among}"
            out["failed"] = out.get("failed", 0) + _move(db, m, "failed", where, states, at, why)
    if m.unknown:
        where = f"state IN ({_placeholders(len(ORDER))}) AND {_keys_table(db, m.unknown)}"
        why = "its call was cut by a crash: resolve it"
        out["unknown"] = _move(db, m, "unknown", where, ORDER, at, why)
    if m.state is not None:
        lower = _lower_than(m.state)
        if m.revive and m.keys is not None:
            lower = (*lower, "failed", "unknown")
        where = f"state IN ({_placeholders(len(lower))})"
        if m.keys is not None:
            where += f" AND {_keys_table(db, m.keys)}"
        if lower:
            out[m.state] = _move(db, m, m.state, where, lower, at, None)
    return out


def compensate(
    db: Database, cohort: str, wave: str, step: str, run: str, attempt: int, at: str
) -> int:
    """Every member of the wave (failed ones included) is ``compensated``: its wave was undone."""
    m = Mark(cohort, wave, "compensated", step, run, attempt)
    states = tuple(s for s in MEMBER_STATES if s != "compensated")
    return _move(db, m, "compensated", f"state IN ({_placeholders(len(states))})", states, at, None)


def compensate_keys(
    db: Database,
    cohort: str,
    wave: str,
    keys: Iterable[Any],
    step: str,
    run: str,
    attempt: int,
    at: str,
) -> int:
    """The members ``keys`` of the wave are ``compensated``: every step that touched them was
    undone for them (a per-member rollback that undid only some of its members)."""
    m = Mark(cohort, wave, "compensated", step, run, attempt)
    states = tuple(s for s in MEMBER_STATES if s != "compensated")
    where = f"state IN ({_placeholders(len(states))}) AND {_keys_table(db, keys)}"
    return _move(db, m, "compensated", where, states, at, None)


def resolve_member(
    db: Database, cohort: str, key: Any, state: str, step: str, run: str, attempt: int, at: str
) -> None:
    """An operator's decision on a member left `unknown`: its journey goes on from ``state``
    (the state before it became unknown when ``state`` is None-like ``"before"``)."""
    if state == "before":
        rows = db.query(
            "SELECT state FROM transition WHERE cohort = ? AND key = ? AND state != 'unknown'"
            " ORDER BY seq DESC LIMIT 1",
            (cohort, dialect.key(db, key)),
        )
        state = rows[0][0] if rows else "pending"
    m = Mark(cohort, "", state, step, run, attempt)
    db.execute(
        "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
        " SELECT cohort, key, ?, ?, ?, ?, 'resolved by the operator', ? FROM entity"
        " WHERE cohort = ? AND key = ? AND state = 'unknown'",
        (state, m.step, run, attempt, at, cohort, dialect.key(db, key)),
    )
    db.execute(
        "UPDATE entity SET state = ?, reason = NULL, updated_at = ? WHERE cohort = ? AND key = ?"
        " AND state = 'unknown'",
        (state, at, cohort, dialect.key(db, key)),
    )


def revert(db: Database, cohort: str, wave: str, step: str, attempt: int, run: str, at: str) -> int:
    """``step`` was undone: the members whose current state it set in ``attempt`` go back to
    the state they had before it (``pending`` when none), each with a transition."""
    to = dialect.pairs_table(db, "revert_to")
    db.execute(
        f"INSERT INTO {to} (key, state)"
        " SELECT t.key, COALESCE((SELECT p.state FROM transition p WHERE p.cohort = t.cohort"
        " AND p.key = t.key AND p.seq < t.seq AND p.state NOT IN ('unknown')"
        " ORDER BY p.seq DESC LIMIT 1), 'pending')"
        " FROM transition t JOIN entity e ON e.cohort = t.cohort AND e.key = t.key"
        " WHERE t.cohort = ? AND t.step = ? AND t.attempt = ? AND e.wave = ?"
        " AND e.state = t.state"
        " AND t.seq = (SELECT max(x.seq) FROM transition x WHERE x.cohort = t.cohort"
        " AND x.key = t.key)",
        (cohort, step, attempt, wave),
    )
    db.execute(
        "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
        f" SELECT ?, r.key, r.state, ?, ?, ?, ?, ? FROM {to} r",
        (cohort, f"{step}#rollback", run, attempt, f"undone by the rollback of {step}", at),
    )
    cur = db.execute(
        f"UPDATE entity SET state = (SELECT r.state FROM {to} r WHERE r.key ="
        " entity.key), reason = NULL, updated_at = ? WHERE cohort = ? AND key IN"
        f" (SELECT key FROM {to})",
        (at, cohort),
    )
    db.execute(f"DELETE FROM {to}")
    return int(cur.rowcount)


def reopen(db: Database, cohort: str, wave: str, run: str, attempt: int, at: str) -> int:
    """A new attempt of a wave: its compensated members are pending again."""
    m = Mark(cohort, wave, "pending", "(new attempt)", run, attempt)
    return _move(db, m, "pending", "state = ?", ("compensated",), at, None)


def members(
    db: Database, cohort: str, wave: str, states: Sequence[str] = ORDER
) -> list[tuple[Any, dict[str, Any], str]]:
    """(key, attributes, state) of the wave's members in the given states, by rank."""
    rows = db.query(
        f"SELECT key, attrs, state FROM entity WHERE cohort = ? AND wave = ? AND state IN"
        f" ({_placeholders(len(states))}) ORDER BY rank",
        (cohort, wave, *states),
    )
    return [(k, json.loads(a) if a else {}, s) for k, a, s in rows]


def member_query(
    cohort: str, wave: str, schema: str = "", states: Sequence[str] = ORDER
) -> tuple[str, tuple[Any, ...]]:
    """SQL selecting the keys of the wave's members in ``states`` (by default the ones a step
    works on: not failed — a member that could not be told is not moved — nor compensated),
    for a database that has the ledger attached as ``schema``."""
    prefix = f"{schema}." if schema else ""
    sql = (
        f"SELECT key FROM {prefix}entity WHERE cohort = ? AND wave = ? AND state IN"
        f" ({_placeholders(len(states))})"
    )
    return sql, (cohort, wave, *states)


def counts(db: Database, cohort: str) -> list[tuple[str | None, str, int]]:
    if not has_ledger(db):
        return []
    rows = db.query(
        "SELECT wave, state, count(*) FROM entity WHERE cohort = ? GROUP BY wave, state",
        (cohort,),
    )
    return [(w, s, int(n)) for w, s, n in rows]


def record_messages(
    db: Database, cohort: str, rows: Iterable[tuple[Any, str, int, str, str | None, str]], at: str
) -> None:
    """(key, step, attempt, channel, message_id, state) of messages sent to entities."""
    db.executemany(
        "INSERT INTO message (cohort, key, step, attempt, channel, message_id, state, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            (cohort, dialect.key(db, k), step, attempt, ch, mid, st, at)
            for k, step, attempt, ch, mid, st in rows
        ),
    )
