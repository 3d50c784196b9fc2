"""The closing summary of apply and rollback: never a plain "success" when something failed,
fired or was rolled back (SPEC §4)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..errors import Exit
from ..format.printable import one_line
from .scheduler import ApplyOutcome

_HEAD = {
    Exit.OK: "succeeded",
    Exit.FAILED: "FAILED",
    Exit.PAUSED: "PAUSED",
    Exit.INTERRUPTED: "INTERRUPTED",
}


def counts_text(counts: dict[str, int]) -> str:
    order = [
        "succeeded",
        "skipped",
        "failed",
        "rolled_back",
        "rollback_failed",
        "waiting",
        "unknown",
        "pending",
        "running",
        "rolling_back",
    ]
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))


def apply_summary(
    out: ApplyOutcome,
    file: str,
    gates: frozenset[str] = frozenset(),
    foreach: frozenset[str] = frozenset(),
) -> tuple[str, dict[str, Any]]:
    """``gates``: the gate (`check`) instances, whose waiting a person decides; ``foreach``:
    the per-member steps, whose waiting members are decided by `resolve --member`."""
    q = _quote(file)
    if out.nothing_to_do:
        lines = [f"nothing to do: every step of {file} is done"]
        if out.changed:
            lines.append(
                f"  changed since applied (not re-run): {', '.join(out.changed)}; "
                f"re-run one with: runbook apply {q} --replace ID"
            )
        return "\n".join(lines), {"exit": 0, "nothing_to_do": True, "changed": out.changed}
    head = _HEAD.get(out.exit, str(out.exit))
    short_only = bool(out.short) and not (out.failed or out.rolled_back or out.rollback_failed)
    if out.compensated:
        head = "succeeded after compensation (exit 1)"
    elif short_only and out.exit is Exit.FAILED:
        head = "every step succeeded, but NOT CLEAN (exit 1)"
    lines = [f"run {out.run_id}: {head} — {counts_text(out.counts)}"]
    for c in out.cohorts:
        lines.append(f"  {c.line}")
        lines.extend(f"  not clean: {s.text(c.cohort)}" for s in c.short)
    for node, error in out.failed:
        lines.append(f"  failed: {node}: {one_line(error)}")
    if out.fired:
        lines.append(f"  contingencies fired in this run: {', '.join(out.fired)}")
    if out.rolled_back:
        lines.append(f"  rolled back: {', '.join(out.rolled_back)}")
    if out.left_in_place:
        lines.append(
            "  left in place (no rollback declared: their changes stay): "
            + ", ".join(out.left_in_place)
        )
    if out.rollback_failed:
        lines.append(
            f"  rollback FAILED: {', '.join(out.rollback_failed)} (the steps before them were "
            "left as they are)"
        )
    for node, why in out.waiting:
        lines.append(f"  {node} waits: {one_line(why)}")
        if node in gates:
            lines.append(f"    pass it with: runbook approve {q} {_quote(node)} [--comment TEXT]")
            lines.append(
                f"    fail it with: runbook resolve {q} {_quote(node)} --as failed [--comment TEXT]"
            )
            continue
        if node in foreach:
            from .members import member_advice

            lines.append(f"    {member_advice(file, node)}")
            continue
        lines.append(f"    approve with: runbook approve {q} {_quote(node)} [--comment TEXT]")
    for node in out.unknown:
        if node in out.unknown_in_rollback:
            lines.append(
                f"  {node} is unknown (it was rolling back when the run stopped): check it, "
                f"then runbook resolve {q} {_quote(node)} --as rolled_back|rollback_failed|"
                "succeeded (succeeded: its rollback did not happen)"
            )
            continue
        lines.append(
            f"  {node} is unknown (it was running when the run stopped): check it, then "
            f"runbook resolve {q} {_quote(node)} --as succeeded|failed|pending"
        )
    if out.changed:
        lines.append(f"  changed since applied (not re-run): {', '.join(out.changed)}")
    if out.compensated and out.rollbacks and not out.rolled_back:
        lines.append(
            f"  {out.rollbacks} step rollback(s) earlier in this run; those steps ran again"
        )
    if out.exit in (Exit.FAILED, Exit.PAUSED, Exit.INTERRUPTED) and not (
        out.compensated or short_only
    ):
        lines.append(f"  resume with: runbook apply {q}")
    if out.short:
        lines.append(f"  each member's journey: runbook customers {q} KEY")
    data = {k: v for k, v in asdict(out).items() if k not in ("exit", "cohorts")}
    data["exit"] = int(out.exit)
    data["cohorts"] = {c.cohort: c.as_json() for c in out.cohorts}
    return "\n".join(lines), data


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
