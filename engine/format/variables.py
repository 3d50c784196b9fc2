"""``vars``: defaults from the runbook, overridden by ``--var-file F`` then ``--var k=v``.

SPEC §6: ``--var k=v`` converts ``v`` to the variable's type (exit 2 if it cannot);
undeclared names are exit 2; a variable without a default must be given.  All problems are
reported at once, before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidInput
from .model import Runbook, VarDecl

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def convert(decl: VarDecl, raw: str) -> Any:
    """``raw`` (command-line text) as the variable's type; ValueError with a clear message."""
    kind = decl.type
    text = raw.strip()
    if kind == "string":
        return raw
    if kind == "integer":
        try:
            return int(text, 10)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if kind == "number":
        try:
            return float(text) if any(c in text for c in ".eE") else int(text, 10)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if kind == "boolean":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(f"expected a {kind} in YAML/JSON flow form, got {raw!r}") from None
    want = list if kind == "list" else dict
    if not isinstance(value, want):
        example = "[a, b]" if kind == "list" else "{a: 1}"
        raise ValueError(f"expected a {kind} such as {example}, got {raw!r}")
    return value


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "list": (list,),
    "mapping": (dict,),
}


def _check_type(decl: VarDecl, value: Any) -> str | None:
    want = _PY_TYPES.get(decl.type)
    if want is None:
        return None
    ok = isinstance(value, want) and not (isinstance(value, bool) and decl.type != "boolean")
    return None if ok else f"expected {decl.type}, got {type(value).__name__}"


def resolve(
    runbook: Runbook,
    assignments: Iterable[str] = (),
    var_files: Iterable[str] = (),
    *,
    require_all: bool = True,
    pinned: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables' values; with ``require_all=False`` (``plan``) a variable with no default
    and no value is left out instead of refused, while bad values given are still exit 2.
    ``pinned``: the values a run in progress started with, over the defaults (the callers
    pass them only when no --var and no --var-file is given); a name no longer declared, or
    a value of another type now, is left out: the run's change check reports it."""
    values: dict[str, Any] = {n: d.default for n, d in runbook.vars.items() if d.has_default}
    for name, value in (pinned or {}).items():
        decl = runbook.vars.get(name)
        if decl is not None and _check_type(decl, value) is None:
            values[name] = value
    problems: list[str] = []
    for path in var_files:
        problems.extend(_apply_file(runbook, path, values))
    for item in assignments:
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:  # bytes the locale could not decode (surrogate escapes)
            shown = item.encode("utf-8", "backslashreplace").decode("ascii", "replace")
            problems.append(f"--var {shown}: not valid UTF-8 text (give the value as UTF-8)")
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"--var {item!r}: expected NAME=VALUE")
            continue
        decl = runbook.vars.get(name)
        if decl is None:
            problems.append(f"--var {name}: no such variable (declared: {_names(runbook)})")
            continue
        try:
            values[name] = convert(decl, raw)
        except ValueError as exc:
            problems.append(f"--var {name}: {exc}")
    missing = [n for n in runbook.vars if n not in values] if require_all else []
    for name in missing:
        problems.append(f"variable {name!r} has no default: give it with --var {name}=VALUE")
    if problems:
        raise InvalidInput("bad variables:\n  " + "\n  ".join(problems))
    return values


def _apply_file(runbook: Runbook, path: str, values: dict[str, Any]) -> list[str]:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        return [f"--var-file {path}: cannot read: {exc.strerror}"]
    except yaml.YAMLError as exc:
        return [f"--var-file {path}: not valid YAML: {exc}"]
    if data is None:
        return []
    if not isinstance(data, Mapping):
        return [f"--var-file {path}: expected a mapping of variable names to values"]
    problems = []
    for name, value in data.items():
        decl = runbook.vars.get(str(name))
        if decl is None:
            problems.append(f"--var-file {path}: {name}: no such variable")
            continue
        problem = _check_type(decl, value)
        if problem:
            problems.append(f"--var-file {path}: {name}: {problem}")
            continue
        values[str(name)] = value
    return problems


def _names(runbook: Runbook) -> str:
    return ", ".join(runbook.vars) or "none"
