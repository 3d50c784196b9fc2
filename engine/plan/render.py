"""``Plan`` -> text (for a terminal), markdown (for a pull request or a wiki) or JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ..format.model import IMPACTS, LIKELIHOODS
from .build import Plan, PlanRisk, PlanStep
from .cohorts import PlanCohort

_MAX_ID_WIDTH = 40


def _where(step: PlanStep) -> str:
    return f"{step.phase}/{step.wave}" if step.wave else step.phase


def _status(step: PlanStep) -> str:
    if step.status is None:
        return ""
    return (
        step.status.status
        + (" (changed since applied)" if step.status.changed else "")
        + (
            " (done with other vars; runs again only with --replace)"
            if step.status.other_vars
            else ""
        )
    )


def _rollback(step: PlanStep) -> str:
    return f"{step.rollback_action}: {step.rollback}" if step.rollback_action else step.rollback


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _summary(plan: Plan) -> str:
    steps = sum(len(g) for g in plan.groups)
    return (
        f"{_plural(steps, 'step')} in {_plural(len(plan.groups), 'group')}, "
        f"{_plural(len(plan.risks), 'risk')}"
    )


# -- text -------------------------------------------------------------------------------------
def render_text(plan: Plan) -> str:
    out = [f"Plan: {plan.name} ({plan.file}): {_summary(plan)}"]
    if plan.description:
        out.append(f"  {plan.description}")
    if plan.owner:
        out.append(f"  owner: {plan.owner}")
    if plan.cohorts:
        out.append("")
        out.extend(_text_cohorts(plan.cohorts))
        out.append("")
    out.append("Groups run in order; the steps of one group can run side by side.")
    for k, group in enumerate(plan.groups, 1):
        out.append("")
        side = f": {len(group)} steps side by side" if len(group) > 1 else ""
        out.append(f"Group {k}{side}")
        width = min(_MAX_ID_WIDTH, max(len(s.id) for s in group))
        where = max(len(_where(s)) for s in group)
        for s in group:
            status = f"[{_status(s)}] " if s.status else ""
            out.append(f"  {status}{s.id:<{width}}  {_where(s):<{where}}  {s.action}: {s.does}")
            pad = " " * (4 + len(status))
            if s.description:
                out.append(f"{pad}{s.description}")
            if s.status and s.status.note:
                out.append(f"{pad}{s.status.note}")
            if s.when is not None:
                out.append(f"{pad}when: {s.when}")
            if s.on_failure != "abort":
                out.append(f"{pad}on failure: {s.on_failure}")
            out.append(f"{pad}risks: {', '.join(s.risks) if s.risks else '-'}")
            out.append(f"{pad}rollback: {_rollback(s)}")
    out.append("")
    out.extend(_text_register(plan))
    return "\n".join(out)


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def cohort_head(c: PlanCohort) -> str:
    """One sentence: frozen or drawn now, eligible, excluded (or why it is not drawn)."""
    if c.not_drawn is not None:
        return f"not drawn: {c.not_drawn}"
    if c.frozen_at is not None:
        how = f"frozen {c.frozen_at}"
        if c.changed:
            how += " (the runbook's draw changed since: `runbook cohort redraw` or undo the edit)"
    else:
        how = "not frozen yet; drawn now from its source (the first apply freezes it)"
    excluded = ", ".join(f"{n:,} {r}" for r, n in c.excluded.items())
    return f"{how}: {_count(c.eligible)} eligible of {_count(c.source_rows)}" + (
        f"; excluded: {excluded}" if excluded else ""
    )


def strata_text(strata: dict[str, int] | Any) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in strata.items() if n)


def _text_cohorts(cohorts: tuple[PlanCohort, ...]) -> list[str]:
    out = ["Cohorts (each drawn once into its waves, then frozen)"]
    for c in cohorts:
        out.append(f"  {c.name}: {cohort_head(c)}")
        if not c.waves:
            continue
        width = max(len(w.id) for w in c.waves)
        size = max(len(f"{w.size:,}") for w in c.waves)
        for w in c.waves:
            strata = strata_text(w.strata)
            tail = f"  {strata}" if strata and list(w.strata) != ["all"] else ""
            out.append(f"    {w.id:<{width}}  {w.size:>{size},}{tail}")
    return out


def _text_register(plan: Plan) -> list[str]:
    if not plan.risks:
        return ["Risk register: no risks declared."]
    cells = plan.matrix()
    corner = "likelihood \\ impact"
    texts = {(lk, im): ", ".join(cells[lk][im]) or "." for lk in LIKELIHOODS for im in IMPACTS}
    widths = {im: max(len(im), *(len(texts[lk, im]) for lk in LIKELIHOODS)) for im in IMPACTS}
    first = max(len(corner), *(len(lk) for lk in LIKELIHOODS))
    out = ["Risk register (likelihood x impact)"]
    head = "  ".join(f"{im:<{widths[im]}}" for im in IMPACTS)
    out.append(f"  {corner:<{first}}  {head}".rstrip())
    for lk in LIKELIHOODS:
        row = "  ".join(f"{texts[lk, im]:<{widths[im]}}" for im in IMPACTS)
        out.append(f"  {lk:<{first}}  {row}".rstrip())
    out.append("")
    out.append("Risks")
    for r in plan.risks:
        out.extend(_text_risk(r))
    return out


def _text_risk(r: PlanRisk) -> list[str]:
    out = [f"  {r.id}" + (f": {r.description}" if r.description else "")]
    owner = f", owner {r.owner}" if r.owner else ", no owner"
    out.append(f"    likelihood {r.likelihood}, impact {r.impact}{owner}")
    out.append(f"    mitigation: {r.mitigation or '-'}")
    if r.contingencies:
        out.append("    contingencies:")
        out.extend(f"      {c.id} ({c.action}: {c.does})" for c in r.contingencies)
    else:
        out.append("    contingencies: none")
    out.append(f"    named by: {', '.join(r.named_by) if r.named_by else 'no step'}")
    return out


# -- markdown ---------------------------------------------------------------------------------
def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~!{}<>&])")


def _data(text: str) -> str:
    """Values that come from the customers' data (strata): no markup, no mention, no link."""
    return _MD_SPECIAL.sub(r"\\\1", text).replace("@", "@\u200b")


