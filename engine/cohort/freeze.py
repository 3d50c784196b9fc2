"""Drawing a cohort and freezing it into the ledger; finding late and vanished entities.

``draw`` reads the source and computes the waves in memory (``plan`` shows it, nothing is
written). ``freeze`` writes that draw into the ledger in the same transaction as the journal
record that says so. ``reconcile`` compares a frozen cohort with its source again: entities
that appeared since are ``late``, members gone from it before being moved are ``vanished``;
the attributes of the members of the wave about to start are refreshed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..format.model import Cohort, digest_of
from ..state import dialect, ledger
from ..state.db import Database
from . import draw, source

LISTED = 10  # keys named in messages and records


@dataclass
class Drawn:
    """A cohort drawn in memory."""

    cohort: Cohort
    source_rows: int = 0
    no_key: int = 0
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> count
    eligible: int = 0
    plan: draw.Plan | None = None
    rows: list[tuple[Any, str | None, str, str | None, str | None, int, str]] = field(
        default_factory=list
    )

    def summary(self) -> dict[str, Any]:
        assert self.plan is not None
        return {
            "source_rows": self.source_rows,
            "no_key": self.no_key,
            "eligible": self.eligible,
            "excluded": dict(sorted(self.excluded.items())),
            "waves": [
                {"id": w, "size": n, "strata": self.plan.strata.get(w, {})}
                for w, n in self.plan.sizes
            ],
        }


def stratum(cohort: Cohort, attrs: dict[str, Any]) -> str | None:
    """The stratum of an entity from its attributes, as the draw writes it (compact JSON)."""
    if not cohort.stratify_by:
        return None
    return json.dumps([attrs.get(a) for a in cohort.stratify_by], separators=(",", ":"))


def stratum_label(text: str | None, cohort: Cohort) -> str:
    if text is None:
        return "all"
    values = json.loads(text)
    return ", ".join(f"{a}={v}" for a, v in zip(cohort.stratify_by, values, strict=False))


class _Canon(dict[str | None, str | None]):
    """Strata as one compact JSON text, whatever spacing the source database used: computed
    once per distinct stratum, not per row."""

    def __missing__(self, raw: str | None) -> str | None:
        text = None if raw is None else json.dumps(json.loads(raw), separators=(",", ":"))
        self[raw] = text
        return text


def digest(cohort: Cohort) -> str:
    return digest_of(cohort.draw_definition())


def read(cohort: Cohort, dsn: str, smap: Any = None) -> Drawn:
    """Read the source and draw the waves (in memory). Per row only a dictionary insert: the
    database builds the JSON, strata are canonical once each, ranks are computed by the draw."""
    out = Drawn(cohort)
    seen: dict[Any, tuple[str | None, str | None, str]] = {}
    duplicates: dict[Any, int] = {}  # key -> copies beyond the first
    canon = _Canon()
    no_key = 0
    bad: dict[str, int] = {}  # reason -> keys the ledger cannot keep (``source.unusable``)
    unusable = source.unusable
    n = 0
    for key, reason, raw_stratum, attrs in source.rows(cohort, dsn, smap):
        n += 1
        if key is None:
            no_key += 1
        elif (why := unusable(key)) is not None:
            bad[why] = bad.get(why, 0) + 1
        elif key in seen:
            duplicates[key] = duplicates.get(key, 0) + 1
        else:
            seen[key] = (reason, canon[raw_stratum], attrs)
    out.source_rows, out.no_key = n, no_key
    eligible = [
        (key, st or "")
        for key, (reason, st, _a) in seen.items()
        if reason is None and key not in duplicates
    ]
    out.eligible = len(eligible)
    plan, assigned = draw.assign(cohort, eligible)
    out.plan = plan
    if no_key:
        out.excluded["no-key"] = no_key
    # like a NULL key, a key the ledger cannot keep is counted, not written (SPEC §7)
    out.excluded.update(bad)
    # the ledger's rows wave by wave (in source order within each): a wave's rows then share
    # their pages, and marking a wave rewrites a fifth of the table, not every page of it
    # (200,000 marks of 1,000,000: 0.6-0.8 s instead of 1.4-2.7 s, measured)
    by_wave: dict[str, list[tuple[Any, str | None, str, str | None, str | None, int, str]]] = {
        w: [] for w, _n in plan.sizes
    }
    rows = out.rows
    seed = cohort.seed
    for key, (reason, st, attrs) in seen.items():
        got = assigned.get(key)
        if got is not None:
            by_wave[got[0]].append((key, got[0], "pending", None, st, got[1], attrs))
            continue
        why = "duplicate-key" if key in duplicates else str(reason)
        # every copy of a duplicate key is excluded and counted (SPEC §7); the ledger keeps one
        # row for the key, with the first copy's attributes
        copies = 1 + duplicates.get(key, 0)
        out.excluded[why] = out.excluded.get(why, 0) + copies
        rows.append((key, None, "excluded", why, st, draw.rank(seed, key), attrs))
    excluded, out.rows = rows, []
    for members in by_wave.values():
        out.rows.extend(members)
    out.rows.extend(excluded)
    return out


def freeze(db: Database, *, drawn: Drawn, at: str, run: str | None) -> None:
    """Write the draw (inside the caller's transaction)."""
    c = drawn.cohort
    ledger.write_draw(
        db, c.name, at, run, digest(c), c.draw_definition(), drawn.summary(), drawn.rows
    )


@dataclass
class Reconciled:
    late: int = 0
    vanished: int = 0
    late_keys: list[Any] = field(default_factory=list)
    vanished_keys: list[Any] = field(default_factory=list)


def reconcile(
    db: Database,
    cohort: Cohort,
    dsn: str,
    at: str,
    run: str | None,
    refresh_wave: str | None,
    smap: Any = None,
    started: Iterable[str] = (),
) -> Reconciled:
    """Late and vanished entities, marked in the ledger (inside the caller's transaction);
    the attributes of ``refresh_wave``'s members refreshed from the source. A vanished member
    back in the source rejoins its wave when that wave has not started (``started`` lists the
    waves that have), else it is late: `cohort admit` puts it in a wave."""

    def feed() -> Any:
        for key, _reason, _stratum, attrs in source.rows(cohort, dsn, smap):
            if key is not None and source.unusable(key) is None:
                yield key, attrs

    src = dialect.keys_table(db, "source_keys", feed(), attrs=True)
    out = Reconciled()
    back = db.query(
        "SELECT e.key, e.wave FROM entity e WHERE e.cohort = ? AND e.state = 'vanished'"
        f" AND EXISTS (SELECT 1 FROM {src} s WHERE s.key = e.key)",
        (cohort.name,),
    )
    gone_by = set(started) - ({refresh_wave} if refresh_wave else set())
    for key, wave in back:
        rejoin = wave is not None and wave not in gone_by
        state, why = (
            ("pending", "back in the source")
            if rejoin
            else ("late", "back in the source after its wave started")
        )
        db.execute(
            "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
            " VALUES (?, ?, ?, NULL, ?, NULL, ?, ?)",
            (cohort.name, dialect.key(db, key), state, run, why, at),
        )
        db.execute(
            "UPDATE entity SET state = ?, reason = ?, updated_at = ?"
            + ("" if rejoin else ", wave = NULL")
            + " WHERE cohort = ? AND key = ?",
            (state, None if rejoin else why, at, cohort.name, dialect.key(db, key)),
        )
        if not rejoin:
            out.late += 1
            out.late_keys.append(key)
    late = db.query(
        f"SELECT s.key FROM {src} s WHERE NOT EXISTS (SELECT 1 FROM entity e"
        " WHERE e.cohort = ? AND e.key = s.key)",
        (cohort.name,),
    )
    out.late += len(late)
    out.late_keys = (out.late_keys + [k for (k,) in late])[:LISTED]
    if late:
        new = (
            f" FROM {src} s WHERE NOT EXISTS (SELECT 1 FROM entity e"
            " WHERE e.cohort = ? AND e.key = s.key)"
        )
        db.execute(
            "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
            " SELECT ?, s.key, 'late', NULL, ?, NULL, 'appeared after the draw', ?" + new,
            (cohort.name, run, at, cohort.name),
        )
        db.execute(
            "INSERT INTO entity (cohort, key, wave, state, reason, rank, attrs, updated_at)"
            " SELECT ?, s.key, NULL, 'late', 'appeared after the draw', NULL, s.attrs, ?" + new,
            (cohort.name, at, cohort.name),
        )
    gone = (
        "FROM entity e WHERE e.cohort = ? AND e.state IN ('pending', 'notified')"
        f" AND NOT EXISTS (SELECT 1 FROM {src} s WHERE s.key = e.key)"
    )
    vanished = db.query(f"SELECT e.key {gone}", (cohort.name,))
    out.vanished = len(vanished)
    out.vanished_keys = [k for (k,) in vanished[:LISTED]]
    if vanished:
        db.execute(
            "INSERT INTO transition (cohort, key, state, step, run, attempt, reason, at)"
            f" SELECT e.cohort, e.key, 'vanished', NULL, ?, NULL, 'gone from the source', ? {gone}",
            (run, at, cohort.name),
        )
        db.execute(
            "UPDATE entity SET state = 'vanished', reason = 'gone from the source',"
            f" updated_at = ? WHERE {dialect.same_rows(db, gone)}",
            (at, cohort.name),
        )
    if refresh_wave is not None:
        # only the rows whose attributes changed are written (a wave of 200,000 unchanged
        # members rewrote all their pages at every wave start)
        db.execute(
            f"UPDATE entity SET attrs = s.attrs FROM {src} s"
            " WHERE entity.cohort = ? AND entity.wave = ? AND s.key = entity.key"
            f" AND entity.attrs {dialect.differs(db)} s.attrs",
            (cohort.name, refresh_wave),
        )
    db.execute(f"DELETE FROM {src}")
    return out
