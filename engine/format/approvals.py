"""Approvals (SPEC §8, §11): who may approve an ``approval`` step, how many must, for how long
an approval counts, and what voids one.

The ``approval`` action, ``approve``, ``apply --accept-changes``, ``plan``, ``status`` and
``report`` read and write the same shapes, so they live here, below every one of them.  Each
approval is the step record ``approval:RUN:IDENTITY`` (one per identity: a second one by the
same identity is refused by ``approve``), a JSON object ``{by, uid, on_behalf_of, comment,
at, digest, vars, step}`` (``uid``: the OS user's uid on a directory; one uid is one identity
whether its name resolved or not, ``uid N`` when it did not): ``digest`` is the runbook's digest the run was pinned to, ``vars`` the
digest of the run's vars (masked, as stored), ``step`` the pin of the step's definition.  An
approval written by an earlier version has the key ``approval:RUN`` and no ``vars``/``step``.
A voided approval is rewritten ``{void: REASON, voided_at, was: {...}}`` (the journal keeps
both).

An approval counts while it is not void, is bound to the runbook and vars the run applies
now, is younger than ``expires`` and was not acted on already: the step's outputs list the
approvals it went on with (``used``), and when the step runs again after a rollback (its wave
rolled back, a new attempt) or a ``--replace``, those count no more: each attempt waits for
approvals of its own, as a gate decision is bound to its wave attempt.  The step goes on once
``required`` distinct identities have one that counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .durations import format_duration, parse_duration
from .templates import TemplateError, render

PREFIX = "approval:"


def key(run_id: str, who: str) -> str:
    """The record key of ``who``'s approval in ``run_id``."""
    return f"{PREFIX}{run_id}:{who}"


def legacy_key(run_id: str) -> str:
    """The key an earlier version wrote its one approval of a run under."""
    return f"{PREFIX}{run_id}"


