"""What ``runbook rollback`` does around the Rollback runner: scope, preview, summary."""

from __future__ import annotations

from ..console.terminal import Console
from ..errors import Exit
from ..format.printable import one_line
from ..graph.scope import select
from ..state.status import RunStatus, Status
from ..state.store import read_state
from .members import member_advice
from .rollback import (
    Rollback,
    per_member_undo,
    rollback_groups,
    rollback_left_unknown,
    undo_for,
)
from .runner import Session
from .session import Prepared
from .summary import counts_text


def _scope(prepared: Prepared, step: str | None, phase: str | None, wave: str | None) -> set[str]:
    rb = prepared.runbook
    ident = step or phase or wave
    return select(rb, [ident] if ident else [])


def targets_for(
    prepared: Prepared, state_dir: str, step: str | None, phase: str | None, wave: str | None
) -> set[str]:
    got = read_state(state_dir, prepared.runbook.name)
    if got is None:
        return set()
    state = got[0]
    live = {Status.SUCCEEDED, Status.ROLLING_BACK, Status.ROLLBACK_FAILED}
    base = _scope(prepared, step, phase, wave)
    grown = base | prepared.dag.descendants(base)
    return {
        n
        for n in grown
        if state.status_of(n) in live or rollback_left_unknown(state, prepared.runbook.instances[n])
    }


def plan_text(
    prepared: Prepared, state_dir: str, step: str | None, phase: str | None, wave: str | None
) -> int:
    """``rollback --plan``: reads the state, writes nothing, takes no lock."""
    console = Console()
    targets = targets_for(prepared, state_dir, step, phase, wave)
    if not targets:
        console.out("nothing to roll back: no succeeded step in that scope")
        return 0
    rb = prepared.runbook
    groups = rollback_groups(prepared.dag, targets)
    console.out(f"rollback plan for {rb.name}: {len(targets)} step(s), {len(groups)} group(s)")
    console.out("(each group runs after the one above; steps in a group run in parallel)")
    for i, group in enumerate(groups, 1):
        console.out(f"  group {i}:")
        for node in group:
            console.out(f"    ↶ {node}: {undo_for(rb.instances[node]).description}")
    return 0


def run_rollback(
    session: Session,
    step: str | None,
    phase: str | None,
    wave: str | None,
    max_parallel: int,
    grace: float,
    accept_changes: bool = False,
) -> int:
    rb = session.runbook
    ident = step or phase or wave
    base = select(rb, [ident] if ident else [])
    runner = Rollback(session, max_parallel, grace)
    targets = runner.expand(base)
    state = session.state
    run = state.run
    if run is not None:
        # the run's pins (SPEC §8): an edit or other vars that change what would be undone
        # is refused (exit 2, nothing written) until --accept-changes, journaled as for apply
        from . import pins

        accepted = pins.repin(session, run, accept_changes, undo=targets)
        for rec in accepted:
            runner.emit(rec)
        if accepted:
            runner.flush()
    try:
        with runner.signals():
            failed = runner.run(targets)
            if runner.interrupted_at is None:
                runner.compensate()
    finally:
        runner.close()
    unknown = [n for n in targets if state.status_of(n) is Status.UNKNOWN]
    undone = [n for n in targets if state.status_of(n) is Status.ROLLED_BACK]
    in_place = sorted(runner.left_in_place)
    if run is not None and not failed and not unknown and runner.interrupted_at is None:
        left = [n for n in rb.instances if state.status_of(n) in (Status.SUCCEEDED, Status.WAITING)]
        if not ident and not left:
            # a full rollback that undid everything ends the run (SPEC §6): failed steps
            # included, they have nothing to undo; the next apply starts a new run
            runner.emit({"t": "run", "run": run.id, "status": RunStatus.ROLLED_BACK.value})
            runner.flush()
        elif not ident and in_place:
            # a full rollback that left changes in place: the run is failed, not rolled back
            runner.emit({"t": "run", "run": run.id, "status": RunStatus.FAILED.value})
            runner.flush()
    counts: dict[str, int] = {}
    for n in targets:
        counts[state.status_of(n).value] = counts.get(state.status_of(n).value, 0) + 1
    if runner.interrupted_at is not None:
        code = Exit.INTERRUPTED
        head = "INTERRUPTED"
    elif failed:
        code, head = Exit.FAILED, "FAILED"
    elif in_place:
        code, head = Exit.FAILED, "NOT CLEAN"
    elif unknown:
        code, head = Exit.PAUSED, "PAUSED"
    else:
        code, head = Exit.OK, "done"
    lines = [f"rollback {head} — {counts_text(counts)}"]
    if undone:
        lines.append(f"  rolled back: {', '.join(sorted(undone))}")
    if in_place:
        lines.append(
            f"  left in place (no rollback declared: their changes stay): {', '.join(in_place)}"
        )
    for n in failed:
        st = state.steps[n]
        blocked = sorted(session.dag.ancestors([n]) & targets - set(undone))
        lines.append(f"  rollback FAILED: {n}: {one_line(st.rollback_error)}")
        if blocked:
            lines.append(f"    left as they are (not rolled back past it): {', '.join(blocked)}")
    for n in unknown:
        if per_member_undo(rb.instances[n]):
            lines.append(f"  {n} is unknown: {one_line(state.steps[n].error)}")
            lines.append(f"    {member_advice(session.file, n)}; then runbook rollback again")
            continue
        lines.append(
            f"  {n} is unknown: runbook resolve {session.file} {n} --as "
            "rolled_back|rollback_failed|succeeded"
        )
    if code is not Exit.OK and (failed or unknown or runner.interrupted_at is not None):
        lines.append(f"  resume with: runbook rollback {session.file} ...")
    elif in_place:
        # nothing a second rollback could do: a step with no rollback stays as it is
        lines.append(
            "  nothing more to roll back: undo those steps by hand, or give them a `rollback` "
            "and run `runbook rollback` again"
        )
    session.reporter.summary(
        "\n".join(lines),
        {
            "exit": int(code),
            "failed": failed,
            "rolled_back": sorted(undone),
            "left_in_place": in_place,
        },
    )
    return int(code)
