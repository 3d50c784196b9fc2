"""The operator's decision on the members of a ``foreach`` step whose call was cut by a crash
(``runbook resolve FILE STEP --member KEY``): recorded in the journal and the ledger in one
transaction, beside a running ``apply`` (never under its lock), read by the next one."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from ..errors import InvalidInput
from ..format.model import Runbook
from ..masking import Masker
from ..state import ledger
from ..state.db import Database
from ..state.decisions import decide
from ..state.members import unknown_calls
from ..state.status import State
from ..state.store import now

_AS = {"succeeded": "done", "failed": "failed", "pending": "pending"}


def member_advice(file: str, step: str) -> str:
    """The command that decides members cut by a crash (never `approve`)."""
    import shlex

    q, node = shlex.quote(file), shlex.quote(step)
    return (
        f"decide each with: runbook resolve {q} {node} --member KEY --as "
        f"succeeded|failed|pending (or --all-unknown --as ...)"
    )


def resolve_members(
    rb: Runbook,
    state_dir: str,
    step: str,
    keys: Sequence[str],
    all_unknown: bool,
    as_: str,
    who: str,
    on_behalf_of: str | None = None,
) -> str:
    inst = rb.instances.get(step)
    if inst is None or inst.step.foreach is None or inst.wave is None:
        foreach = [n for n, i in rb.instances.items() if i.step.foreach is not None]
        raise InvalidInput(
            f"{step!r} is not a foreach step instance of {rb.name} (they are: "
            f"{', '.join(foreach) or 'none'})"
        )
    if as_ not in _AS:
        raise InvalidInput(
            f"a member is resolved as succeeded, failed or pending (not {as_}): the call took "
            "effect, did not, or is to be made again"
        )
    if all_unknown and keys:
        raise InvalidInput(
            f"{step}: --member/--members-from and --all-unknown exclude each other: name the "
            "members, or take every unknown one; nothing was resolved"
        )
    cohort = inst.step.foreach.cohort
    wave = inst.wave.id
    said: dict[str, Any] = {}

    # never under the run's lock (SPEC §11): checked and written in one transaction beside a
    # running apply (state/decisions.py)
    def check(found: State) -> tuple[list[dict[str, Any]], Any]:
        current = found.attempts.get((cohort, wave))
        if current is None:
            raise InvalidInput(f"{step}: its wave has not started: no member to resolve")
        records, listed = unknown_calls(found, rb, step)
        undoing = records != step  # the calls of its per-member rollback
        unknown = {str(k): k for k in listed}
        if all_unknown:
            chosen = list(unknown.values())
        else:
            missing = [k for k in keys if k not in unknown]
            if missing:
                raise InvalidInput(
                    f"{step}: not unknown in this attempt: {', '.join(missing[:10])} (unknown: "
                    f"{', '.join(list(unknown)[:10]) or 'none'})"
                )
            chosen = [unknown[k] for k in keys]
        said.update(undoing=undoing, chosen=chosen)
        if not chosen:
            return [], None
        state = _AS[as_]
        journey = (
            (inst.step.marks or "before")
            if state == "done"
            else ("failed" if state == "failed" else "before")
        )
        rec = {
            "t": "members",
            "step": records,
            "attempt": current.attempt,
            "resolved": [[k, state] for k in chosen],
            "by": who,
            "on_behalf_of": on_behalf_of if on_behalf_of != who else None,
        }
        # a rollback's member: its journey moves when the wave is compensated
        effect = (
            None
            if undoing
            else partial(
                _journeys,
                cohort=cohort,
                keys=chosen,
                state=journey,
                step=step,
                run=current.run,
                attempt=current.attempt,
            )
        )
        return [rec], effect

    decide(state_dir, rb.name, Masker(), check)
    chosen, undoing = said["chosen"], said["undoing"]
    if not chosen:
        return f"{step}: no member is unknown: nothing to resolve"
    if undoing:
        return (
            f"{step}: {len(chosen)} member(s) of its rollback resolved as {as_} by {who}; run "
            f"`runbook rollback {rb.file} ...` to go on"
        )
    return (
        f"{step}: {len(chosen)} member(s) resolved as {as_} by {who}; run `runbook apply "
        f"{rb.file}` to go on"
    )


def _journeys(
    db: Database,
    *,
    cohort: str,
    keys: Sequence[Any],
    state: str,
    step: str,
    run: str,
    attempt: int,
) -> None:
    at = now()
    for k in keys:
        ledger.resolve_member(db, cohort, k, state, step, run, attempt, at)
