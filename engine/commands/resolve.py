"""``runbook resolve FILE STEP --as STATUS``"""

from __future__ import annotations

from typing import Any

import click

from ..console.terminal import Console
from ..errors import InvalidInput
from ..masking import Masker
from ..state.status import State, Status
from .options import state_dir


@click.command(name="resolve")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("step")
@click.option(
    "--as",
    "as_",
    required=True,
    type=click.Choice(["succeeded", "failed", "pending", "rolled_back", "rollback_failed"]),
    help="What really happened to the step.",
)
@click.option(
    "--by",
    "by",
    metavar="NAME",
    help="On whose behalf (recorded beside the real identity, the OS user or, on a "
    "PostgreSQL state, session_user; never instead).",
)
@click.option("--comment", default="", help="Why (recorded with a gate's decision).")
@click.option(
    "--member",
    "members",
    multiple=True,
    metavar="KEY",
    help="A member of a foreach step whose call was cut by a crash (repeatable).",
)
@click.option(
    "--members-from",
    "members_from",
    type=click.Path(dir_okay=False, exists=True),
    help="A file of member keys, one per line.",
)
@click.option("--all-unknown", is_flag=True, help="Every member of STEP left unknown.")
@click.pass_context
def command(
    ctx: click.Context,
    file: str,
    step: str,
    as_: str,
    by: str | None,
    comment: str,
    members: tuple[str, ...],
    members_from: str | None,
    all_unknown: bool,
) -> int:
    """Decide the status of a step left `unknown` by a crash, or fail a waiting gate.

    A step whose action is not idempotent (shell, ssh, sql.exec, http) and that was running
    when the run stopped may or may not have taken effect: check, then say which.
    `pending` runs it again on the next apply; `succeeded` and `failed` record the
    outcome. For a step that was rolling back, `rolled_back` or `rollback_failed`.

    For a `foreach` step, --member KEY (or --members-from FILE, or --all-unknown)
    decides the members whose call was cut by a crash: `succeeded` (the call took
    effect: the member is done), `failed`, or `pending` (call it again).

    A gate (`check`) waiting after an inconclusive evaluation takes only `--as failed`: the
    next apply fails it as a failed measurement would (contingencies, on_failure). To pass
    it: `runbook approve`. A waiting approval step is decided by `runbook approve` only.

    Never takes the run's lease (on either backend): the decision is checked and written
    in one transaction beside a running apply, which reads it at its next transition. The
    identity recorded is the OS user, or the database's session_user on a PostgreSQL state.
    Beside a holder stalled inside a write (PostgreSQL) it waits 5s at a time, with a
    notice, and after 15s exits 4 naming it, recording nothing.

    \b
    Examples:
      runbook resolve migrate.yaml create-schema --as succeeded
      runbook resolve migrate.yaml 'churn-gate[pilot]' --as failed --comment "churn too high"
      runbook resolve migrate.yaml 'move-payment[pilot]' --member 4711 --as pending
      runbook resolve migrate.yaml 'move-payment[pilot]' --all-unknown --as succeeded
    """
    from ..format.loader import load

    loaded = load(file)
    rb = loaded.runbook
    if step not in rb.instances:
        raise InvalidInput(f"{step!r} is not a step of {rb.name}")
    from . import decide

    if members or members_from or all_unknown:
        from ..run.members import resolve_members

        keys = list(members)
        if members_from:
            with open(members_from, encoding="utf-8") as fh:
                keys += [line.strip() for line in fh if line.strip()]
        decide.check_text("--by", by)
        text = resolve_members(
            rb, state_dir(ctx), step, keys, all_unknown, as_, decide.identity(state_dir(ctx)), by
        )
        Console().out(text)
        return 0
    decide.check_text("--by", by)
    decide.check_text("--comment", comment, 2000)
    if rb.instances[step].step.foreach is not None:
        from ..run.members import member_advice

        # a foreach step's records decide it, member by member (never `approve`)
        raise InvalidInput(
            f"{step} is a foreach step: its members decide it, not --as alone; "
            f"{member_advice(file, step)}; then `runbook apply {file}` (or `runbook rollback "
            f"{file} ...` when it was rolling back) goes on"
        )
    decide.require_state(state_dir(ctx), rb, file)
    # never under the run's lock (SPEC §11): a decision record, checked and written in one
    # transaction beside a running apply (state/decisions.py)
    from ..state.store import read_state

    got = read_state(state_dir(ctx), rb.name)
    current = got[0].steps.get(step) if got is not None else None
    action = rb.instances[step].step.action
    if current is not None and current.status is Status.WAITING and action == "check":
        if as_ != "failed":
            raise InvalidInput(
                f"{step} is a gate waiting for a decision: resolve takes only `--as "
                f"failed` there; to pass it: runbook approve {file} {step}"
            )
        decided = decide.record(state_dir(ctx), rb, file, step, "failed", by, comment)
        Console().out(decide.said(decided, step, file))
        return 0
    if current is not None and current.status is Status.WAITING:
        raise InvalidInput(
            f"{step} waits for an approval: resolve does not decide it; approve it with "
            f"runbook approve {file} {step}"
        )
    _unknown(state_dir(ctx), rb, step, as_, by)
    Console().out(f"{step} resolved as {as_}; run `runbook apply {file}` to go on")
    return 0


def _unknown(state_dir: str, rb: Any, step: str, as_: str, by: str | None) -> None:
    """A step left `unknown`: record what really happened."""
    from ..run.cohorts import resolved_marks
    from ..state.decisions import decide
    from .decide import identity, notice

    who = identity(state_dir)
    also = f" on behalf of {by}" if by and by != who else ""

    def check(state: State) -> tuple[list[dict[str, Any]], Any]:
        st = state.steps.get(step)
        if st is None or st.status is not Status.UNKNOWN:
            have = st.status.value if st else "pending"
            raise InvalidInput(f"{step} is {have}, not unknown: nothing to resolve")
        rollback_phase = st.reason == "rollback"
        if as_ in ("rolled_back", "rollback_failed") and not rollback_phase:
            raise InvalidInput(
                f"{step} was not rolling back: resolve it as succeeded, failed or pending"
            )
        if rollback_phase and as_ == "failed":
            raise InvalidInput(
                f"{step} was rolling back: resolve it as rolled_back, "
                "rollback_failed, or succeeded (its rollback did not happen)"
            )
        rec: dict[str, object] = {
            "t": "step",
            "id": step,
            "status": as_,
            "reason": f"resolved by {who}{also}",
            "by": who,
            "on_behalf_of": by if by and by != who else None,
        }
        if as_ == "pending":
            rec["reset_attempts"] = True
        return [rec], resolved_marks(rb, state, step, as_)

    decide(state_dir, rb.name, Masker(), check, notice)
