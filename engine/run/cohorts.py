"""Cohorts at run time: freezing before the first wave, wave attempts, the members a step works
on, its marks committed with its success, and compensation when a wave is undone (SPEC §7).

Every ledger write happens inside a store transaction together with the journal record that
says it happened (``Store.stage(rec, effect)``): a crash at any instant leaves the ledger and
the journal agreeing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from ..cohort import freeze as fz
from ..cohort.draw import DrawError
from ..errors import ActionFailed, InvalidInput
from ..format.cohorts import step_cohort
from ..format.model import HOLDOUT, Cohort, Instance, Runbook
from ..format.templates import TemplateError, render
from ..state import ledger
from ..state.db import Database
from ..state.outcome import CohortOutcome as CohortOutcome
from ..state.outcome import cohort_outcomes
from ..state.status import State
from ..state.store import Store, now


def cohort_of(inst: Instance) -> str | None:
    """The cohort whose members ``inst`` works on, when it runs in a wave of that cohort."""
    name = step_cohort(inst.step)
    if name is None or inst.wave is None or inst.phase.cohort != name:
        return None
    return name


def source_dsn(
    rb: Runbook, cohort: Cohort, variables: Mapping[str, Any], secrets: Mapping[str, Any]
) -> str:
    try:
        return str(render(cohort.dsn, {"vars": variables, "secrets": secrets}))
    except TemplateError as exc:
        raise InvalidInput(
            str(rb.source.problem((*cohort.path, "source", "dsn"), f"template error: {exc}"))
        ) from None


def used_cohorts(rb: Runbook, nodes: Iterable[str]) -> list[Cohort]:
    names = {rb.instances[n].phase.cohort for n in nodes if n in rb.instances}
    return [c for name, c in rb.cohorts.items() if name in names]


def check_frozen(rb: Runbook, store: Store, cohorts: Iterable[Cohort]) -> None:
    """A frozen cohort whose draw was edited: exit 2 naming `cohort redraw` (SPEC §11)."""
    for c in cohorts:
        got = ledger.frozen(store.db, c.name)
        if got is not None and got.digest != fz.digest(c) and not _extended(got.definition, c):
            raise InvalidInput(
                str(
                    rb.source.problem(
                        c.path,
                        f"cohort {c.name!r} was frozen on {got.frozen_at} with another draw "
                        "(key, exclude, strata, waves, holdout or seed changed); its members are "
                        f"not re-drawn by an edit: run `runbook cohort redraw {rb.file} --from "
                        "WAVE` for the waves not yet started, or undo the edit",
                    )
                )
            )


def _extended(frozen: Mapping[str, Any], cohort: Cohort) -> bool:
    """The frozen draw with only empty waves (`size: 0`) appended: the same draw."""
    now_ = cohort.draw_definition()
    old_waves, new_waves = list(frozen.get("waves", [])), now_["waves"]
    same_rest = {k: v for k, v in now_.items() if k != "waves"} == {
        k: v for k, v in frozen.items() if k != "waves"
    }
    return (
        same_rest
        and new_waves[: len(old_waves)] == old_waves
        and all(w[1] in ("0", "0%") for w in new_waves[len(old_waves) :])
    )


def draw_missing(
    rb: Runbook,
    store: Store,
    cohorts: Iterable[Cohort],
    variables: Mapping[str, Any],
    secrets: Mapping[str, Any],
) -> list[fz.Drawn]:
    """Draw (in memory) every cohort not frozen yet: the source read, the sizes checked. A
    DrawError (exit 2) here comes before anything is written."""
    return [
        fz.read(c, source_dsn(rb, c, variables, secrets), rb.source)
        for c in cohorts
        if ledger.frozen(store.db, c.name) is None
    ]


def freeze_drawn(
    store: Store, drawn: Iterable[fz.Drawn], run: str | None, notice: Callable[[str], None]
) -> None:
    """Freeze each draw into the ledger, in one transaction with the journal record of it."""
    for d in drawn:
        c = d.cohort
        summary = d.summary()
        store.commit(
            {"t": "cohort", "cohort": c.name, "event": "frozen", "run": run, "summary": summary},
            effect=partial(fz.freeze, drawn=d, at=now(), run=run),
        )
        notice(frozen_line(c, summary))


def frozen_line(c: Cohort, summary: Mapping[str, Any]) -> str:
    waves = ", ".join(f"{w['id']} {w['size']}" for w in summary.get("waves", []))
    excluded = summary.get("excluded") or {}
    ex = ", ".join(f"{n} {r}" for r, n in excluded.items())
    return (
        f"cohort {c.name}: drew {summary.get('eligible', 0)} eligible of "
        f"{summary.get('source_rows', 0)} ({waves})" + (f"; excluded: {ex}" if ex else "")
    )


class WaveMembers:
    """``ActionContext.members`` for one attempt of one step in one cohort wave."""

    def __init__(
        self,
        store: Store,
        cohort: Cohort,
        wave: str,
        attempt: int,
        step: str,
        run: str,
        undoing: bool = False,
    ) -> None:
        self.store = store
        # a rollback works on every member the attempt touched, failed ones included
        self.states = ledger.MEMBER_STATES if undoing else ledger.ORDER
        self.definition = cohort
        self.cohort = cohort.name
        self.key_column = cohort.key
        self.wave = wave
        self.attempt = attempt
        self.step = step
        self.run = run
        self.handled: list[Any] | None = None
        self.failed: list[tuple[Any, str]] = []
        self.cut: list[Any] = []
        self.per_member = False  # set by foreach: its members' marks are their own calls
        self.complete = False  # see completed()

    def rows(self) -> list[tuple[Any, dict[str, Any], str]]:
        states = self.states
        if self.per_member and "failed" not in states:
            states = (*states, "failed", "unknown")  # a re-run calls them again
        return ledger.members(self.store.db, self.cohort, self.wave, states)

    def keys(self) -> list[Any]:
        return [k for k, _, _ in self.rows()]

    def sample(self) -> tuple[list[Any], str, list[Any]]:
        """For a gate that compares (SPEC §7, §11): the keys of this wave's members at or past
        `moved`; the baseline's name and keys: the holdout while it has not moved, else the
        members of the waves after this one not yet moved."""
        db, name = self.store.db, self.cohort
        moved = [k for k, _, _ in ledger.members(db, name, self.wave, ("moved", "verified"))]
        waiting = ("pending", "notified")
        ids = list(self.definition.wave_ids)
        if HOLDOUT in ids and self.wave != HOLDOUT:
            return moved, HOLDOUT, [k for k, _, _ in ledger.members(db, name, HOLDOUT, waiting)]
        later = ids[ids.index(self.wave) + 1 :] if self.wave in ids else []
        keys = [k for w in later for k, _, _ in ledger.members(db, name, w, waiting)]
        return moved, "pending", keys

    @property
    def ledger_path(self) -> Path | None:
        """The ledger's file (a directory's ``state.db``); None on PostgreSQL."""
        if self.store.db.dialect != "sqlite":
            return None
        return Path(self.store.db.path)

    def select_sql(self, schema: str) -> tuple[str, tuple[Any, ...]]:
        return ledger.member_query(self.cohort, self.wave, schema, self.states)

    def only(self, keys: Iterable[Any]) -> None:
        self.handled = [*(self.handled or []), *keys]

    def fail(self, key: Any, reason: str) -> None:
        self.failed.append((key, reason))

    def unknown(self, keys: Iterable[Any]) -> None:
        """Members whose call was cut by a crash: `unknown` until the operator resolves them."""
        self.cut.extend(keys)

    def messages(self, rows: Iterable[tuple[Any, str, str | None, str]]) -> None:
        batch = [(k, self.step, self.attempt, ch, mid, st) for k, ch, mid, st in rows]
        if not batch:
            return
        at = now()
        self.store.commit(
            {
                "t": "event",
                "id": self.step,
                "kind": "ledger.messages",
                "data": {"count": len(batch)},
            },
            effect=lambda db: ledger.record_messages(db, self.cohort, batch, at),
        )

    def completed(self) -> None:
        """The action handled every member of the wave (those it failed aside): on a failure
        under `continue`, they still reach the step's `marks` (a verify that found differences
        verified the others)."""
        self.complete = True

    def mark(self, state: str | None, succeeded: bool, keep_going: bool) -> ledger.Mark | None:
        """The marks to commit: ``state`` for the members handled, ``failed`` for those that
        failed. On success, the members handled are those the action named, else all of them;
        on a failure (under `continue`, or a foreach's members done), only those the action
        said it handled: a step that failed before touching its members marks nobody."""
        explicit = self.handled is not None or self.complete
        with_state = succeeded or (keep_going and explicit)
        if not self.failed and not self.cut and (state is None or not with_state):
            return None
        return ledger.Mark(
            self.cohort,
            self.wave,
            state if with_state else None,
            self.step,
            self.run,
            self.attempt,
            keys=self.handled,
            failed=list(self.failed),
            unknown=list(self.cut),
            revive=self.per_member,
        )


def mark_effect(mark: ledger.Mark | None) -> Callable[[Database], None] | None:
    if mark is None:
        return None
    at = now()
    return lambda db: _apply(db, mark, at)


def _apply(db: Database, mark: ledger.Mark, at: str) -> None:
    ledger.apply_mark(db, mark, at)


def _compensate(db: Database, *, cohort: str, wave: str, run: str, attempt: int, at: str) -> None:
    ledger.compensate(db, cohort, wave, "(rollback)", run, attempt, at)


def begin_wave(
    rb: Runbook,
    store: Store,
    inst: Instance,
    run: str,
    variables: Mapping[str, Any],
    secrets: Mapping[str, Any],
) -> tuple[int, str | None]:
    """The attempt of ``inst``'s cohort wave, starting it when this run has not (reconcile the
    cohort with its source, reopen compensated members, journal the start: one transaction).
    Returns (attempt, a notice or None); raises ActionFailed when the source cannot be read."""
    cohort = rb.cohorts[inst.phase.cohort or ""]
    assert inst.wave is not None
    key = (cohort.name, inst.wave.id)
    current = store.state.attempts.get(key)
    if current is not None and current.run == run and current.status == "started":
        return current.attempt, None
    attempt = (current.attempt + 1) if current is not None else 1
    dsn = source_dsn(rb, cohort, variables, secrets)
    at = now()
    found: dict[str, Any] = {}

    def effect(db: Database) -> None:
        try:
            started = [w for (c, w), a in store.state.attempts.items() if c == cohort.name]
            got = fz.reconcile(
                db, cohort, dsn, at, run, inst.wave.id if inst.wave else None, None, started
            )
        except DrawError as exc:
            raise ActionFailed(exc.message) from None
        found["late"], found["vanished"] = got.late, got.vanished
        found["late_keys"], found["vanished_keys"] = got.late_keys, got.vanished_keys
        ledger.reopen(db, cohort.name, key[1], run, attempt, at)

    rec = {
        "t": "wave",
        "cohort": cohort.name,
        "wave": key[1],
        "attempt": attempt,
        "run": run,
        "status": "started",
    }
    store.commit(rec, effect=effect)
    note = None
    if found.get("late") or found.get("vanished"):
        note = (
            f"cohort {cohort.name}, before wave {key[1]}: {found['late']} late (not in the draw: "
            f"`runbook cohort admit` puts them in a wave), {found['vanished']} vanished from the "
            "source"
        )
        store.commit(
            {
                "t": "cohort",
                "cohort": cohort.name,
                "event": "reconciled",
                "run": run,
                "late": found["late"],
                "vanished": found["vanished"],
                "late_keys": [str(k) for k in found["late_keys"]],
                "vanished_keys": [str(k) for k in found["vanished_keys"]],
            }
        )
    return attempt, note


def compensate(
    rb: Runbook, store: Store, undone: Iterable[str], run: str, notice: Callable[[str], None]
) -> None:
    """After a rollback: each cohort wave whose every member-touching step is undone has its
    members ``compensated``; a wave with such a step left in place keeps its members' states."""
    from ..state.status import Status

    waves: dict[tuple[str, str], list[str]] = {}
    for node in undone:
        inst = rb.instances.get(node)
        if inst is not None and inst.phase.cohort and inst.wave is not None:
            waves.setdefault((inst.phase.cohort, inst.wave.id), []).append(node)
    for (cohort, wave), nodes in sorted(waves.items()):
        current = store.state.attempts.get((cohort, wave))
        attempt_no = current.attempt if current is not None else 0
        if not any(
            store.state.status_of(n) is Status.ROLLED_BACK or _undone_calls(store, n, attempt_no)
            for n in nodes
        ):
            continue  # nothing of this wave was undone
        touching = [
            i.id
            for i in rb.instances.values()
            if i.phase.cohort == cohort
            and i.wave is not None
            and i.wave.id == wave
            and cohort_of(i) is not None
        ]
        in_place = (Status.SUCCEEDED, Status.ROLLBACK_FAILED, Status.ROLLING_BACK, Status.UNKNOWN)
        left = [
            n
            for n in touching
            if store.state.status_of(n) in in_place
            # failed part way, not undone: what it changed for its members may still be there
            or (store.state.status_of(n) is Status.FAILED and _changes(rb.instances[n]))
        ]
        if current is None or current.status == "compensated":
            continue
        if left:
            keys = _undone_members(rb, store, left, current.attempt)
            if keys:
                at = now()
                store.commit(
                    {
                        "t": "event",
                        "id": left[0],
                        "kind": "ledger.compensated",
                        "data": {"cohort": cohort, "wave": wave, "count": len(keys)},
                    },
                    effect=partial(
                        _compensate_keys,
                        cohort=cohort,
                        wave=wave,
                        keys=keys,
                        run=run,
                        attempt=current.attempt,
                        at=at,
                    ),
                )
            counts = ", ".join(
                f"{n} {st}"
                for w, st, n in ledger.counts(store.db, cohort)
                if w == wave and st in ledger.MEMBER_STATES
            )
            if keys:
                notice(
                    f"cohort {cohort}, wave {wave}: {len(keys)} member(s) compensated (every "
                    f"step that touched them was undone for them); the others stay as they are, "
                    f"since {', '.join(left)} was not undone for them ({counts}): `runbook "
                    f"customers --wave {wave}` lists them"
                )
                continue
            notice(
                f"cohort {cohort}, wave {wave}: not compensated, since {', '.join(left)} "
                f"touched its members and {'was' if len(left) == 1 else 'were'} left in place; "
                f"its members stay as they are ({counts}): `runbook customers --wave {wave}` "
                "lists them"
            )
            continue
        at = now()
        attempt = current.attempt
        store.commit(
            {
                "t": "wave",
                "cohort": cohort,
                "wave": wave,
                "attempt": attempt,
                "run": run,
                "status": "compensated",
            },
            effect=partial(_compensate, cohort=cohort, wave=wave, run=run, attempt=attempt, at=at),
        )


