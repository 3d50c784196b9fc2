"""Templates as the plan can show them: what is known before a run is rendered, the rest named.

Known at plan time: ``vars`` (the runbook's defaults, then ``--var-file`` and ``--var``) and
``wave`` (``id``, ``index``, ``vars``, ``previous``). Not known: step outputs and statuses,
``run`` and ``failed_step``, and ``secrets``, which are never rendered into a plan. A ``{{ }}``
block that needs one of those is shown as ``⟨steps.backup.outputs.path⟩`` (the one reference
it needs) or ``⟨EXPRESSION⟩`` (several); a variable without a value is ``⟨vars.region⟩``.

Cost (LIMITS.md: compiling 10,000 templates takes seconds): a string is cut into its text and
its ``{{ }}`` blocks; each distinct block is parsed once and compiled and rendered once per
context it reads (a block that reads ``wave`` once per wave), so a 10,000-step runbook that
repeats a few expressions compiles a few templates. A string with ``{% %}`` statements is
rendered whole when everything it reads is known, else shown as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..actions import template_mode
from ..errors import RunbookError
from ..format.contexts import PLAIN
from ..format.model import Instance
from ..format.names import SyntaxProblem, scan
from ..format.templates import Parsed, Reference, is_template, render_string

UNKNOWN_ROOTS = frozenset({"steps", "secrets", "run", "failed_step"})
_BLOCK = re.compile(r"\{\{(.*?)\}\}", re.S)
_WHOLE = re.compile(r"\s*\{\{(.*?)\}\}\s*", re.S)
_MISSING = object()


def mark(what: str) -> str:
    """How the plan shows a value known only at run time."""
    return f"⟨{what}⟩"


@dataclass(frozen=True)
class _Block:
    """What a ``{{ }}`` block reads: None when renderable now, else its placeholder."""

    placeholder: str | None
    reads_wave: bool


class Preview:
    """Renders the templates of calls for the plan; one per plan (it caches by text)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.vars = dict(values)
        self._blocks: dict[str, _Block] = {}
        self._rendered: dict[tuple[str, str | None], Any] = {}
        self._waves: dict[tuple[str, str], dict[str, Any]] = {}
        self._texts: dict[tuple[str, str | None], Any] = {}

    # -- calls ----------------------------------------------------------------------------
    def params(
        self, params: Mapping[str, Any], inst: Instance | None = None, action: object = None
    ) -> Any:
        """``params`` rendered as far as the plan knows them (the same object if no template).
        With the ``action``, a command is quoted and a URL encoded as ``apply`` will (its
        ``template_mode``): what the plan shows is what runs."""
        if action is None:
            return self.value(params, inst)
        out: dict[str, Any] = {}
        changed = False
        for k, v in params.items():
            mode = template_mode(action, k)
            if mode != PLAIN and isinstance(v, str) and is_template(v):
                new = self.moded(v, inst, mode)
            else:
                new = self.value(v, inst)
            changed = changed or new is not v
            out[k] = new
        return out if changed else params

    def moded(self, source: str, inst: Instance | None, mode: str) -> Any:
        """A command or a URL rendered whole in its mode, what only a run knows named; shown
        as written when a statement needs what only a run knows (or it cannot render)."""
        key = (source, f"{_wave_key(inst)}\0{mode}")
        hit = self._texts.get(key, _MISSING)
        if hit is not _MISSING:
            return hit

        def named(m: re.Match[str]) -> str:
            placeholder = self._block(m.group(1)).placeholder
            if placeholder is None:
                return m.group(0)
            return "{% raw %}" + placeholder + "{% endraw %}"

        rewritten = _BLOCK.sub(named, source)
        block = self._block_of_statement(rewritten)
        shown: Any = source
        if block.placeholder is None:
            try:
                shown = render_string(rewritten, self._context(inst, block.reads_wave), mode)
            except RunbookError:
                shown = source
        self._texts[key] = shown
        return shown

    def value(self, value: Any, inst: Instance | None) -> Any:
        """``value`` with its templates rendered; unchanged containers are returned as they are."""
        if isinstance(value, str):
            return self.text(value, inst) if is_template(value) else value
        if isinstance(value, Mapping):
            out = {}
            changed = False
            for k, v in value.items():
                new = self.value(v, inst)
                changed = changed or new is not v
                out[k] = new
            return out if changed else value
        if isinstance(value, list):
            items = [self.value(v, inst) for v in value]
            return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
        return value

    # -- strings --------------------------------------------------------------------------
    def text(self, source: str, inst: Instance | None) -> Any:
        key = (source, _wave_key(inst))
        hit = self._texts.get(key, _MISSING)
        if hit is _MISSING:
            hit = self._texts[key] = self._text(source, inst)
        return hit

    def _text(self, source: str, inst: Instance | None) -> Any:
        if "{%" in source or "{#" in source:
            return self._statement(source, inst)
        whole = _WHOLE.fullmatch(source)
        if whole is not None and "{{" not in whole.group(1):
            return self._render_block(whole.group(1), inst)  # the value itself, typed
        out: list[str] = []
        last = 0
        for m in _BLOCK.finditer(source):
            out.append(source[last : m.start()])
            out.append(str(self._render_block(m.group(1), inst)))
            last = m.end()
        out.append(source[last:])
        return "".join(out)

    def _render_block(self, expr: str, inst: Instance | None) -> Any:
        block = self._block(expr)
        if block.placeholder is not None:
            return block.placeholder
        wave_key = _wave_key(inst) if block.reads_wave else None
        if block.reads_wave and wave_key is None:
            return mark(expr.strip())  # `wave` outside a wave phase: the loader says so
        key = (expr, wave_key)
        if key not in self._rendered:
            try:
                self._rendered[key] = render_string(
                    "{{" + expr + "}}", self._context(inst, block.reads_wave)
                )
            except RunbookError:
                self._rendered[key] = mark(expr.strip())
        return self._rendered[key]

    def _block(self, expr: str) -> _Block:
        block = self._blocks.get(expr)
        if block is None:
            parsed = scan("{{" + expr + "}}")  # the loader's cached reading of the names
            if isinstance(parsed, SyntaxProblem):
                block = _Block(mark(expr.strip()), False)
            else:
                block = _Block(self._placeholder(expr, parsed), "wave" in parsed.names)
            self._blocks[expr] = block
        return block

    def _placeholder(self, expr: str, parsed: Parsed) -> str | None:
        """None when the block can be rendered now, else how the plan shows it."""
        unknown = {
            r
            for r in parsed.refs
            if r.root in UNKNOWN_ROOTS or (r.root == "vars" and r.parts[0] not in self.vars)
        }
        if not unknown and not parsed.names & UNKNOWN_ROOTS:
            return None
        chains = _longest(parsed.refs)
        if len(chains) == 1 and chains[0] in unknown:  # one reference, with filters maybe
            return mark(_dotted(chains[0].root, chains[0].parts))
        return mark(" ".join(expr.split()))

    def _statement(self, source: str, inst: Instance | None) -> Any:
        """A string with ``{% %}``: its unknown ``{{ }}`` blocks named, then rendered whole
        when its statements read only what is known, else shown as written."""

        def named(m: re.Match[str]) -> str:
            placeholder = self._block(m.group(1)).placeholder
            if placeholder is None:
                return m.group(0)
            return "{% raw %}" + placeholder + "{% endraw %}"

        rewritten = _BLOCK.sub(named, source)
        block = self._block_of_statement(rewritten)
        if block.placeholder is not None:
            return source  # a statement reads what only a run knows
        wave_key = _wave_key(inst) if block.reads_wave else None
        key = (rewritten, wave_key)
        if key not in self._rendered:
            try:
                self._rendered[key] = render_string(
                    rewritten, self._context(inst, block.reads_wave)
                )
            except RunbookError:
                self._rendered[key] = source
        return self._rendered[key]

    def _block_of_statement(self, source: str) -> _Block:
        block = self._blocks.get(source)
        if block is None:
            parsed = scan(source)
            if isinstance(parsed, SyntaxProblem):
                block = _Block(source, False)
            else:
                placeholder = self._placeholder(source, parsed)
                block = _Block(source if placeholder else None, "wave" in parsed.names)
            self._blocks[source] = block
        return block

    # -- context --------------------------------------------------------------------------
    def _context(self, inst: Instance | None, reads_wave: bool) -> dict[str, Any]:
        if not reads_wave or inst is None or inst.wave is None:
            return {"vars": self.vars}
        key = (inst.phase.id, inst.wave.id)
        ctx = self._waves.get(key)
        if ctx is None:
            ctx = {"vars": self.vars, **wave_context(inst)}
            self._waves[key] = ctx
        return ctx


def wave_context(inst: Instance) -> dict[str, Any]:
    """``wave`` as templates see it (SPEC §2): id, index, vars, previous (None for the first)."""
    assert inst.wave is not None
    waves = inst.phase.waves
    i = inst.wave.index

    def one(k: int) -> dict[str, Any]:
        w = waves[k]
        return {"id": w.id, "index": w.index, "vars": dict(w.vars)}

    return {"wave": {**one(i), "previous": one(i - 1) if i > 0 else None}}


def _wave_key(inst: Instance | None) -> str | None:
    if inst is None or inst.wave is None:
        return None
    return f"{inst.phase.id}/{inst.wave.id}"


def _longest(refs: tuple[Reference, ...]) -> list[Reference]:
    """The references that are not the beginning of another (``steps.a`` of ``steps.a.x``)."""
    return [
        r
        for r in refs
        if not any(o.root == r.root and o.parts[: len(r.parts)] == r.parts and o != r for o in refs)
    ]


def _dotted(root: str, parts: tuple[str, ...]) -> str:
    return ".".join((root, *parts))
