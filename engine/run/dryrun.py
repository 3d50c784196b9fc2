"""``apply --dry-run``: every template rendered, nothing run, nothing written (no lock)."""

from __future__ import annotations

import json

from ..actions import late_keys, registry, template_mode
from ..console.terminal import Console
from ..format.templates import TemplateError, evaluate, render
from ..graph.scope import select
from ..state.status import DONE, State, Status
from ..state.store import read_state
from . import context as tctx
from .session import Prepared


def dry_run(
    prepared: Prepared, state_dir: str, only: tuple[str, ...], accept_changes: bool = False
) -> int:
    """Exit 0, 1 when a template cannot be rendered, or 2 when the apply would be refused (a
    run in progress whose runbook or vars changed, without --accept-changes)."""
    rb = prepared.runbook
    got = read_state(state_dir, rb.name)
    state = got[0] if got else State(rb.name)
    refused = _refusal(prepared, state, state_dir, accept_changes)
    scope = select(rb, only)
    secrets = {name: "***" for name in rb.secrets}
    run = state.run
    run_view = {
        "id": run.id if run and not run.finished else "<new run>",
        "started_at": run.started_at if run and not run.finished else "<now>",
    }
    console = Console()
    reg = registry()
    todo = [n for n in prepared.dag.step_order() if n in scope and state.status_of(n) not in DONE]
    console.out(
        f"dry run of {rb.name}: {len(todo)} step(s) would run, in this order "
        "(nothing is run or written)"
    )
    problems = 0
    for node in todo:
        inst = rb.instances[node]
        ctx = tctx.build(rb, state, prepared.variables, secrets, run_view, inst, placeholder=True)
        action = reg.get(inst.step.action)
        status = state.status_of(node)
        note = "" if status is Status.PENDING else f" (now {status.value})"
        try:
            if isinstance(inst.step.when, str):
                try:
                    skip = not evaluate(inst.step.when, ctx)
                except TemplateError:
                    skip = None
                if skip:
                    console.out(f"  – {node}: skipped (when: {inst.step.when})")
                    continue
                if skip is None:
                    note += f" (when: {inst.step.when} — decided at run time)"
            late = late_keys(action)
            params = {
                k: (v if k in late else render(v, ctx, template_mode(action, k)))
                for k, v in inst.step.call.params.items()
            }
        except TemplateError as exc:
            problems += 1
            console.out(f"  ✗ {node}: template error: {exc}")
            continue
        console.out(f"  ▶ {node}{note}: {action.describe(params)}")
        shown = prepared.masker.mask(json.dumps(params, default=str, ensure_ascii=False))
        console.out(f"      with {shown}")
    if refused is not None:
        console.out(refused)
        return 2
    return 1 if problems else 0


def _refusal(prepared: Prepared, state: State, state_dir: str, accept: bool) -> str | None:
    """What the apply would refuse (SPEC §8 "Pinned runs"), or None when it would go on."""
    from ..state.pinned import read_var_key
    from . import pins

    run = state.run
    rb = prepared.runbook
    if run is None or run.finished:
        return None
    changes = pins.compare(
        run, state, rb, prepared.variables, prepared.masker, read_var_key(state_dir, rb.name)
    )
    if not changes.affected:
        return None
    if accept:
        Console().out(
            f"with --accept-changes, run {run.id} would go on with the changes "
            f"({len(changes.affected)} step(s) not yet done affected; approvals given before "
            "them voided)"
        )
        return None
    text = pins.summary(changes, run.id, prepared.file)
    return "the apply would be refused (exit 2):\n" + text.replace(
        "Nothing was written.", "Nothing was run or written."
    )
