"""The parsed runbook: frozen, typed records (SPEC §2), with defaults applied."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from .yamlsource import Path, SourceMap


class OnFailure(StrEnum):
    ABORT = "abort"
    CONTINUE = "continue"
    ROLLBACK = "rollback"
    ROLLBACK_WAVE = "rollback-wave"


LIKELIHOODS = ("low", "medium", "high")
IMPACTS = ("low", "medium", "high", "critical")
DEFAULT_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Retry:
    attempts: int = 1
    delay: float = 2.0
    backoff: float = 2.0

    def as_json(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "delay": self.delay, "backoff": self.backoff}


@dataclass(frozen=True)
class Call:
    """The runnable part shared by steps, rollbacks and contingencies."""

    action: str
    params: Mapping[str, Any]  # the `with` mapping, unrendered
    timeout: float
    retries: Retry
    idempotent: bool | None  # an explicit override, or None: the action decides
    description: str
    path: Path  # where this call stands in the file

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "with": dict(self.params)}
        if self.description:
            out["description"] = self.description
        out["timeout"] = self.timeout
        out["retries"] = self.retries.as_json()
        if self.idempotent is not None:
            out["idempotent"] = self.idempotent
        return out


@dataclass(frozen=True)
class Foreach:
    """``foreach``: run the step's action once per member of the wave (SPEC §7)."""

    cohort: str
    concurrency: int
    max_failed: Size  # a share of the members or a count; default 0

    def as_json(self) -> dict[str, Any]:
        return {
            "cohort": self.cohort,
            "concurrency": self.concurrency,
            "max_failed": self.max_failed.text,
        }


@dataclass(frozen=True)
class Step:
    id: str
    phase: str
    call: Call
    needs: tuple[str, ...]
    when: str | bool | None
    on_failure: OnFailure
    risks: tuple[str, ...]
    rollback: Call | None  # None: no rollback action (see rollback_declared)
    rollback_declared: bool  # False: the `rollback` key is missing; True with None: `none`
    path: Path
    marks: str | None = None  # the journey state its members reach: notified|moved|verified
    foreach: Foreach | None = None

    @property
    def action(self) -> str:
        return self.call.action

    def definition(self) -> dict[str, Any]:
        """What the step does, for its digest: not its place in the order."""
        rollback: Any = (
            self.rollback.as_json()
            if self.rollback
            else ("none" if self.rollback_declared else None)
        )
        out = {
            "action": self.call.action,
            "with": self.call.params,
            "when": self.when,
            "idempotent": self.call.idempotent,
            "rollback": rollback,
        }
        if self.marks is not None:
            out["marks"] = self.marks
        if self.foreach is not None:
            out["foreach"] = self.foreach.as_json()
        return out


@dataclass(frozen=True)
class Contingency:
    id: str
    call: Call
    path: Path


@dataclass(frozen=True)
class Wave:
    id: str
    index: int
    vars: Mapping[str, Any]
    description: str
    path: Path


@dataclass(frozen=True)
class Phase:
    id: str
    description: str
    needs: tuple[str, ...] | None  # None: the previous phase in document order
    parallel: bool
    waves: tuple[Wave, ...]  # for a cohort phase: the cohort's waves (holdout last)
    steps: tuple[Step, ...]
    path: Path
    cohort: str | None = None  # `waves: {cohort: NAME}`


HOLDOUT = "holdout"  # the wave id of a cohort's holdout


@dataclass(frozen=True)
class Size:
    """A wave's size: a share of the eligible members, a count, or the rest."""

    kind: str  # "share" | "count" | "rest"
    value: float  # share in [0, 1], or a count; 0 for rest
    text: str  # as written: "20%", "500", "rest"


@dataclass(frozen=True)
class CohortWave:
    id: str
    size: Size
    min: int
    vars: Mapping[str, Any]
    description: str
    path: Path


@dataclass(frozen=True)
class Exclusion:
    reason: str
    where: str  # SQL predicate, evaluated on the source
    path: Path


