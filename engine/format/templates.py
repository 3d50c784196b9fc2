"""Jinja2 templates: a sandbox with strict undefined, checked at validation, compiled on first use.

Validation only *parses* templates (syntax, names used); compiling thousands of templates costs
seconds and is done lazily at run time, once per distinct text.  A string that is exactly one
``{{ expression }}`` renders to the expression's native value, so that ``batch_size:
"{{ vars.batch_size }}"`` stays an integer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import RunbookError
from . import contexts, sandbox
from .contexts import PLAIN, SHELL, URL

CONTEXT_NAMES = ("vars", "secrets", "steps", "wave", "run", "failed_step")
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.S)


class TemplateError(RunbookError):
    """A template failed to render (undefined name, type error...)."""


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def _quote(value: Any) -> str:
    return contexts.shell_words(value if not isinstance(value, contexts.Raw) else str(value))


def _unchanged(value: Any) -> Any:
    return value


@lru_cache(maxsize=4)
def environment(mode: str = PLAIN) -> Any:
    """The sandbox (``sandbox.py``: limits, statements, secrets) for templates whose output
    lands in ``mode``: plain text and values, a shell command (every ``{{ }}`` quoted) or a URL
    (path and query values encoded)."""
    finalize = {SHELL: contexts.shell_finalize, URL: contexts.url_finalize}.get(mode)
    env = sandbox.make_sandbox(finalize)
    env.filters["quote"] = _quote
    env.filters["raw"] = _unchanged
    env.filters["b64encode"] = contexts.b64encode
    if mode == SHELL:
        env.filters["quote"] = contexts.shell_quote_filter
        env.filters["raw"] = contexts.shell_raw_filter
    elif mode == URL:
        urlencode = env.filters["urlencode"]
        env.filters["raw"] = contexts.url_raw_filter
        env.filters["urlencode"] = lambda value: contexts.Raw(urlencode(value))
    sandbox.guard_filters(env)
    return env


@dataclass(frozen=True)
class Reference:
    """A name used by a template: ``vars.region`` is ("vars", ("region",))."""

    root: str
    parts: tuple[str, ...]

    def dotted(self) -> str:
        return ".".join((self.root, *self.parts))


@dataclass(frozen=True)
class Parsed:
    names: frozenset[str]  # top-level names not defined inside the template
    refs: tuple[Reference, ...]


def parse(source: str) -> Parsed:
    """Syntax-check a template and list what it refers to; raises jinja2's TemplateSyntaxError."""
    from jinja2 import meta, nodes

    env = environment()
    ast = env.parse(source)
    names = frozenset(meta.find_undeclared_variables(ast))
    refs: dict[tuple[str, tuple[str, ...]], Reference] = {}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        parts: list[str] = []
        cur: Any = node
        while isinstance(cur, (nodes.Getattr, nodes.Getitem)):
            if isinstance(cur, nodes.Getattr):
                parts.append(cur.attr)
            elif isinstance(cur.arg, nodes.Const) and isinstance(cur.arg.value, str):
                parts.append(cur.arg.value)
            else:
                parts = []  # a computed index: nothing to check past it
            cur = cur.node
        if isinstance(cur, nodes.Name) and cur.name in names and parts:
            ref = Reference(cur.name, tuple(reversed(parts)))
            refs[(ref.root, ref.parts)] = ref
    return Parsed(names, tuple(refs.values()))