def _undone_calls(store: Store, node: str, attempt: int) -> bool:
    """``node``'s per-member rollback undid some members in ``attempt``."""
    calls = store.state.member_calls.get((f"{node}#rollback", attempt), {})
    return any(v == "done" for v in calls.values())


def _undone_members(rb: Runbook, store: Store, left: list[str], attempt: int) -> list[Any]:
    """The members for which every step left in place was undone all the same, member by
    member (SPEC §11: compensated only if every step that touched it was undone). None when
    a step left in place is not undone per member: it touched every member."""
    undone: list[set[Any]] = []
    touched: list[set[Any]] = []
    for n in left:
        inst = rb.instances[n]
        if inst.step.foreach is None or inst.step.rollback is None:
            return []
        back = store.state.member_calls.get((f"{n}#rollback", attempt), {})
        fwd = store.state.member_calls.get((n, attempt), {})
        undone.append({k for k, v in back.items() if v == "done"})
        touched.append({k for k, v in fwd.items() if v != "failed"})
    keys = set().union(*undone)
    return sorted(
        (
            k
            for k in keys
            if all(k in u or k not in t for u, t in zip(undone, touched, strict=True))
        ),
        key=str,
    )


def _compensate_keys(
    db: Database,
    *,
    cohort: str,
    wave: str,
    keys: list[Any],
    run: str,
    attempt: int,
    at: str,
) -> None:
    ledger.compensate_keys(db, cohort, wave, keys, "(rollback)", run, attempt, at)