def _row(values: list[Any]) -> str:
    return "| " + " | ".join(_cell(v) for v in values) + " |"


def render_markdown(plan: Plan) -> str:
    out = [f"# Plan: {plan.name}", ""]
    if plan.description:
        out += [f"> {_cell(plan.description)}", ""]
    owner = f" · owner: {_cell(plan.owner)}" if plan.owner else ""
    out += [f"`{plan.file}` · {_summary(plan)}{owner}", ""]
    if plan.cohorts:
        out += ["## Cohorts", ""]
        for c in plan.cohorts:
            out.append(f"**{_cell(c.name)}**: {_cell(cohort_head(c))}")
            out.append("")
            if c.waves:
                out.append(_row(["wave", "size", "strata"]))
                out.append("|---|---:|---|")
                for w in c.waves:
                    out.append(_row([w.id, f"{w.size:,}", _data(strata_text(w.strata))]))
                out.append("")
    out += ["## Steps", ""]
    out.append("Groups run in order; the steps of one group can run side by side.")
    out.append("")
    with_status = any(s.status for g in plan.groups for s in g)
    head = ["group", "step", "phase", "wave", "action", "does", "risks", "rollback"]
    if with_status:
        head.insert(2, "status")
    out.append(_row(head))
    out.append("|" + "|".join("---:" if h == "group" else "---" for h in head) + "|")
    for k, group in enumerate(plan.groups, 1):
        for s in group:
            does = s.does + (f" — {s.description}" if s.description else "")
            if s.when is not None:
                does += f" (when: {s.when})"
            if s.on_failure != "abort":
                does += f" (on failure: {s.on_failure})"
            row: list[Any] = [
                k,
                f"`{s.id}`",
                s.phase,
                s.wave or "",
                s.action,
                does,
                ", ".join(s.risks),
                _rollback(s),
            ]
            if with_status:
                note = f": {s.status.note}" if s.status and s.status.note else ""
                row.insert(2, _status(s) + note)
            out.append(_row(row))
    out += ["", "## Risk register", ""]
    if not plan.risks:
        out.append("No risks declared.")
        return "\n".join(out)
    cells = plan.matrix()
    out.append(_row(["likelihood \\ impact", *IMPACTS]))
    out.append("|" + "|".join(["---"] * (len(IMPACTS) + 1)) + "|")
    for lk in LIKELIHOODS:
        out.append(_row([lk, *(", ".join(cells[lk][im]) for im in IMPACTS)]))
    out += ["", "### Risks", ""]
    head = ["risk", "likelihood", "impact", "owner", "mitigation", "contingencies", "named by"]
    out.append(_row(head))
    out.append("|" + "|".join(["---"] * len(head)) + "|")
    for r in plan.risks:
        conts = "; ".join(f"`{c.id}` ({c.action}: {c.does})" for c in r.contingencies)
        name = f"`{r.id}`" + (f": {r.description}" if r.description else "")
        out.append(
            _row(
                [
                    name,
                    r.likelihood,
                    r.impact,
                    r.owner,
                    r.mitigation,
                    conts or "none",
                    ", ".join(r.named_by),
                ]
            )
        )
    return "\n".join(out)


# -- json -------------------------------------------------------------------------------------
def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "runbook": plan.name,
        "file": plan.file,
        "description": plan.description,
        "owner": plan.owner,
        "digest": plan.digest,
        "groups": [
            {"index": k, "steps": [s.as_json() for s in group]}
            for k, group in enumerate(plan.groups, 1)
        ],
        "risk_matrix": {
            "rows": "likelihood",
            "columns": "impact",
            "likelihoods": list(LIKELIHOODS),
            "impacts": list(IMPACTS),
            "cells": plan.matrix(),
        },
        "risks": [r.as_json() for r in plan.risks],
        "warnings": [p.as_json() for p in plan.warnings],
        "cohorts": {c.name: c.as_json() for c in plan.cohorts},
    }


def render_json(plan: Plan) -> str:
    return json.dumps(plan_json(plan), indent=2, ensure_ascii=False)


RENDERERS: dict[str, Callable[[Plan], str]] = {
    "text": render_text,
    "markdown": render_markdown,
    "json": render_json,
}
