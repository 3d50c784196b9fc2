"""``check``: a metric gate that passes, fails, or asks a person (SPEC §7, §11).

A value is measured ``count`` times, every ``interval``, from ``query``+``dsn``, ``url``+
``json_path`` or ``command`` (``metrics.py``), or, with ``cohort:``, as a metric over the rows
of this wave's members against a baseline (``samples.py``).  Each measurement is ``passed``,
``failed`` or ``inconclusive`` (no number: NULL, NaN, no rows, empty output, a missing JSON
path, a source that failed after the step's retries, a sample below ``min_samples``, a
condition that cannot be evaluated) and is journaled as a ``check.measured`` event.  The gate
fails as soon as more than ``failure_limit`` measurements failed; after the last one it is
inconclusive when more than ``inconclusive_limit`` were, else it passes.

An inconclusive gate records its measurements (``gate.waiting``, ``format/gates.py``) and puts
the step ``waiting``: ``runbook approve FILE STEP`` passes it, ``runbook resolve FILE STEP --as
failed`` fails it.  The next run of the step finds that decision, bound to the evaluation it was
made on (run, wave attempt, token), and ends as it says, without measuring again; a decision
the step already ended with (its outputs name the token) is never used twice.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed, Waiting
from runbook_engine.format import gates
from runbook_engine.format.durations import format_duration, parse_duration
from runbook_engine.format.model import Retry
from runbook_engine.format.templates import TemplateError, evaluate, parse

from . import metrics

DEFAULT_INTERVAL = "10s"
KEPT = 50  # measurements kept in the outputs and in a waiting record
BASELINE_NAMES = frozenset({"baseline", "n_baseline"})
COHORT_KEYS = ("metric", "min_samples", "baseline_dsn", "baseline_query")


@dataclass
class Tally:
    """The measurements so far and what they add up to."""

    measurements: list[dict[str, Any]] = field(default_factory=list)
    values: list[int | float] = field(default_factory=list)
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0

    def add(self, m: dict[str, Any]) -> None:
        self.measurements.append(m)
        if m["outcome"] == gates.PASSED:
            self.passed += 1
        elif m["outcome"] == gates.FAILED:
            self.failed += 1
        else:
            self.inconclusive += 1

    def outputs(self, outcome: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "values": list(self.values),
            "passed": self.passed,
            "failed": self.failed,
            "inconclusive": self.inconclusive,
            "outcome": outcome,
            "measurements": self.measurements[-KEPT:],
        }
        last = self.measurements[-1] if self.measurements else {}
        if "n" in last:
            for key in ("value", "baseline", "n", "n_baseline", "baseline_of"):
                out[key] = last.get(key)
        return out


class CheckAction(BuiltinAction):
    name = "check"
    summary = "measure a metric and gate on a condition: pass, fail, or ask a person"
    idempotent = True
    changes = False
    late_keys = frozenset({"condition"})
    late_names = frozenset({"value", "values", "baseline", "n", "n_baseline"})
    expression_keys = frozenset({"condition"})
    command_keys = frozenset({"command"})
    url_keys = frozenset({"url"})
    sql_keys = frozenset({"query", "baseline_query"})

    def describe(self, params: Mapping[str, Any]) -> str:
        count = params.get("count", 1)
        every = f" every {params.get('interval', DEFAULT_INTERVAL)}" if count != 1 else ""
        head = "gate"
        if params.get("cohort"):
            head = f"gate on cohort {params['cohort']} ({params.get('metric', 'mean')})"
        return f"{head}: {params.get('condition')} ({count}×{every})"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        gate = Gate(params, ctx)
        decided = gate.decided()
        if decided is not None:
            return decided
        return gate.measure()


def wave_attempt(ctx: ActionContext) -> int:
    """The wave attempt the step runs in (SPEC §11; 1 outside cohort waves)."""
    if ctx.members is not None:
        return int(ctx.members.attempt)
    wave = ctx.template_context.get("wave")
    if isinstance(wave, Mapping) and isinstance(wave.get("attempt"), int):
        return int(wave["attempt"])
    return 1


def _int(params: Mapping[str, Any], key: str, default: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ActionFailed(
            f"check: {key}: expected a whole number ≥ 0, got {value!r}", retryable=False
        )
    return value


def _retry(ctx: ActionContext) -> Retry:
    """The step's retries: each reading of the source gets them."""
    inst = ctx.runbook.instances.get(ctx.step_id)
    return inst.step.call.retries if inst is not None else Retry(attempts=1)


