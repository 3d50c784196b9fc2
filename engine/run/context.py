"""The template context of SPEC §2 at run time: vars, secrets, steps, wave, run, failed_step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format.model import Instance, Runbook, Wave, instance_id
from ..state.status import State


class StepView:
    """``steps.ID``: ``id``, ``status``, ``outputs`` of one step instance."""

    __slots__ = ("id", "outputs", "status")

    def __init__(self, sid: str, status: str, outputs: Mapping[str, Any]) -> None:
        self.id = sid
        self.status = status
        self.outputs = outputs

    def __getitem__(self, key: str) -> Any:
        # only the three fields: ``steps.x['__class__']`` must not reach Python's internals
        if key in StepView.__slots__:
            return getattr(self, key)
        raise KeyError(key)


class StepsView:
    """``steps``: looks steps up by id (``-`` may be written ``_``); inside a wave, a wave
    step's id means the same wave's instance. Not a Mapping on purpose: a step named
    ``items`` or ``get`` must not meet a dict method."""

    __slots__ = ("_phase", "_placeholder", "_rb", "_state", "_wave")

    def __init__(
        self,
        runbook: Runbook,
        state: State,
        phase: str | None,
        wave: str | None,
        placeholder: bool = False,
    ) -> None:
        self._rb = runbook
        self._state = state
        self._phase = phase
        self._wave = wave
        self._placeholder = placeholder

    def _resolve(self, name: str) -> str:
        instances = self._rb.instances
        for candidate in (name, name.replace("_", "-")):
            if candidate in instances:
                return candidate
            step = self._rb.steps.get(candidate)
            if step is None:
                continue
            phase = self._rb.phase_by_id[step.phase]
            if not phase.waves:
                return candidate
            if self._wave is not None and step.phase == self._phase:
                return instance_id(candidate, self._wave)
            waves = ", ".join(f"steps['{instance_id(candidate, w.id)}']" for w in phase.waves)
            raise KeyError(f"steps.{name} runs once per wave: name the instance ({waves})")
        raise KeyError(f"no step {name!r}")

    def __getitem__(self, name: str) -> StepView:
        sid = self._resolve(name)
        st = self._state.steps.get(sid)
        if st is None or (self._placeholder and not st.outputs):
            outputs: Mapping[str, Any] = _Placeholder(sid) if self._placeholder else {}
            return StepView(sid, st.status.value if st else "pending", outputs)
        return StepView(sid, st.status.value, st.outputs)

    def __getattr__(self, name: str) -> StepView:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]


class _Placeholder(dict[str, Any]):
    """Outputs of a step that has not run yet, for ``apply --dry-run``."""

    def __init__(self, sid: str) -> None:
        super().__init__()
        self.sid = sid

    def __missing__(self, key: str) -> str:
        return f"<{self.sid}.outputs.{key}>"


def wave_view(
    phase_waves: tuple[Wave, ...], wave: Wave, cohort: str | None = None
) -> dict[str, Any]:
    prev = phase_waves[wave.index - 1] if wave.index > 0 else None
    return {
        "id": wave.id,
        "index": wave.index,
        "vars": dict(wave.vars),
        "previous": {"id": prev.id, "index": prev.index, "vars": dict(prev.vars)} if prev else None,
        "cohort": cohort,
        "attempt": None,  # the wave attempt, set when a cohort wave starts
    }


def build(
    runbook: Runbook,
    state: State,
    variables: Mapping[str, Any],
    secrets: Mapping[str, Any],
    run: Mapping[str, Any],
    inst: Instance | None = None,
    failed_step: Mapping[str, Any] | None = None,
    placeholder: bool = False,
) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "vars": variables,
        "secrets": secrets,
        "steps": StepsView(
            runbook,
            state,
            inst.phase.id if inst else None,
            inst.wave.id if inst and inst.wave else None,
            placeholder,
        ),
        "run": run,
    }
    if inst is not None and inst.wave is not None:
        ctx["wave"] = wave_view(inst.phase.waves, inst.wave, inst.phase.cohort)
    if failed_step is not None:
        ctx["failed_step"] = failed_step
    return ctx
