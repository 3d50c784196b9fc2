"""Gates (SPEC §7, §11): the outcome rule, and how a gate's measurements, its waiting for a
person and that person's decision are written down.

The ``check`` action, ``approve``/``resolve``, ``status`` and ``report`` all read and write the
same shapes, so they live here, below every one of them.  A measurement is a mapping
``{index, value, passed, outcome, condition, reason?, baseline?, n?, n_baseline?,
baseline_of?}`` (``outcome``: passed, failed or inconclusive; ``reason`` says why it is
inconclusive).  An inconclusive gate writes the step record ``gate.waiting``: ``{token, run,
attempt, at, summary (the waiting reason), measurements, values, passed, failed,
inconclusive, condition}``; a decision on it is the record ``gate.decision.TOKEN``: ``{token,
run, attempt, decision (passed|failed), by, on_behalf_of, comment, at, measurements, digest,
vars, pin}``.  The token ties a decision to that one waiting evaluation of the gate (its run
and wave attempt): a decision never applies to another measurement; ``digest``, ``vars`` and
``pin`` (as an approval's ``digest``, ``vars``, ``step``: ``format/approvals.py``) tie it to the plan it was made on: it
counts only while the run is pinned to that runbook and those vars (``binding_void``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

PASSED, FAILED, INCONCLUSIVE = "passed", "failed", "inconclusive"
OUTCOMES = (PASSED, FAILED, INCONCLUSIVE)
METRICS = ("mean", "sum", "count", "rate")
WAITING = "gate.waiting"  # the step record of the evaluation a person is asked to decide
SHOWN = 20  # measurements spelled out in a waiting reason or a failure


def binding(digest: str | None, variables: Mapping[str, Any] | None, step: str) -> dict[str, Any]:
    """What a decision is bound to: the run's runbook digest, its vars' digest (as stored),
    the step's pin."""
    from .approvals import vars_digest

    return {"digest": digest, "vars": vars_digest(variables), "pin": step}


def binding_void(decision: Mapping[str, Any], pinned: Mapping[str, Any]) -> str | None:
    """Why a decision does not count under the plan ``pinned`` (``{digest, vars}`` of the
    run now), or None when it does (a decision written before it was bound counts)."""
    given, now_digest = decision.get("digest"), pinned.get("digest")
    if isinstance(given, str) and now_digest and given != now_digest:
        return "the runbook was edited since it was made"
    given, now_vars = decision.get("vars"), pinned.get("vars")
    if isinstance(given, str) and now_vars and given != now_vars:
        return "other vars than it was made for"
    return None


def decision_key(token: str) -> str:
    return f"gate.decision.{token}"


def outcome(failed: int, inconclusive: int, failure_limit: int, inconclusive_limit: int) -> str:
    """SPEC §11: failed past ``failure_limit``, else inconclusive past ``inconclusive_limit``,
    else passed."""
    if failed > failure_limit:
        return FAILED
    if inconclusive > inconclusive_limit:
        return INCONCLUSIVE
    return PASSED


def load(text: str | None) -> dict[str, Any] | None:
    """A record's JSON object, or None (absent, or not an object)."""
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def number(value: Any) -> str:
    """A measured number for people: ``0.0123``, ``150``, ``—`` for none."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def measurement_text(m: Mapping[str, Any]) -> str:
    """``#2 0.031 vs holdout 0.02 (n 150, n_baseline 800): failed`` (with the reason when
    inconclusive)."""
    index = m.get("index")
    head = f"#{index + 1}" if isinstance(index, int) else "#?"
    text = f"{head} {number(m.get('value'))}"
    if "n" in m:
        text += f" vs {m.get('baseline_of') or 'baseline'} {number(m.get('baseline'))}"
        text += f" (n {number(m.get('n'))}, n_baseline {number(m.get('n_baseline'))})"
    text += f": {m.get('outcome') or (PASSED if m.get('passed') else FAILED)}"
    if m.get("reason"):
        text += f" ({m['reason']})"
    return text


def measurements_text(ms: Iterable[Mapping[str, Any]]) -> str:
    """The last ``SHOWN`` measurements, ``; ``-separated."""
    every = list(ms)
    head = "…; " if len(every) > SHOWN else ""
    return head + "; ".join(measurement_text(m) for m in every[-SHOWN:])


def counts_text(passed: int, failed: int, inconclusive: int) -> str:
    return f"{passed} passed, {failed} failed, {inconclusive} inconclusive"


def decided_outcome(decision: Mapping[str, Any]) -> str:
    """The gate's ``outcome`` output after a person's decision: ``passed (decided by NAME)``
    or ``failed (decided by NAME)``."""
    return f"{decision.get('decision')} (decided by {decision.get('by')})"


def waiting_of(records: Mapping[str, str] | None, run: str | None) -> dict[str, Any] | None:
    """The waiting evaluation of a gate step in ``run`` (None when it has none)."""
    got = load((records or {}).get(WAITING))
    if got is None or (run is not None and got.get("run") != run):
        return None
    return got


def decision_of(
    records: Mapping[str, str] | None, waiting: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The decision recorded on that waiting evaluation, if any."""
    token = waiting.get("token")
    if not isinstance(token, str):
        return None
    got = load((records or {}).get(decision_key(token)))
    if got is None or got.get("token") != token:
        return None
    return got