def outcomes(rb: Runbook, store: Store) -> list[CohortOutcome]:
    """Each frozen cohort's entities by state, and its finished waves that fell short."""
    return cohort_outcomes(rb, store.state, store.db)


def _changes(inst: Instance) -> bool:
    from ..actions import registry

    reg = registry()
    return inst.step.action in reg and bool(reg.get(inst.step.action).changes)


def revert_effect(rb: Runbook, store: Store, node: str) -> Callable[[Database], None] | None:
    """The effect of undoing ``node`` on its members: the marks it made in the wave's current
    attempt are taken back, so that no member is shown `moved` once its move is undone."""
    inst = rb.instances.get(node)
    if inst is None or inst.wave is None or inst.phase.cohort is None:
        return None
    if cohort_of(inst) is None or inst.step.marks is None:
        return None
    current = store.state.attempts.get((inst.phase.cohort, inst.wave.id))
    if current is None:
        return None
    return partial(
        _revert,
        cohort=inst.phase.cohort,
        wave=inst.wave.id,
        step=node,
        attempt=current.attempt,
        run=current.run,
        at=now(),
    )


def _revert(
    db: Database, *, cohort: str, wave: str, step: str, attempt: int, run: str, at: str
) -> None:
    ledger.revert(db, cohort, wave, step, attempt, run, at)


def resolved_marks(
    rb: Runbook, state: State, node: str, as_: str
) -> Callable[[Database], None] | None:
    """``resolve STEP --as succeeded`` on a step that marks its members: the operator says it
    took effect, so its members reach its `marks` as its success would have taken them."""
    inst = rb.instances.get(node)
    if inst is None or as_ != "succeeded" or inst.step.marks is None:
        return None
    cohort = cohort_of(inst)
    if cohort is None or inst.wave is None or inst.step.foreach is not None:
        return None
    current = state.attempts.get((cohort, inst.wave.id))
    if current is None:
        return None
    mark = ledger.Mark(cohort, inst.wave.id, inst.step.marks, node, current.run, current.attempt)
    return mark_effect(mark)
