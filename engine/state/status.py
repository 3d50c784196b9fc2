"""Step and run statuses, and the state they fold into from the journal's records."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING = "waiting"
    UNKNOWN = "unknown"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


class RunStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"


FINISHED_RUNS = frozenset({RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK})
# A dependency is satisfied by these (a `when`-skip lets dependents run: SPEC §2).
DONE = frozenset({Status.SUCCEEDED, Status.SKIPPED})


@dataclass
class StepState:
    id: str
    status: Status = Status.PENDING
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None  # the definition that last succeeded (or ran)
    reason: str | None = None  # skipped: "when" | "upstream"; unknown: "apply" | "rollback"
    run: str | None = None  # the run of the last transition
    rollback_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "outputs": self.outputs,
            "digest": self.digest,
            "reason": self.reason,
        }


@dataclass
class RunState:
    id: str
    status: RunStatus
    started_at: str
    finished_at: str | None = None
    digest: str | None = None
    vars: dict[str, Any] | None = None  # the variables the run started with (masked)
    fired: set[str] = field(default_factory=set)  # contingencies fired in this run
    # each firing: (contingency, step instance, wave attempt): once each (SPEC §11)
    firings: set[tuple[str, str, int]] = field(default_factory=set)
    rollbacks: int = 0  # steps rolled back in this run
    user: str | None = None  # who started it (the OS user of its first apply)
    # step instance -> its definition digest as pinned (run/pins.py); None: an earlier version
    pins: dict[str, str] | None = None
    accepted: list[dict[str, Any]] = field(default_factory=list)  # its `accept` records
    # var -> keyed digest of its raw value (state/pinned.py); None: not recorded
    var_hmacs: dict[str, str] | None = None
    # step instance -> the pin of the contingencies it fires and its cohort's source
    # (run/pins.py ``context_pins``); None: a run started before it was recorded
    context: dict[str, str] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_RUNS


@dataclass
class WaveAttempt:
    """The current attempt of one cohort wave: numbered from 1, a new one only when the wave
    was rolled back (compensated) and runs again, or in a new run (SPEC §11)."""

    attempt: int
    run: str
    status: str  # "started" | "compensated"


@dataclass
class State:
    """Everything the journal says, folded: the current steps, the runs, the records."""

    runbook: str
    steps: dict[str, StepState] = field(default_factory=dict)
    runs: list[RunState] = field(default_factory=list)
    records: dict[str, dict[str, str]] = field(default_factory=dict)
    attempts: dict[tuple[str, str], WaveAttempt] = field(default_factory=dict)
    # on-failure decisions (rollback, rollback-wave) journaled before they are acted on:
    # (run, policy, phase, wave) -> "pending" | "done"; a resume finishes the pending ones
    decisions: dict[tuple[str, str, str | None, str | None], str] = field(default_factory=dict)
    frozen: dict[str, dict[str, Any]] = field(default_factory=dict)  # cohort -> its summary
    last_at: str | None = None  # the time of the last record: the last sign of a writer
    # foreach: (step instance, wave attempt) -> member key -> started|done|failed|unknown|pending
    member_calls: dict[tuple[str, int], dict[Any, str]] = field(default_factory=dict)
    member_errors: dict[tuple[str, int], dict[Any, str]] = field(default_factory=dict)

    @property
    def run(self) -> RunState | None:
        return self.runs[-1] if self.runs else None

    def pending_decisions(self) -> list[tuple[str, str | None, str | None]]:
        """(policy, phase, wave) of this run's on-failure decisions not yet carried out."""
        run = self.run
        if run is None:
            return []
        return [
            (policy, phase, wave)
            for (rid, policy, phase, wave), status in self.decisions.items()
            if rid == run.id and status == "pending"
        ]

    def step(self, sid: str) -> StepState:
        st = self.steps.get(sid)
        if st is None:
            st = self.steps[sid] = StepState(sid)
        return st

    def status_of(self, sid: str) -> Status:
        st = self.steps.get(sid)
        return st.status if st else Status.PENDING

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold one journal record in (the journal is the only source of truth); a record
        whose fields are not what the engine writes is refused (``check_record``)."""
        check_record(rec)
        kind = rec.get("t")
        if isinstance(rec.get("at"), str):
            self.last_at = rec["at"]
        if kind == "step":
            st = self.step(rec["id"])
            st.status = Status(rec["status"])
            st.run = rec.get("run", st.run)
            if "attempt" in rec:
                st.attempts = rec["attempt"]
            if st.status is Status.RUNNING:
                st.started_at = rec.get("at")
                st.finished_at = None
                st.error = None
                st.digest = rec.get("digest", st.digest)
            elif st.status is Status.PENDING:
                st.reason = rec.get("reason")
                st.error = None
                if rec.get("reset_attempts"):
                    st.attempts = 0
            else:
                st.finished_at = rec.get("at", st.finished_at)
            if st.status in (Status.SUCCEEDED, Status.ROLLED_BACK):
                # an error of an earlier transition (a crash, a failed rollback) is over
                st.error = None
                st.rollback_error = None
            if "error" in rec:
                if st.status in (Status.ROLLBACK_FAILED,):
                    st.rollback_error = rec["error"]
                else:
                    st.error = rec["error"]
            if "outputs" in rec:
                st.outputs = rec["outputs"]
            if "reason" in rec:
                st.reason = rec["reason"]
            if st.status is Status.SUCCEEDED and "digest" in rec:
                st.digest = rec["digest"]
            current = self.run
            if st.status is Status.ROLLED_BACK and current is not None and st.run == current.id:
                current.rollbacks += 1
        elif kind == "run":
            status = RunStatus(rec["status"])
            current = self.run
            if current is None or current.id != rec["run"]:
                self.runs.append(
                    RunState(
                        rec["run"],
                        status,
                        rec["at"],
                        digest=rec.get("digest"),
                        vars=rec.get("vars") if isinstance(rec.get("vars"), dict) else None,
                        user=rec.get("user") if isinstance(rec.get("user"), str) else None,
                        pins=rec.get("pins") if isinstance(rec.get("pins"), dict) else None,
                        var_hmacs=_hmacs(rec),
                        context=rec.get("context")
                        if isinstance(rec.get("context"), dict)
                        else None,
                    )
                )
            else:
                current.status = status
                if "digest" in rec:
                    current.digest = rec["digest"]
                current.finished_at = rec["at"] if status in FINISHED_RUNS else None
        elif kind == "accept":
            # the run goes on with another runbook or other vars (run/pins.py)
            current = self.run
            if current is None or current.id != rec["run"]:
                raise ValueError(f"an accept record of run {rec['run']!r}, not the current run")
            current.digest = rec["to"]
            if isinstance(rec.get("vars"), dict):
                current.vars = rec["vars"]
            if isinstance(rec.get("pins"), dict):
                current.pins = rec["pins"]
            current.var_hmacs = _hmacs(rec)
            if isinstance(rec.get("context"), dict):
                current.context = rec["context"]
            current.accepted.append(rec)
        elif kind == "contingency" and rec.get("status") == "running":
            current = self.run
            if current is not None:
                current.fired.add(rec["id"])
                current.firings.add((rec["id"], str(rec.get("step")), int(rec.get("attempt", 1))))
        elif kind == "retry":
            self.step(rec["id"]).attempts = rec["attempt"]
        elif kind == "record":
            self.records.setdefault(rec["step"], {}).update(rec["items"])
        elif kind == "members":
            calls = self.member_calls.setdefault((str(rec["step"]), int(rec["attempt"])), {})
            for key in rec.get("started", ()):
                calls[key] = "started"
            for key in rec.get("done", ()):
                calls[key] = "done"
            errors = self.member_errors.setdefault((str(rec["step"]), int(rec["attempt"])), {})
            for key, error in rec.get("failed", ()):
                calls[key] = "failed"
                errors[key] = str(error)
            for key in rec.get("unknown", ()):
                calls[key] = "unknown"
            for key, state in rec.get("resolved") or []:
                if state not in ("done", "failed", "pending"):
                    raise ValueError(f"{state!r} is not a member decision")
                if state == "pending":
                    calls.pop(key, None)
                else:
                    calls[key] = state
        elif kind == "decision":
            if rec["status"] not in ("pending", "done"):
                raise ValueError(f"{rec['status']!r} is not a decision status")
            decided = (str(rec["run"]), str(rec["policy"]), rec.get("phase"), rec.get("wave"))
            self.decisions[decided] = rec["status"]
        elif kind == "wave":
            key = (str(rec["cohort"]), str(rec["wave"]))
            if rec["status"] not in ("started", "compensated"):
                raise ValueError(f"{rec['status']!r} is not a wave attempt status")
            self.attempts[key] = WaveAttempt(int(rec["attempt"]), str(rec["run"]), rec["status"])
        elif kind == "cohort" and rec.get("event") in ("frozen", "redrawn"):
            self.frozen[str(rec["cohort"])] = dict(rec.get("summary") or {})


# -- what a record's fields must be ----------------------------------------------------------

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
_TEXT = (str,)
_TEXT_OR_NONE = (str, type(None))
_FIELDS: dict[str, dict[str, Any]] = {
    # kind -> field -> the types it may have ("int" is an integer, never a boolean)
    "step": {
        "id": "id",
        "status": "status",
        "attempt": "count",
        "run": _TEXT_OR_NONE,
        "digest": _TEXT_OR_NONE,
        "error": _TEXT_OR_NONE,
        "reason": _TEXT_OR_NONE,
        "phase": _TEXT_OR_NONE,
        "note": _TEXT_OR_NONE,
        "outputs": (dict,),
        "rollback_outputs": (dict,),
        "reset_attempts": (bool,),
        "duration": "number",
    },
    "run": {
        "run": "id",
        "status": "run_status",
        "digest": _TEXT_OR_NONE,
        "vars": (dict, type(None)),
        "user": _TEXT_OR_NONE,
        "file": _TEXT_OR_NONE,
        "pid": "count",
        "pins": (dict, type(None)),
        "var_hmacs": (dict, type(None)),
        "context": (dict, type(None)),
    },
    "accept": {
        "run": "id",
        "by": _TEXT_OR_NONE,
        "from": _TEXT_OR_NONE,
        "to": "id",
        "vars": (dict, type(None)),
        "changed_vars": (list,),
        "steps": (list,),
        "pins": (dict,),
        "context": (dict, type(None)),
        "voided": (list,),
        "explicit": (bool,),
        "var_hmacs": (dict, type(None)),
    },
    "retry": {"id": "id", "attempt": "count", "error": _TEXT_OR_NONE, "delay": "number"},
    "record": {"step": "id", "items": "items"},
    "members": {
        "step": "id",
        "attempt": "count",
        "started": (list,),
        "done": (list,),
        "unknown": (list,),
        "failed": (list,),
        "resolved": (list, type(None)),
    },
    "decision": {"run": "id", "policy": "id", "status": _TEXT},
    "wave": {"cohort": "id", "wave": "id", "attempt": "count", "run": "id", "status": _TEXT},
    "contingency": {"id": "id", "step": _TEXT_OR_NONE, "attempt": "count", "status": _TEXT},
    "cohort": {"cohort": "id", "event": _TEXT, "summary": (dict, type(None))},
    "event": {"id": _TEXT_OR_NONE, "kind": _TEXT, "data": (dict,)},
    "approval": {"step": "id", "run": _TEXT_OR_NONE, "by": _TEXT_OR_NONE},
    "gate": {"step": "id", "run": _TEXT_OR_NONE, "by": _TEXT_OR_NONE},
}
_REQUIRED = {
    "step": ("id", "status"),
    "run": ("run", "status", "at"),
    "accept": ("run", "to"),
    "retry": ("id", "attempt"),
    "record": ("step", "items"),
    "members": ("step", "attempt"),
    "decision": ("run", "policy", "status"),
    "wave": ("cohort", "wave", "attempt", "run", "status"),
}


def check_record(rec: Any) -> None:
    """Raise ValueError, naming the field, for a record the engine would not have written."""
    if not isinstance(rec, dict):
        raise ValueError(f"a record is a JSON object, not {type(rec).__name__}")
    kind = rec.get("t")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise ValueError(f"unknown record kind {kind!r}")
    fields = _FIELDS[kind]
    for name in _REQUIRED.get(kind, ()):
        if name not in rec:
            raise ValueError(f"a {kind} record needs `{name}`")
    if "at" in rec and not (isinstance(rec["at"], str) and _TIME.fullmatch(rec["at"])):
        raise ValueError(f"{kind} record: `at` must be an ISO 8601 time, not {rec['at']!r}")
    for name, want in fields.items():
        if name not in rec:
            continue
        value = rec[name]
        if not _fits(value, want):
            raise ValueError(f"{kind} record: `{name}` cannot be {value!r}")
    _bounded(rec, kind)
    if kind == "record":
        for key, text in rec["items"].items():
            if key.startswith(_OBJECT_ITEMS):
                _object_item(kind, key, text)


MAX_DEPTH = 64  # nesting of a record's values (the engine writes a handful of levels)
# record items the engine reads back as JSON objects: approvals and gate decisions
_OBJECT_ITEMS = ("approval:", "gate.")


def _bounded(value: Any, kind: str) -> None:
    """Nesting at most ``MAX_DEPTH`` deep; every number finite."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        cur, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{kind} record: nested deeper than {MAX_DEPTH} levels")
        if isinstance(cur, float) and (cur != cur or cur in (float("inf"), float("-inf"))):
            raise ValueError(f"{kind} record: {cur!r} is not a finite number")
        if isinstance(cur, dict):
            stack.extend((v, depth + 1) for v in cur.values())
        elif isinstance(cur, list):
            stack.extend((v, depth + 1) for v in cur)


def _object_item(kind: str, key: str, text: str) -> None:
    import json

    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ValueError(f"{kind} record: item `{key}` is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{kind} record: item `{key}` must be a JSON object")
    _bounded(doc, kind)
    for name in ("by", "at", "comment", "on_behalf_of", "decision", "run"):
        if name in doc and not isinstance(doc[name], (str, type(None))):
            raise ValueError(f"{kind} record: item `{key}`: `{name}` cannot be {doc[name]!r}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _fits(value: Any, want: Any) -> bool:
    if want == "id":
        return isinstance(value, str) and bool(value)
    if want == "count":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if want == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    if want == "status":
        return isinstance(value, str) and value in Status.__members__.values()
    if want == "run_status":
        return isinstance(value, str) and value in RunStatus.__members__.values()
    if want == "items":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
    return isinstance(value, want)


def _hmacs(rec: dict[str, Any]) -> dict[str, str] | None:
    got = rec.get("var_hmacs")
    if not isinstance(got, dict):
        return None
    return {str(k): str(v) for k, v in got.items()}
