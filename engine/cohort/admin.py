"""The operator's changes to a frozen cohort: ``admit`` (late entities, or an excluded one
brought back, into the next wave not yet started) and ``redraw`` (the waves not yet started,
drawn again by the runbook's current definition). Each runs inside the caller's transaction,
with the journal record that says it happened (SPEC §11)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..format.model import HOLDOUT, Cohort
from ..state import dialect, ledger
from ..state.db import Database
from . import draw
from .freeze import digest, stratum

LISTED = 10


def waves_in_order(cohort: Cohort) -> list[str]:
    return list(cohort.wave_ids)


def not_started(cohort: Cohort, started: Iterable[str]) -> list[str]:
    """The cohort's waves no attempt has started, in order (a wave after a started one only)."""
    seen = set(started)
    ids = waves_in_order(cohort)
    last = max((i for i, w in enumerate(ids) if w in seen), default=-1)
    return ids[last + 1 :]


@dataclass
class Admitted:
    wave: str
    keys: list[Any] = field(default_factory=list)


def admit(
    db: Database,
    cohort: Cohort,
    started: Iterable[str],
    include: Sequence[Any],
    run: str | None,
    at: str,
) -> Admitted:
    """Late entities (and the excluded ones named by ``include``) into the next wave not yet
    started, as pending members."""
    waiting = not_started(cohort, started)
    if not waiting:
        raise InvalidInput(
            f"cohort {cohort.name!r}: every wave has started, so there is no wave to admit "
            "into; add a wave with `size: 0` at the end of the cohort's waves (it does not "
            "change the draw) and run `runbook cohort admit` again"
        )
    wave = waiting[0]
    keys = [
        k
        for (k,) in db.query(
            "SELECT key FROM entity WHERE cohort = ? AND state = 'late' ORDER BY key",
            (cohort.name,),
        )
    ]
    for k in include:
        row = db.query(
            "SELECT key, state FROM entity WHERE cohort = ? AND key = ?",
            (cohort.name, dialect.key(db, k)),
        )
        if not row:
            raise InvalidInput(f"cohort {cohort.name!r}: no entity with key {k!r}")
        if row[0][1] != "excluded":
            raise InvalidInput(
                f"cohort {cohort.name!r}: entity {k!r} is {row[0][1]}, not excluded: "
                "--include brings back an excluded entity only"
            )
        keys.append(row[0][0])
    rows = []
    for k in keys:
        attrs = db.query(
            "SELECT attrs FROM entity WHERE cohort = ? AND key = ?",
            (cohort.name, dialect.key(db, k)),
        )
        parsed = json.loads(attrs[0][0]) if attrs and attrs[0][0] else {}
        rows.append((stratum(cohort, parsed), draw.rank(cohort.seed, k), k))
    db.executemany(
        "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
        " VALUES (?, ?, 'pending', NULL, ?, NULL, ?, ?)",
        [
            (cohort.name, dialect.key(db, k), run, f"admitted into wave {wave}", at)
            for _, _, k in rows
        ],
    )
    db.executemany(
        "UPDATE entity SET wave = ?, state = 'pending', reason = NULL, stratum = ?, rank = ?,"
        " updated_at = ? WHERE cohort = ? AND key = ?",
        [(wave, st, r, at, cohort.name, dialect.key(db, k)) for st, r, k in rows],
    )
    return Admitted(wave, keys)