def vars_digest(values: Mapping[str, Any] | None) -> str:
    """The digest of a run's vars as stored (masked): a plan is the runbook and these."""
    text = json.dumps(values or {}, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def load(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def of_run(records: Mapping[str, str] | None, run_id: str) -> dict[str, dict[str, Any]]:
    """Record key -> approval (or void) of ``run_id`` among a step's records."""
    out: dict[str, dict[str, Any]] = {}
    mine = key(run_id, "")
    for k, text in (records or {}).items():
        if k == legacy_key(run_id) or k.startswith(mine):
            doc = load(text)
            if doc is not None:
                out[k] = doc
    return out


def uid_name(uid: int) -> str:
    """The name an identity is recorded under when the user database has no entry for its
    uid (``state/identity.py``)."""
    return f"uid {uid}"


def identities(by: Any, uid: Any) -> frozenset[str]:
    """The forms one identity is known by: its name, and ``uid N`` when its uid is known (so
    that one uid recorded once by name and once, the name not resolving, as ``uid N`` is
    one identity)."""
    out = {str(by)}
    if isinstance(uid, int) and not isinstance(uid, bool):
        out.add(uid_name(uid))
    return frozenset(out)


def same_identity(doc: Mapping[str, Any], by: str, uid: int | None) -> bool:
    """``doc`` (an approval, a run's starter ``{by, uid}``) was given by this identity."""
    return bool(identities(doc.get("by"), doc.get("uid")) & identities(by, uid))


def used_of(outputs: Mapping[str, Any] | None) -> frozenset[tuple[str, str]]:
    """(by, at) of each approval the step went on with, from its stored outputs: acted on."""
    got = (outputs or {}).get("approvals")
    if not isinstance(got, list):
        return frozenset()
    return frozenset((str(d.get("by")), str(d.get("at"))) for d in got if isinstance(d, Mapping))


@dataclass(frozen=True)
class Rules:
    """An approval step's ``with``, rendered: what ``approve`` checks and the action counts."""

    required: int = 1
    approvers: tuple[str, ...] | None = None
    allow_self: bool = True
    expires: float | None = None  # seconds; None: never

    def counted(self, have: int) -> str:
        return f"{have} of {self.required} approval{'s' if self.required != 1 else ''}"


def rules(
    params: Mapping[str, Any],
    variables: Mapping[str, Any] | None,
    allow_self_default: bool,
    where: str = "with",
) -> Rules:
    """The rules of an approval step from its ``with`` (templates rendered with ``variables``
    when given: the run's own vars, never a command's ``--var``). Raises ValueError with a
    message naming the key."""

    def value(name: str, default: Any) -> Any:
        got = params.get(name, default)
        if variables is None:
            return got
        try:
            return render(got, {"vars": variables})
        except TemplateError as exc:
            raise ValueError(f"{where}.{name}: template error: {exc}") from None

    required = value("required", 1)
    if isinstance(required, str) and required.strip().isdigit():
        required = int(required)
    if isinstance(required, bool) or not isinstance(required, int) or required < 1:
        raise ValueError(f"{where}.required: expected a whole number ≥ 1, got {required!r}")
    approvers = value("approvers", None)
    if approvers is not None and (
        not isinstance(approvers, list) or not all(isinstance(a, str) for a in approvers)
    ):
        raise ValueError(f"{where}.approvers: expected a list of names, got {approvers!r}")
    allow_self = value("allow_self", allow_self_default)
    if isinstance(allow_self, str) and allow_self.strip().lower() in ("true", "false"):
        allow_self = allow_self.strip().lower() == "true"
    if not isinstance(allow_self, bool):
        raise ValueError(f"{where}.allow_self: expected true or false, got {allow_self!r}")
    expires = value("expires", None)
    seconds: float | None = None
    if expires is not None:
        try:
            seconds = parse_duration(expires)
        except ValueError as exc:
            raise ValueError(f"{where}.expires: {exc}") from None
    if approvers is not None and len(set(approvers)) < required:
        raise ValueError(
            f"{where}.required: {required} approvals are required but approvers names only "
            f"{len(set(approvers))}"
        )
    return Rules(
        required,
        tuple(str(a) for a in approvers) if approvers is not None else None,
        allow_self,
        seconds,
    )


FUTURE_SKEW = 60.0  # seconds an approval may be dated ahead of the clock that judges it


def _age(at: Any, now: datetime) -> float | None:
    if not isinstance(at, str):
        return None
    try:
        then = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (now - then).total_seconds()


def void_reason(
    doc: Mapping[str, Any],
    *,
    digest: str | None,
    vars_now: str | None,
    step_pin: str | None,
    expires: float | None,
    now: datetime,
    changed_vars: list[str] | None = None,
) -> str | None:
    """Why an approval no longer counts against the runbook ``digest``, the vars digest
    ``vars_now`` and the step's pin ``step_pin`` (None: not compared), or None when it
    counts."""
    if doc.get("void"):
        return str(doc["void"])
    given = doc.get("digest")
    if digest and isinstance(given, str) and given != digest:
        if step_pin and isinstance(doc.get("step"), str) and doc["step"] != step_pin:
            return "the step was edited since it was given"
        return "the runbook was edited since it was given"
    if vars_now and isinstance(doc.get("vars"), str) and doc["vars"] != vars_now:
        names = f" ({', '.join(changed_vars)})" if changed_vars else ""
        return f"other vars{names} than it was given for"
    age = _age(doc.get("at"), now)
    if age is not None and age < -FUTURE_SKEW:
        # a clock ahead would keep it counting past its `expires` (a directory's approvals
        # are dated by the approver's clock; PostgreSQL's by the database's)
        return (
            f"dated in the future (given at {doc.get('at')}, {-age:.0f}s ahead of this "
            "clock: the approver's clock runs ahead)"
        )
    if expires is not None and (age is None or age > expires):
        return f"expired (given at {doc.get('at')}; expires: {format_duration(expires)})"
    return None


@dataclass(frozen=True)
class Tally:
    """The approvals of one waiting step: those that count, and those that do not, why."""

    valid: tuple[Mapping[str, Any], ...]
    void: tuple[tuple[Mapping[str, Any], str], ...]  # (approval or void record, reason)

    @property
    def names(self) -> list[str]:
        return [str(d.get("by")) for d in self.valid]

    def text(self, rules: Rules) -> str:
        """``1 of 2 approvals (alice); approval void: expired (...)``."""
        out = rules.counted(len(self.valid))
        if self.valid:
            out += f" ({', '.join(self.names)})"
        for doc, why in self.void:
            was = doc.get("was") if isinstance(doc.get("was"), Mapping) else doc
            who = was.get("by") if isinstance(was, Mapping) else None
            out += f"; approval void: {why}" + (f" (by {who})" if who else "")
        return out


def tally(
    records: Mapping[str, str] | None,
    run_id: str,
    rules: Rules,
    *,
    digest: str | None,
    vars_now: str | None,
    step_pin: str | None,
    now: datetime,
    changed_vars: list[str] | None = None,
    used: frozenset[tuple[str, str]] = frozenset(),
) -> Tally:
    valid: list[Mapping[str, Any]] = []
    void: list[tuple[Mapping[str, Any], str]] = []
    seen: set[str] = set()
    for _k, doc in sorted(of_run(records, run_id).items(), key=lambda kv: str(kv[1].get("at"))):
        why = void_reason(
            doc,
            digest=digest,
            vars_now=vars_now,
            step_pin=step_pin,
            expires=rules.expires,
            now=now,
            changed_vars=changed_vars,
        )
        if why is None and (str(doc.get("by")), str(doc.get("at"))) in used:
            why = "acted on already (the step ran with it, then was rolled back or replaced)"
        if why is not None:
            void.append((doc, why))
        elif not (forms := identities(doc.get("by"), doc.get("uid"))) & seen:
            seen |= forms  # one identity (by name or by uid) counts once
            valid.append(doc)
    return Tally(tuple(valid), tuple(void))


def expires_text(seconds: float | None) -> str:
    return "never" if seconds is None else format_duration(seconds)
