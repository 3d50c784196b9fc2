"""A person's decision on an inconclusive gate: ``approve`` passes it, ``resolve --as failed``
fails it (SPEC §7, §8, §11).

The decision is bound to the gate's waiting evaluation (its run, wave attempt and token:
``format/gates.py``) and written, with who decided, when and the measurements it was made on,
in one durable commit: a record the gate step reads when the next ``apply`` runs it, and a
``gate`` journal record for the audit and the report.  It is written beside a running apply,
never under its lock (``state/decisions.py``).  The gate's own ``approvers`` and ``allow_self``
(default: the backend's, true on a state directory, false on PostgreSQL) say who may decide;
the identity recorded is the real one (the OS user, or ``session_user`` on PostgreSQL), ``--by``
only ``on_behalf_of``.  Refused with exit 2, nothing written: a step that is not waiting, a decision already made on that evaluation, an identity not among ``approvers``,
the run's starter without ``allow_self``, and a copy of the runbook that differs from the one
the run applies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput
from ..format import gates
from ..format.approvals import same_identity
from ..format.model import Runbook
from ..format.templates import TemplateError, render
from ..state.identity import os_uid
from ..state.status import RunState, State, Status
from ..state.store import now


def identity(state: str | None = None) -> str:
    """The real identity of whoever runs the command (``state/identity.py``): ``session_user``
    on a PostgreSQL state, else the OS user of the process, from the user database, never
    ``$USER``/``$LOGNAME`` nor ``--by`` (recorded as ``on_behalf_of``)."""
    from ..state import identity as ident

    return ident.identity(state) if state is not None else ident.os_user()


def notice(text: str) -> None:
    """A notice of a decision while it waits (a holder stalled inside a write), on stderr."""
    from ..console.terminal import Console

    Console().err(f"notice: {text}")


def check_text(option: str, value: str | None, limit: int = 500) -> None:
    """Refuse (exit 2) a ``--by`` or ``--comment`` that holds a control or format character
    (a line break, ESC, a bidi override...): it is stored in the journal and printed by
    ``status`` and ``report``, where it could forge lines or drive a terminal."""
    import unicodedata

    if value is None:
        return
    bad = sorted({c for c in value if unicodedata.category(c).startswith("C")})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
        raise InvalidInput(f"{option}: one line of printable text, please (it holds {shown})")
    if len(value) > limit:
        raise InvalidInput(f"{option}: at most {limit} characters (it has {len(value)})")


def require_state(state_dir: str, rb: Runbook, file: str) -> None:
    """Refuse (exit 2) before the state is opened for writing, and so before a state folder
    is made, when ``rb`` was never applied."""
    from ..state.store import read_state

    if read_state(state_dir, rb.name) is None:
        raise InvalidInput(
            f"no run of {rb.name} is in progress: start one with `runbook apply {file}`"
        )


def waiting_run(state: State, rb: Runbook, file: str, step: str, not_waiting: str) -> RunState:
    """The run in progress when ``step`` waits in it; else ``InvalidInput`` saying why
    (``not_waiting`` follows "STEP is STATUS, ")."""
    run = state.run
    if run is None or run.finished:
        raise InvalidInput(
            f"no run of {rb.name} is in progress: start one with `runbook apply {file}`"
        )
    st = state.steps.get(step)
    if st is None or st.status is not Status.WAITING:
        raise InvalidInput(f"{step} is {st.status.value if st else 'pending'}, {not_waiting}")
    return run


def masked(rb: Runbook, text: str | None) -> str | None:
    """``text`` (a ``--comment``, a ``--by``) with every secret of ``rb`` that can be read
    here masked, before it is journaled or printed."""
    if not text:
        return text
    from ..masking import Masker
    from ..run.secrets import available

    try:
        values = available(rb)
    except InvalidInput:
        values = {}
    return Masker(values).mask(text)


def rendered(value: Any, variables: Mapping[str, Any], what: str) -> Any:
    try:
        return render(value, {"vars": variables})
    except TemplateError as exc:
        raise InvalidInput(f"{what}: template error: {exc}") from None


def record(
    state_dir: str,
    rb: Runbook,
    file: str,
    step: str,
    decision: str,
    by: str | None,
    comment: str,
) -> dict[str, Any]:
    """Record ``decision`` (passed or failed) on the waiting gate ``step``, beside a running
    apply (never under its lock: ``state/decisions.py``); returns the decision as written."""
    from ..masking import Masker
    from ..state.decisions import decide
    from ..state.identity import self_approval_default

    who = identity(state_dir)
    comment, by = masked(rb, comment) or "", masked(rb, by)
    decided: dict[str, Any] = {}

    def check(state: State) -> tuple[list[dict[str, Any]], None]:
        run = waiting_run(
            state,
            rb,
            file,
            step,
            "not waiting for a decision: a gate is decided only while it waits (after an "
            "inconclusive evaluation)",
        )
        waiting = gates.waiting_of(state.records.get(step), run.id)
        if waiting is None:
            raise InvalidInput(
                f"{step} has no inconclusive evaluation in run {run.id} to decide on: run "
                f"`runbook apply {file}` to measure it"
            )
        earlier = gates.decision_of(state.records.get(step), waiting)
        if earlier is not None:
            raise InvalidInput(
                f"{step} was already decided ({earlier.get('decision')} by {earlier.get('by')} "
                f"at {earlier.get('at')}): run `runbook apply {file}` to go on"
            )
        if run.digest and run.digest != rb.digest:
            raise InvalidInput(
                f"your copy of {file} differs from the runbook run {run.id} applies "
                f"({run.digest}): decide on the same runbook (or apply the edit first)"
            )
        params = rb.instances[step].step.call.params
        # the run's own variables, never values given to approve/resolve (`--var approver=me`)
        values = run.vars or {}
        approvers = params.get("approvers")
        if approvers is not None:  # `[]` names nobody (refused by validate)
            allowed = rendered(approvers, values, f"{step}: with.approvers")
            if not isinstance(allowed, list) or who not in [str(a) for a in allowed]:
                shown = (
                    ", ".join(str(a) for a in allowed) or "nobody"
                    if isinstance(allowed, list)
                    else allowed
                )
                raise InvalidInput(f"{who!r} may not decide {step}: its approvers are {shown}")
        allow_self = rendered(
            params.get("allow_self", self_approval_default(state_dir)),
            values,
            f"{step}: with.allow_self",
        )
        starter = {"by": run.user, "uid": run.uid}
        if (
            allow_self is False
            and run.user is not None
            and same_identity(starter, who, os_uid(state_dir))
        ):
            raise InvalidInput(
                f"{who!r} started run {run.id} and may not decide {step} (`allow_self: false`): "
                "another person decides"
            )
        decided.update(
            {
                "token": waiting["token"],
                "run": run.id,
                "attempt": waiting.get("attempt"),
                "decision": decision,
                "by": who,
                "on_behalf_of": by if by and by != who else None,
                "comment": comment,
                "at": now(),
                "measurements": list(waiting.get("measurements") or []),
                # bound to the plan the run applies (SPEC §8): the gate counts it only while
                # the run is pinned to this runbook and these vars (plugins/check.py)
                **gates.binding(run.digest, run.vars, rb.instances[step].digest),
            }
        )
        return [
            {
                "t": "record",
                "step": step,
                "items": {gates.decision_key(str(waiting["token"])): json.dumps(decided)},
            },
            {"t": "gate", "step": step, **{k: v for k, v in decided.items() if k != "at"}},
        ], None

    decide(state_dir, rb.name, Masker(), check, notice)
    return decided


def said(decided: Mapping[str, Any], step: str, file: str) -> str:
    """What the command prints."""
    import shlex

    verb = "passed" if decided["decision"] == gates.PASSED else "failed"
    also = f" on behalf of {decided['on_behalf_of']}" if decided.get("on_behalf_of") else ""
    count = len(decided.get("measurements") or [])
    return (
        f"{step}: gate {verb} by {decided['by']}{also} for run {decided['run']}, on its "
        f"{count} measurement(s); run `runbook apply {shlex.quote(file)}` to go on"
    )