@dataclass(frozen=True)
class Cohort:
    """A population drawn once into waves and kept in the ledger (SPEC §7)."""

    name: str
    dsn: str  # template, rendered with vars and secrets
    query: str
    key: str
    attributes: tuple[str, ...]
    exclude: tuple[Exclusion, ...]
    stratify_by: tuple[str, ...]
    waves: tuple[CohortWave, ...]
    holdout: Size | None
    seed: int
    path: Path

    @property
    def wave_ids(self) -> tuple[str, ...]:
        """The waves in the order they run: the holdout after the last wave that has members
        (waves of `size: 0` appended for late entities come after it)."""
        ids = tuple(w.id for w in self.waves)
        if self.holdout is None:
            return ids
        sized = [i for i, w in enumerate(self.waves) if w.size.kind == "rest" or w.size.value > 0]
        cut = (sized[-1] + 1) if sized else len(ids)
        return (*ids[:cut], HOLDOUT, *ids[cut:])

    def draw_definition(self) -> dict[str, Any]:
        """What decides who is in which wave: an edit to it after the freeze needs
        ``runbook cohort redraw``."""
        return {
            "key": self.key,
            "exclude": [[e.reason, e.where] for e in self.exclude],
            "stratify_by": list(self.stratify_by),
            "waves": [[w.id, w.size.text, w.min] for w in self.waves],
            "holdout": self.holdout.text if self.holdout else None,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Risk:
    id: str
    description: str
    likelihood: str
    impact: str
    mitigation: str
    owner: str
    contingencies: tuple[str, ...]
    path: Path


@dataclass(frozen=True)
class VarDecl:
    name: str
    type: str  # string | integer | number | boolean | list | mapping
    default: Any
    has_default: bool
    description: str
    path: Path


@dataclass(frozen=True)
class SecretRef:
    name: str
    env: str | None
    file: str | None
    path: Path


@dataclass(frozen=True)
class Host:
    alias: str
    address: str
    port: int
    user: str | None
    key_file: str | None
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Defaults:
    timeout: float = DEFAULT_TIMEOUT
    retries: Retry = field(default_factory=Retry)
    on_failure: OnFailure = OnFailure.ABORT


@dataclass(frozen=True)
class Instance:
    """One node of the DAG: a step, or a wave step's instance ``STEP[WAVE]``."""

    id: str
    step: Step
    phase: Phase
    wave: Wave | None

    @cached_property
    def digest(self) -> str:
        body = self.step.definition()
        if self.wave is not None:
            body = {**body, "wave": self.wave.id, "wave_vars": self.wave.vars}
        return digest_of(body)


@dataclass(frozen=True)
class Runbook:
    file: str  # as the user named it, for messages
    name: str
    description: str
    owner: str
    labels: Mapping[str, str]
    vars: Mapping[str, VarDecl]
    secrets: Mapping[str, SecretRef]
    hosts: Mapping[str, Host]
    defaults: Defaults
    risks: tuple[Risk, ...]
    contingencies: tuple[Contingency, ...]
    phases: tuple[Phase, ...]
    source: SourceMap = field(repr=False, compare=False)
    data: Mapping[str, Any] = field(repr=False, compare=False)  # the document as read
    cohorts: Mapping[str, Cohort] = field(default_factory=dict)

    @cached_property
    def digest(self) -> str:
        return digest_of(self.data)

    @cached_property
    def steps(self) -> dict[str, Step]:
        return {s.id: s for p in self.phases for s in p.steps}

    @cached_property
    def phase_by_id(self) -> dict[str, Phase]:
        return {p.id: p for p in self.phases}

    @cached_property
    def risk_by_id(self) -> dict[str, Risk]:
        return {r.id: r for r in self.risks}

    @cached_property
    def contingency_by_id(self) -> dict[str, Contingency]:
        return {c.id: c for c in self.contingencies}

    @cached_property
    def instances(self) -> dict[str, Instance]:
        """Every DAG node in document order, waves expanded (``copy[pilot]``)."""
        out: dict[str, Instance] = {}
        for phase in self.phases:
            if phase.waves:
                for wave in phase.waves:
                    for step in phase.steps:
                        iid = instance_id(step.id, wave.id)
                        out[iid] = Instance(iid, step, phase, wave)
            else:
                for step in phase.steps:
                    out[step.id] = Instance(step.id, step, phase, None)
        return out


def instance_id(step_id: str, wave_id: str | None) -> str:
    return f"{step_id}[{wave_id}]" if wave_id else step_id


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest_of(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()
