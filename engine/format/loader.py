"""Read, check and build a runbook: every problem of a file is reported at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import Problem, ValidationFailed
from .checks import all_checks, hint
from .lint import lint
from .model import Runbook
from .order import Order, barrier_phase
from .parse import Builder
from .schema import check, runtime_schema, type_name
from .yamlsource import SourceMap, parse, read_file


@dataclass(frozen=True)
class Loaded:
    runbook: Runbook
    order: Order  # the DAG's edges, plain Python; graph.dag.Dag puts them in networkx
    warnings: tuple[Problem, ...]


def load_text(text: str, file: str) -> Loaded:
    """Check ``text`` (named ``file`` in messages); raise ``ValidationFailed`` on any error."""
    with _no_gc():
        data, smap = parse(text, file)
        return _check(data, smap, file)


@contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection while a document is built and checked.

    Loading allocates hundreds of thousands of small, acyclic objects; each allocation burst
    triggers collections that walk the whole growing heap (a fifth of the time of a
    10,000-step runbook).  Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(path: str, display: str | None = None) -> Loaded:
    name = display or path
    return load_text(read_file(path, name), name)


def _check(data: object, smap: SourceMap, file: str) -> Loaded:
    if data is None:
        raise ValidationFailed([Problem(file, 1, 1, "", "empty file: expected a runbook mapping")])
    if not isinstance(data, dict):
        raise ValidationFailed(
            [smap.problem((), f"expected a runbook mapping at the top, got {type_name(data)}")]
        )
    problems = check(data, runtime_schema(), smap)
    if data.get("apiVersion") != "runbook/v1" and "apiVersion" in data:
        # a foreign or future format: the rest of the schema would only add noise
        raise ValidationFailed(
            [
                smap.problem(
                    ("apiVersion",),
                    f"unsupported apiVersion {data['apiVersion']!r}; "
                    "this runbook engine reads runbook/v1",
                )
            ]
        )
    runbook = Builder(data, smap, file).build()
    problems.extend(all_checks(runbook))
    order = Order(runbook)
    for miss in order.unknown_needs:
        inst = runbook.instances.get(miss.node)
        if inst is not None:
            path = (*inst.step.path, "needs", miss.index)
        else:
            path = (*runbook.phase_by_id[barrier_phase(miss.node)].path, "needs", miss.index)
        known = sorted([*runbook.steps, *runbook.phase_by_id])
        problems.append(
            smap.problem(
                path, f"unknown step or phase {miss.name!r} in needs{hint(miss.name, known)}"
            )
        )
    cycle = order.find_cycle()
    if cycle:
        problems.append(order.cycle_problem(cycle))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ValidationFailed(_unique(errors))
    return Loaded(runbook, order, tuple(sorted(lint(runbook))))


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
