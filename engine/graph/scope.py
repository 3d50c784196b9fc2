"""Which steps a command is about: ``--only ID``, ``rollback --step/--phase/--wave``.

An id may name a step (all its wave instances), an instance (``copy[pilot]``), a phase, or a
wave (``PHASE.WAVE``, or ``WAVE`` when only one phase has it).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidInput
from ..format.model import Runbook


def instances_of(rb: Runbook, ident: str) -> set[str]:
    if ident in rb.instances:
        return {ident}
    if ident in rb.steps:
        return {n for n, i in rb.instances.items() if i.step.id == ident}
    if ident in rb.phase_by_id:
        return {n for n, i in rb.instances.items() if i.phase.id == ident}
    return wave_instances(rb, ident)


def wave_instances(rb: Runbook, ident: str) -> set[str]:
    phase_id, _, wave_id = ident.rpartition(".")
    phases = [p for p in rb.phases if any(w.id == wave_id for w in p.waves)]
    if phase_id:
        phases = [p for p in phases if p.id == phase_id]
    if not phases:
        raise InvalidInput(f"{ident!r} is not a step, phase or wave of {rb.name}")
    if len(phases) > 1:
        names = ", ".join(f"{p.id}.{wave_id}" for p in phases)
        raise InvalidInput(f"wave {wave_id!r} is in several phases: name one of {names}")
    phase = phases[0]
    return {
        n
        for n, i in rb.instances.items()
        if i.phase.id == phase.id and i.wave and i.wave.id == wave_id
    }


def select(rb: Runbook, idents: Iterable[str]) -> set[str]:
    """The instances named (all of them when none is named); the commands widen this with
    ``Dag.ancestors``/``Dag.descendants`` where they need to."""
    idents = list(idents)
    if not idents:
        return set(rb.instances)
    out: set[str] = set()
    for ident in idents:
        out |= instances_of(rb, ident)
    return out