def redraw(
    db: Database,
    cohort: Cohort,
    frozen: ledger.Frozen,
    started: Iterable[str],
    from_wave: str,
    run: str | None,
    at: str,
    source_rows: Iterable[tuple[Any, str | None, str | None, str]] = (),
) -> dict[str, Any]:
    """Draw the waves from ``from_wave`` on again, by the cohort's current definition, from
    their members and the late entities; the waves before stay as they are. The source is read
    again (``source_rows``): a member of a redrawn wave that an edited `exclude` now matches
    is excluded with its reason, one gone from the source is vanished, and the strata come
    from its current attributes. Returns the new summary."""
    if frozen.definition.get("key") != cohort.key:
        raise InvalidInput(
            f"cohort {cohort.name!r}: its key changed ({frozen.definition.get('key')!r} -> "
            f"{cohort.key!r}): a redraw keeps the entities; a new key is a new cohort"
        )
    ids = waves_in_order(cohort)
    if from_wave not in ids:
        raise InvalidInput(
            f"cohort {cohort.name!r} has no wave {from_wave!r} (waves: {', '.join(ids)})"
        )
    waiting = not_started(cohort, started)
    if from_wave not in waiting:
        raise InvalidInput(
            f"cohort {cohort.name!r}: wave {from_wave!r} has started; only waves not yet "
            f"started can be drawn again ({', '.join(waiting) or 'none is left'})"
        )
    keep = ids[: ids.index(from_wave)]
    old = {w[0]: w for w in frozen.definition.get("waves", [])}
    new = {w.id: w for w in cohort.waves}
    for w in keep:
        if w == HOLDOUT:
            continue
        if w not in old or w not in new or [w, new[w].size.text, new[w].min] != old[w]:
            raise InvalidInput(
                f"cohort {cohort.name!r}: wave {w!r} comes before {from_wave!r} and is kept: "
                "its definition must not change in a redraw"
            )
    kept = {
        w: n
        for w, n in db.query(
            "SELECT wave, count(*) FROM entity WHERE cohort = ? AND wave IS NOT NULL GROUP BY wave",
            (cohort.name,),
        )
        if w in keep
    }
    moving = ids[ids.index(from_wave) :]
    pool_rows = db.query(
        f"SELECT key, attrs FROM entity WHERE cohort = ? AND ((wave IN ({', '.join('?' * len(moving))})"
        " AND state IN ('pending', 'compensated')) OR state = 'late')",
        (cohort.name, *moving),
    )
    in_source = {key: (reason, attrs) for key, reason, _st, attrs in source_rows}
    pool: list[tuple[Any, str]] = []
    dropped: list[tuple[Any, str, str]] = []  # (key, state, reason)
    for k, a in pool_rows:
        if in_source and k not in in_source:
            dropped.append((k, "vanished", "gone from the source"))
            continue
        reason, attrs = in_source.get(k, (None, a))
        if reason is not None:
            dropped.append((k, "excluded", str(reason)))
            continue
        parsed = json.loads(attrs) if attrs else {}
        pool.append((k, stratum(cohort, parsed) or ""))
    for k, state, why in dropped:
        db.execute(
            "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
            " VALUES (?, ?, ?, NULL, ?, NULL, ?, ?)",
            (cohort.name, dialect.key(db, k), state, run, f"{why} (cohort redraw)", at),
        )
        db.execute(
            "UPDATE entity SET wave = NULL, state = ?, reason = ?, updated_at = ?"
            " WHERE cohort = ? AND key = ?",
            (state, why, at, cohort.name, dialect.key(db, k)),
        )
    total = sum(kept.values()) + len(pool)
    planned = draw.sizes(cohort, total)
    counts = [(w, n) for w, n in planned if w in moving]
    short = len(pool) - sum(n for _, n in counts)
    if short < 0:
        raise InvalidInput(
            f"cohort {cohort.name!r}: the redrawn waves ask for {sum(n for _, n in counts)} "
            f"members, {len(pool)} are left to draw from"
        )
    if counts:
        w, n = counts[-1] if counts[-1][0] != HOLDOUT or len(counts) == 1 else counts[-2]
        idx = [c[0] for c in counts].index(w)
        counts[idx] = (w, n + short)  # the last wave takes what the kept ones leave
    strata, placed = draw.place(cohort.seed, pool, counts)
    # set-wise: the new places in a temporary table (one COPY on PostgreSQL), then one
    # statement for the transitions and one for the entities
    to = dialect.rows_table(
        db,
        "redrawn",
        (("wave", "TEXT"), ("rank", "BIGINT")),
        ((k, w, r) for k, (w, r) in placed.items()),
    )
    db.execute(
        "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
        f" SELECT ?, r.key, 'pending', NULL, ?, NULL, 'redrawn into wave ' || r.wave, ? FROM {to} r",
        (cohort.name, run, at),
    )
    db.execute(
        f"UPDATE entity SET wave = r.wave, rank = r.rank, state = 'pending', reason = NULL,"
        f" updated_at = ? FROM {to} r WHERE entity.cohort = ? AND entity.key = r.key",
        (at, cohort.name),
    )
    db.execute(f"DELETE FROM {to}")
    summary = dict(frozen.summary)
    sizes = {w: n for w, n in kept.items()}
    sizes.update({w: n for w, n in counts})
    old_strata = {w["id"]: w.get("strata", {}) for w in frozen.summary.get("waves", [])}
    summary["waves"] = [
        {"id": w, "size": sizes.get(w, 0), "strata": strata.get(w, old_strata.get(w, {}))}
        for w in ids
    ]
    summary["eligible"] = total
    db.execute(
        "UPDATE cohort SET digest = ?, definition = ?, summary = ? WHERE name = ?",
        (digest(cohort), json.dumps(cohort.draw_definition()), json.dumps(summary), cohort.name),
    )
    return summary