class Gate:
    """One run of one gate step."""

    def __init__(self, params: Mapping[str, Any], ctx: ActionContext) -> None:
        self.params = params
        self.ctx = ctx
        self.condition = str(params["condition"])
        self.count = max(1, _int(params, "count", 1))
        self.failure_limit = _int(params, "failure_limit", 0)
        self.inconclusive_limit = _int(params, "inconclusive_limit", 0)
        self.min_samples = _int(params, "min_samples", 1)
        try:
            self.interval = parse_duration(params.get("interval", DEFAULT_INTERVAL))
        except ValueError as exc:
            raise ActionFailed(f"check: interval: {exc}", retryable=False) from None
        self.attempt = wave_attempt(ctx)
        self.retry = _retry(ctx)
        self.context = dict(ctx.template_context)
        self.cohort = params.get("cohort")
        try:
            names = parse("{{ " + self.condition + " }}").names
        except Exception:  # noqa: BLE001 - a syntax error shows when it is evaluated
            names = frozenset()
        self.uses_baseline = bool(names & BASELINE_NAMES)
        # in every measurement: what it was tested with, and in which wave attempt
        self.where: dict[str, Any] = {"condition": self.condition, "attempt": self.attempt}

    # -- a decision made on an earlier, inconclusive run of this gate --------------------------
    def decided(self) -> Mapping[str, Any] | None:
        ctx = self.ctx
        waiting = gates.waiting_of(ctx.records.items(), ctx.run_id)
        if waiting is None or waiting.get("attempt") != self.attempt:
            return None
        decision = gates.decision_of(ctx.records.items(), waiting)
        if decision is None or decision.get("run") != ctx.run_id:
            return None
        if decision.get("attempt") != self.attempt or self._used(str(waiting["token"])):
            return None
        void = gates.binding_void(decision, ctx.pinned)
        if void is not None:  # made on another plan than the run applies now: measure again
            ctx.emit("check.decision_void", {"token": waiting["token"], "reason": void})
            ctx.progress(f"decision by {decision.get('by')} void: {void}")
            return None
        outputs: dict[str, Any] = {
            key: waiting.get(key) for key in ("values", "passed", "failed", "inconclusive")
        }
        outputs["outcome"] = gates.decided_outcome(decision)
        outputs["measurements"] = list(waiting.get("measurements") or [])
        outputs["decision"] = {
            k: decision.get(k) for k in ("token", "decision", "by", "on_behalf_of", "comment", "at")
        }
        said = {k: decision.get(k) for k in ("decision", "by")}
        ctx.emit("check.decided", {"token": waiting["token"], **said})
        if decision.get("decision") == gates.PASSED:
            ctx.progress(f"gate {outputs['outcome']}")
            return outputs
        comment = f": {decision['comment']}" if decision.get("comment") else ""
        raise ActionFailed(
            f"failed by the decision of {decision.get('by')} on an inconclusive evaluation"
            f"{comment} ({gates.measurements_text(outputs['measurements'])})",
            outputs=outputs,
            retryable=False,
        )

    def _used(self, token: str) -> bool:
        """The step already ended with this decision (an apply after it failed, or a
        `--replace`): the gate measures again. Read from its stored outputs, which commit
        together with that end."""
        steps = self.ctx.template_context.get("steps")
        try:
            prior = steps[self.ctx.step_id].outputs if steps is not None else None
        except (KeyError, TypeError):
            return False
        decision = prior.get("decision") if isinstance(prior, Mapping) else None
        return isinstance(decision, Mapping) and decision.get("token") == token

    # -- measuring ------------------------------------------------------------------------
    def measure(self) -> Mapping[str, Any]:
        ctx = self.ctx
        tally = Tally()
        one = self._cohort_reader() if self.cohort else self._plain_reader()
        for index in range(self.count):
            if ctx.cancel.is_set():
                raise ActionFailed(
                    f"check interrupted after {index} of {self.count}",
                    outputs=tally.outputs(gates.INCONCLUSIVE),
                )
            m = one(index, tally)
            if ctx.cancel.is_set():
                raise ActionFailed(
                    f"check interrupted after {index} of {self.count}",
                    outputs=tally.outputs(gates.INCONCLUSIVE),
                )
            tally.add(m)
            ctx.emit("check.measured", m)
            ctx.progress(f"check {index + 1}/{self.count}: {gates.measurement_text(m)}")
            if tally.failed > self.failure_limit:
                raise ActionFailed(
                    f"check failed: {tally.failed} of {index + 1} measurement(s) failed "
                    f"`{self.condition}` (failure_limit {self.failure_limit}); values: "
                    f"{_shown(tally.values)}" + _last_sample(m),
                    outputs=tally.outputs(gates.FAILED),
                    retryable=False,
                )
            if index + 1 < self.count and not ctx.sleep(self.interval):
                done = f"after {index + 1} of {self.count} measurement(s)"
                if ctx.cancel.is_set():
                    raise ActionFailed(
                        f"check interrupted {done}", outputs=tally.outputs(gates.INCONCLUSIVE)
                    )
                raise ActionFailed(
                    f"check timed out {done}: {self.count} every "
                    f"{format_duration(self.interval)} does not fit in the step's timeout of "
                    f"{format_duration(ctx.timeout)}",
                    outputs=tally.outputs(gates.INCONCLUSIVE),
                    retryable=False,
                )
        result = gates.outcome(
            tally.failed, tally.inconclusive, self.failure_limit, self.inconclusive_limit
        )
        if result == gates.INCONCLUSIVE:
            self._wait(tally)
        return tally.outputs(result)

    def _test(self, m: dict[str, Any], tally: Tally, names: Mapping[str, Any]) -> dict[str, Any]:
        """Evaluate the condition on a measurement with a value."""
        value = m["value"]
        scope = {**self.context, **names, "value": value, "values": [*tally.values, value]}
        try:
            ok = bool(evaluate(self.condition, scope))
        except TemplateError as exc:
            return _inconclusive(m, f"condition `{self.condition}`: {exc.message}")
        tally.values.append(value)
        return {**m, "passed": ok, "outcome": gates.PASSED if ok else gates.FAILED}

    def _plain_reader(self) -> Any:
        source, read_once = metrics.source_of(self.params, self.ctx)

        def one(index: int, tally: Tally) -> dict[str, Any]:
            reading = metrics.read(read_once, source, self.ctx, self.retry)
            m: dict[str, Any] = {"index": index, "value": reading.value, **self.where}
            if reading.value is None:
                return _inconclusive(m, reading.reason)
            return self._test(m, tally, {})

        return one

    def _cohort_reader(self) -> Any:
        from . import samples

        ctx, params = self.ctx, self.params
        members = ctx.members
        if members is None or members.cohort != self.cohort:
            raise ActionFailed(
                f"`cohort: {self.cohort}` works in a wave of that cohort only (its phase needs "
                f"`waves: {{cohort: {self.cohort}}}`)",
                retryable=False,
            )
        from runbook_engine.plugins.sql.actions import params_of
        from runbook_engine.plugins.sql.db import redact_dsn

        metric = str(params.get("metric", "mean"))
        dsn, query = str(params["dsn"]), str(params["query"])
        base_dsn = str(params.get("baseline_dsn") or dsn)
        base_query = str(params.get("baseline_query") or query)
        bound = params_of(params)

        def sample(on: str, sql: str, keys: list[Any], who: str) -> tuple[Any, int | None, str]:
            got = metrics.retrying(
                lambda: samples.measure(on, sql, bound, keys, metric, ctx.masker), ctx, self.retry
            )
            if isinstance(got, metrics.Reading):
                return None, None, f"{who}: {got.reason}"
            if got.not_numbers:
                shown = metrics.as_number(got.example, "a row", ctx.masker).reason
                return (
                    None,
                    got.n,
                    f"{who}: {got.not_numbers} row(s) gave a value that is not a number "
                    f"({shown or repr(got.example)})",
                )
            if got.n == 0:
                return None, 0, f"no member of {who} has a value in the query on {redact_dsn(on)}"
            reading = metrics.as_number(got.raw, f"the {metric} of {who}", ctx.masker)
            return reading.value, got.n, reading.reason

        def one(index: int, tally: Tally) -> dict[str, Any]:
            moved, base_name, base_keys = members.sample()
            wave = f"wave {members.wave} (at or past moved)"
            value, n, why = (
                sample(dsn, query, moved, wave)
                if moved
                else (None, 0, f"no member of wave {members.wave} is at or past moved")
            )
            who = "the holdout" if base_name == "holdout" else "the members not yet moved"
            baseline, n_base, why_base = (
                sample(base_dsn, base_query, base_keys, who)
                if base_keys
                else (None, 0, f"no {base_name} member to compare with")
            )
            m: dict[str, Any] = {
                "index": index,
                "value": value,
                "baseline": baseline,
                "n": n,
                "n_baseline": n_base,
                "baseline_of": base_name,
                **self.where,
            }
            reasons = []
            if value is None:
                reasons.append(why)
            elif n is not None and n < self.min_samples:
                reasons.append(f"n {n} < min_samples {self.min_samples}")
            if self.uses_baseline:
                if baseline is None:
                    reasons.append(why_base)
                elif n_base is not None and n_base < self.min_samples:
                    reasons.append(f"n_baseline {n_base} < min_samples {self.min_samples}")
            if reasons:
                return _inconclusive(m, "; ".join(reasons))
            names = {"baseline": baseline, "n": n, "n_baseline": n_base}
            return self._test(m, tally, names)

        return one

    # -- asking a person ------------------------------------------------------------------
    def _wait(self, tally: Tally) -> None:
        """Record this evaluation (durably, before the step says `waiting`) and wait."""
        ctx = self.ctx
        token = secrets.token_hex(8)
        head = (
            f"gate inconclusive: {gates.counts_text(tally.passed, tally.failed, tally.inconclusive)}"
            f" of {self.count} measurement(s) (failure_limit {self.failure_limit}, "
            f"inconclusive_limit {self.inconclusive_limit})"
        )
        summary = f"{head}: {gates.measurements_text(tally.measurements)}"
        record = {
            "token": token,
            "run": ctx.run_id,
            "attempt": self.attempt,
            "head": head,
            "summary": summary,
            "condition": self.condition,
            **{k: v for k, v in tally.outputs(gates.INCONCLUSIVE).items()},
        }
        ctx.records.put({gates.WAITING: json.dumps(record)})
        ctx.emit(
            "check.waiting",
            {
                "token": token,
                "attempt": self.attempt,
                "outcome": gates.INCONCLUSIVE,
                "passed": tally.passed,
                "failed": tally.failed,
                "inconclusive": tally.inconclusive,
                "measurements": tally.measurements[-KEPT:],
            },
        )
        raise Waiting(summary)


def _inconclusive(m: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**m, "passed": False, "outcome": gates.INCONCLUSIVE, "reason": reason}


def _shown(values: list[int | float]) -> str:
    head = "…, " if len(values) > gates.SHOWN else ""
    return "[" + head + ", ".join(str(v) for v in values[-gates.SHOWN :]) + "]"


def _last_sample(m: Mapping[str, Any]) -> str:
    return f"; last: {gates.measurement_text(m)}" if "n" in m else ""