def iter_strings(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every template string inside a nested value, with its relative path."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from iter_strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_strings(v, (*path, i))


@lru_cache(maxsize=4096)
def _compiled(source: str, mode: str = PLAIN) -> Any:
    return environment(mode).from_string(source)


@lru_cache(maxsize=4096)
def _compiled_expression(expr: str) -> Any:
    return environment().compile_expression(expr, undefined_to_none=False)


def render_string(source: str, context: Mapping[str, Any], mode: str = PLAIN) -> Any:
    """Render one template string.  In ``PLAIN`` mode a string that is exactly one
    ``{{ expression }}`` gives the expression's value; a command or a URL is always text.
    Whatever goes wrong (a Jinja2 error, a Python exception of a method, a limit of the
    sandbox, a secret misused, a value in the wrong place) is a ``TemplateError``."""
    try:
        with sandbox.limited():
            if mode == PLAIN:
                m = _SINGLE.match(source)
                if m and "{{" not in m.group("expr") and "}}" not in m.group("expr"):
                    value = _compiled_expression(m.group("expr").strip())(**context)
                    _force(value)
                    return sandbox.unwrap(value)
                return _text(_compiled(source), context)
            out = _text(_compiled(source, mode), context)
            return contexts.resolve_url(out) if mode == URL else contexts.resolve_shell(out)
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a template is the template's
        raise TemplateError(_message(exc)) from None


def _text(template: Any, context: Mapping[str, Any]) -> str:
    """The template's output, stopped once it is longer than the sandbox allows."""
    parts: list[str] = []
    size = 0
    for part in template.generate(**context):
        size += len(part)
        if size > sandbox.MAX_OUTPUT:
            raise sandbox.LimitError(
                f"the template wrote more than {sandbox.MAX_OUTPUT:,} characters"
            )
        parts.append(part)
    return "".join(parts)


class Repeated:
    """One plain-text template rendered many times with the same context plus one name (a
    message per recipient): the context and the template's globals are merged once, not at
    every render (what Jinja2's ``Template.new_context(shared=True)`` takes), which halves the
    cost of a short template.  Any error is rendered again by ``render_string``, which says
    what it is."""

    def __init__(self, source: str, context: Mapping[str, Any]) -> None:
        self.source = source
        self.template: Any = None
        self.fixed: str | None = None
        self.parent = {**environment().globals, **context}
        if not is_template(source):
            self.fixed = str(render_string(source, context))  # newlines as Jinja2 gives them
        elif not _SINGLE.match(source):
            try:
                self.template = _compiled(source)
            except Exception:  # noqa: BLE001 - render_string says what is wrong, at each render
                return
            self.parent = {**self.template.globals, **context}

    def values(self, name: str, value: Any) -> dict[str, Any]:
        """The names a render sees: the globals, the context and ``name``. Templates prepared
        with the same context may share them (a message's subject and body)."""
        return {**self.parent, name: value}

    def render(self, name: str, value: Any) -> str:
        return self.render_values(self.values(name, value))

    def render_values(self, values: dict[str, Any]) -> str:
        if self.fixed is not None:
            return self.fixed
        if self.template is None:
            return str(render_string(self.source, values))
        t = self.template
        try:
            env = t.environment  # the context as new_context(shared=True) makes it, without
            ctx = env.context_class(env, values, t.name, t.blocks)  # listing the globals again
            with sandbox.limited():  # the same limits as render_string
                out = str(env.concat(t.root_render_func(ctx)))
            if len(out) > sandbox.MAX_OUTPUT:
                raise sandbox.LimitError("output too long")
            return out
        except Exception:  # noqa: BLE001 - said again, with its message, by render_string
            return str(render_string(self.source, values))


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """A bare Jinja2 expression (``when`` without braces, ``check`` conditions)."""
    source = expression.strip()
    m = _SINGLE.match(source)
    if m:
        source = m.group("expr").strip()
    try:
        with sandbox.limited():
            value = _compiled_expression(source)(**context)
            _force(value)
            return sandbox.unwrap(value)
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - see render_string
        raise TemplateError(_message(exc)) from None


def _force(value: Any) -> None:
    """Touch a StrictUndefined so that it raises instead of travelling on."""
    from jinja2 import Undefined

    if isinstance(value, Undefined):
        str(value)


def render(value: Any, context: Mapping[str, Any], mode: str = PLAIN) -> Any:
    """Render every template string inside ``value`` (mappings and lists are walked)."""
    if isinstance(value, str):
        return render_string(value, context, mode) if is_template(value) else value
    if isinstance(value, Mapping):
        return {k: render(v, context, mode) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, mode) for v in value]
    return value


def _message(exc: BaseException) -> str:
    from jinja2 import TemplateError as JinjaError

    if isinstance(exc, JinjaError):
        text = getattr(exc, "message", None) or str(exc)
        return str(text)
    if isinstance(exc, (sandbox.LimitError, sandbox.SecretMisuse, contexts.TemplatePlaceError)):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "MemoryError: the template needs more memory than there is"
    return f"{type(exc).__name__}: {exc}"
