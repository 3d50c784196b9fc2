"""Reading the ledger (``ledger.py``) for ``customers``, ``report``, ``status`` and ``plan``:
counts by wave and state, entities with their journeys (every transition and message).

Read-only: the connection has ``query_only`` set, so SQLite itself refuses any write. Every
count is one SQL statement over the (cohort, wave, state) index, and a journey is fetched for
a set of entities by one statement per table, never one query per entity.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from . import db as dbm
from . import dialect, ledger, location
from .outbox import has_outbox, scope
from .store import state_path

CHUNK = 400  # keys per `IN (...)` list (SQLite's parameter limit is far above)
_INTEGER = re.compile(r"[+-]?\d{1,18}")


class NotDrawn(InvalidInput):
    """A cohort with no ledger yet (exit 2, saying how to draw it)."""

    def __init__(self, cohort: str, file: str) -> None:
        super().__init__(
            f"{file}: cohort {cohort!r} has not been drawn yet: nothing is in the ledger. Draw "
            f"it with `runbook cohort freeze {file}`, or the first `runbook apply {file}` does"
        )


@contextmanager
def reader(state_dir: str | os.PathLike[str], name: str) -> Iterator[dbm.Database | None]:
    """The runbook's state database opened read-only, or None when it has none: a directory's
    ``state.db`` (``query_only``), or the runbook's rows on PostgreSQL (read-only
    transactions)."""
    if location.is_postgres(state_dir):
        from . import pg

        state_path(".", name)
        pgdb = pg.open_db(str(state_dir), name, write=False)
        if pgdb is None:
            yield None
            return
        try:
            dialect.read_only(pgdb)
            yield pgdb
        finally:
            pgdb.close()
        return
    path = state_path(state_dir, name) / dbm.FILE
    if not path.exists():
        yield None
        return
    db = dbm.open_reader(path, name)
    try:
        yield db
    finally:
        db.close()


def frozen(db: dbm.Database | None, cohort: str, file: str) -> ledger.Frozen:
    """The cohort as frozen; NotDrawn (exit 2) before the draw."""
    got = ledger.frozen(db, cohort) if db is not None else None
    if got is None:
        raise NotDrawn(cohort, file)
    return got


def wave_order(got: ledger.Frozen) -> list[str]:
    """The waves in draw order (the holdout last), as the frozen summary lists them."""
    return [str(w["id"]) for w in got.summary.get("waves", [])]


def counts(db: dbm.Database, cohort: str) -> list[tuple[str | None, str, int]]:
    """(wave, state, count) of every pair present: one GROUP BY on the covering index."""
    return ledger.counts(db, cohort)


@dataclass
class Transition:
    state: str
    step: str | None
    run: str | None
    attempt: int | None
    reason: str | None
    at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "step": self.step,
            "run": self.run,
            "attempt": self.attempt,
            "at": self.at,
            "reason": self.reason,
        }


@dataclass
class Message:
    channel: str
    message_id: str | None
    step: str
    attempt: int
    at: str
    state: str  # the ledger's: sent (told: queued in the outbox, or sent), unreachable
    delivery: str | None = None  # its row in the outbox: queued, sending, sent, uncertain...

    @property
    def shown(self) -> str:
        """What happened to it, as a journey shows it: its delivery state when it went
        through the outbox (queued until the relay sent it), else the ledger's."""
        return self.delivery or self.state

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "message_id": self.message_id,
            "step": self.step,
            "attempt": self.attempt,
            "at": self.at,
            "state": self.shown,
            "delivery": self.delivery,
            # the ledger's record: `sent` = handed over (to the outbox, or to the server)
            "recorded": self.state,
        }


@dataclass
class Entity:
    key: Any
    wave: str | None
    state: str
    reason: str | None
    rank: int | None  # None: not drawn (a late entity)
    stratum: str | None
    attributes: dict[str, Any]
    updated_at: str
    transitions: list[Transition] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "wave": self.wave,
            "state": self.state,
            "reason": self.reason,
            "attributes": self.attributes,
            "updated_at": self.updated_at,
            "transitions": [t.as_json() for t in self.transitions],
            "messages": [m.as_json() for m in self.messages],
        }


_COLUMNS = "key, wave, state, reason, rank, stratum, attrs, updated_at"


# the states whose reason is the entity's own (a mark to another state may leave the reason of
# an earlier failure in the row: it is history, kept in the transitions, not shown as current)
WITH_REASON = frozenset({"excluded", "failed", "late", "vanished"})


def _entity(row: Sequence[Any]) -> Entity:
    key, wave, state, reason, rank, stratum, attrs, updated = row
    if state not in WITH_REASON:
        reason = None
    return Entity(
        key, wave, state, reason, rank, stratum, json.loads(attrs) if attrs else {}, updated
    )


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def key_forms(text: str) -> list[Any]:
    """What a key typed on the command line can be in the ledger: the ledger keeps the
    source's type (1 is not '1'), so a decimal is looked up as an integer too."""
    forms: list[Any] = [text]
    if _INTEGER.fullmatch(text.strip()):
        forms.append(int(text))
    return forms


def find(db: dbm.Database, cohort: str, keys: Sequence[str]) -> tuple[list[Entity], list[str]]:
    """The entities with these keys (in the order asked) and the keys that are not in the
    cohort. One indexed lookup per chunk of keys."""
    forms = {t: key_forms(t) for t in keys}
    wanted = list(dict.fromkeys(f for fs in forms.values() for f in fs))
    found: dict[Any, Entity] = {}
    for i in range(0, len(wanted), CHUNK):
        part = wanted[i : i + CHUNK]
        for row in db.query(
            f"SELECT {_COLUMNS} FROM entity WHERE cohort = ? AND key IN ({_marks(len(part))})",
            (cohort, *dialect.keys(db, part)),
        ):
            e = _entity(row)
            found[(type(e.key).__name__, e.key)] = e
    out: list[Entity] = []
    missing: list[str] = []
    seen: set[tuple[str, Any]] = set()
    for text, fs in forms.items():
        hits = [(type(f).__name__, f) for f in fs if (type(f).__name__, f) in found]
        if not hits:
            missing.append(text)
        for h in hits:
            if h not in seen:
                seen.add(h)
                out.append(found[h])
    return out, missing


def _filter(
    cohort: str, wave: str | None, states: Sequence[str], alias: str = ""
) -> tuple[str, list[Any]]:
    p = f"{alias}." if alias else ""
    where = f"{p}cohort = ?"
    args: list[Any] = [cohort]
    if wave is not None:
        where += f" AND {p}wave = ?"
        args.append(wave)
    if states:
        where += f" AND {p}state IN ({_marks(len(states))})"
        args.extend(states)
    return where, args


def count(
    db: dbm.Database, cohort: str, wave: str | None = None, states: Sequence[str] = ()
) -> int:
    """How many entities ``select`` would give (the covering index, no table row read)."""
    where, args = _filter(cohort, wave, states)
    return int(db.query(f"SELECT count(*) FROM entity WHERE {where}", args)[0][0])


def select(
    db: dbm.Database,
    cohort: str,
    waves: Sequence[str],
    wave: str | None = None,
    states: Sequence[str] = (),
) -> Iterator[Entity]:
    """The entities of the cohort in ``wave`` and ``states`` (all when not given), streamed:
    waves in draw order (entities in no wave last), keys in order within a wave."""
    where, args = _filter(cohort, wave, states)
    order, params = _order(waves)
    cur = db.execute(
        f"SELECT {_COLUMNS} FROM entity WHERE {where} ORDER BY {order}, key",
        (*args, *params),
    )
    while True:
        rows = cur.fetchmany(5000)
        if not rows:
            return
        for row in rows:
            yield _entity(row)


def _order(waves: Sequence[str]) -> tuple[str, list[Any]]:
    order = "CASE wave " + " ".join("WHEN ? THEN ?" for _ in waves) + f" ELSE {len(waves)} END"
    return order, [x for i, w in enumerate(waves) for x in (w, i)]


def _key_order(e: Entity) -> tuple[int, Any]:
    """SQLite's order of keys of mixed types: numbers before text."""
    return (0 if isinstance(e.key, (int, float)) else 1, e.key)


def flat(
    db: dbm.Database,
    cohort: str,
    waves: Sequence[str],
    attributes: Sequence[str],
    wave: str | None = None,
    states: Sequence[str] = (),
) -> Iterator[tuple[Any, ...]]:
    """(key, wave, state, reason, updated_at, *attributes) of the entities ``select`` gives,
    in key order, each attribute taken out of the JSON by the database (``->>``): the CSV of
    a whole cohort streams in primary-key order, with no sort and no Python JSON parse per
    entity; a filtered one uses the (cohort, wave, state) index and sorts what matched."""
    if sqlite3.sqlite_version_info < (3, 38):  # no ->> before SQLite 3.38
        for e in sorted(select(db, cohort, waves, wave, states), key=_key_order):
            yield (e.key, e.wave, e.state, e.reason, e.updated_at,
                   *(e.attributes.get(a) for a in attributes))  # fmt: skip
        return
    where, args = _filter(cohort, wave, states)
    # `+key`: not the primary key's order, so that a filter uses the wave/state index
    order = dialect.exact(db, "key") if wave is not None or states else "key"
    keep = ", ".join(f"'{s}'" for s in sorted(WITH_REASON))
    # an attribute holding a NUL character (JSON's \u0000, which a source may hold) is taken
    # out by Python: PostgreSQL's `::jsonb` refuses it, SQLite's `->>` cuts the text there;
    # every other row is as the database gives it
    nul = dialect.contains(db, "attrs", "'\\u0000'")
    field = dialect.json_field(db, "attrs")
    cols = "".join(f", CASE WHEN {nul} THEN NULL ELSE {field} END" for _ in attributes)
    cur = db.execute(
        f"SELECT key, wave, state, CASE WHEN state IN ({keep}) THEN reason END, updated_at"
        f"{cols}, CASE WHEN {nul} THEN attrs END FROM entity WHERE {where} ORDER BY {order}",
        (*attributes, *args),
    )
    while True:
        rows = cur.fetchmany(5000)
        if not rows:
            return
        for row in rows:
            if row[-1] is None:
                yield row[:-1]
                continue
            got = json.loads(row[-1])
            yield (*row[:5], *(_text_of(got.get(a)) for a in attributes))


def _text_of(value: Any) -> Any:
    """An attribute as ``->>`` gives it: a string, a number or None as it is, an object or an
    array as its JSON text, a boolean as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _bucket(entities: Sequence[Entity]) -> dict[tuple[str, Any], Entity]:
    return {(type(e.key).__name__, e.key): e for e in entities}


def _attach(by_key: dict[tuple[str, Any], Entity], rows: Sequence[Sequence[Any]], m: bool) -> None:
    for row in rows:
        e = by_key.get((type(row[0]).__name__, row[0]))
        if e is None:
            continue
        if m:
            e.messages.append(Message(row[1], row[2], row[3], row[4], row[5], row[6], row[7]))
        else:
            e.transitions.append(Transition(row[1], row[2], row[3], row[4], row[5], row[6]))


_T = "key, state, step, run, attempt, reason, at"
_M = "key, channel, message_id, step, attempt, at, state"


def _messages(db: dbm.Database) -> tuple[str, str]:
    """(columns, join) of the ledger's messages with their delivery state in the outbox (a
    state written before the outbox existed has none)."""
    cols = ", ".join(f"m.{c.strip()}" for c in _M.split(","))
    if not has_outbox(db):
        return cols + ", NULL", ""
    table, _, _ = scope(db)  # an outbox row's id is unique in the table
    return cols + ", o.state", f" LEFT JOIN {table} o ON o.id = m.outbox"


def history(db: dbm.Database, cohort: str, entities: Sequence[Entity]) -> None:
    """Fill in every transition and message of these entities (by key, in chunks)."""
    by_key = _bucket(entities)
    keys = [e.key for e in entities]
    cols, delivery = _messages(db)
    for i in range(0, len(keys), CHUNK):
        part = keys[i : i + CHUNK]
        inn = f"cohort = ? AND key IN ({_marks(len(part))})"
        _attach(
            by_key,
            db.query(
                f"SELECT {_T} FROM transition WHERE {inn} ORDER BY seq",
                (cohort, *dialect.keys(db, part)),
            ),
            False,
        )
        inn = f"m.cohort = ? AND m.key IN ({_marks(len(part))})"
        _attach(
            by_key,
            db.query(
                f"SELECT {cols} FROM message m{delivery} WHERE {inn} ORDER BY m.seq",
                (cohort, *dialect.keys(db, part)),
            ),
            True,
        )


def history_where(
    db: dbm.Database,
    cohort: str,
    entities: Sequence[Entity],
    wave: str | None,
    states: Sequence[str],
) -> None:
    """Fill in the history of every entity ``select(wave, states)`` gave: one join per table
    instead of one query per chunk of keys (a filter may match a whole wave)."""
    by_key = _bucket(entities)
    where, args = _filter(cohort, wave, states, "e")
    sel = ", ".join(f"x.{c.strip()}" for c in _T.split(","))
    rows = db.query(
        f"SELECT {sel} FROM entity e JOIN transition x ON x.cohort = e.cohort AND x.key = e.key"
        f" WHERE {where} ORDER BY x.seq",
        args,
    )
    _attach(by_key, rows, False)
    cols, delivery = _messages(db)
    rows = db.query(
        f"SELECT {cols} FROM entity e JOIN message m ON m.cohort = e.cohort AND m.key = e.key"
        f"{delivery} WHERE {where} ORDER BY m.seq",
        args,
    )
    _attach(by_key, rows, True)
