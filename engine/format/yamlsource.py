"""Safe YAML reading that keeps the position of every node.

The document is built straight from libyaml's event stream (the composer of PyYAML costs several
times more on a 10,000-step runbook), with the safe resolver's implicit types only.  Besides
the plain Python value it returns a ``SourceMap``: the line and column of every value and every
mapping key, by path, so that any later check can point into the file.

Refused here, each with a located ``Problem``: YAML syntax errors, text that is not UTF-8,
duplicate mapping keys (PyYAML keeps the last one silently), tags outside the safe set
(``!!python/object`` and friends), non-scalar keys, more than one document, files over
``MAX_BYTES`` and alias bombs (aliases that would expand past ``MAX_ALIAS_NODES`` nodes).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import yaml

from ..errors import Problem, ValidationFailed

MAX_BYTES = 16 * 1024 * 1024
MAX_ALIAS_NODES = 1_000_000
MAX_DEPTH = 200

Path = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_SAFE_SCALAR_TAGS = {
    _STR,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}


class Mark(NamedTuple):
    line: int  # 1-based
    col: int  # 1-based


class SourceMap:
    """Where each value and each mapping key stands in the file, by path.

    ``values`` and ``keys`` hold ``(line, col)`` pairs (1-based); ``at`` and ``key_at`` give
    them as ``Mark``.  A map made with ``text`` is lazy: positions are only needed to report a
    problem, so the file is read a second time, with positions, the first time one is asked.
    """

    def __init__(self, file: str, text: str | None = None) -> None:
        self.file = file
        self._text = text
        self.source = text  # the file's text, to point inside a value (``problem_in``)
        self._values: dict[Path, tuple[int, int]] = {}
        self._keys: dict[Path, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:  # steps running in threads may report problems at the same time
            if self._text is not None:
                _, full = _parse_located(self._text, self.file)
                self._values, self._keys = full._values, full._keys
                self._text = None

    @property
    def values(self) -> dict[Path, tuple[int, int]]:
        if self._text is not None:
            self._load()
        return self._values

    @property
    def keys(self) -> dict[Path, tuple[int, int]]:
        if self._text is not None:
            self._load()
        return self._keys

    def at(self, path: Path) -> Mark:
        """The value at ``path``, or the nearest enclosing node that has a position."""
        p = tuple(path)
        while p:
            m = self.values.get(p)
            if m is not None:
                return Mark(*m)
            p = p[:-1]
        return Mark(*self.values.get((), (1, 1)))

    def key_at(self, path: Path) -> Mark:
        """The key whose value is at ``path`` (for unknown and duplicate keys)."""
        m = self.keys.get(tuple(path))
        return Mark(*m) if m is not None else self.at(path)

    def problem(
        self,
        path: Path,
        message: str,
        *,
        key: bool = False,
        severity: str = "error",
        code: str = "invalid",
    ) -> Problem:
        m = self.key_at(path) if key else self.at(path)
        return Problem(self.file, m.line, m.col, format_path(path), message, severity, code)

    def problem_in(
        self, path: Path, value: str, offset: int, message: str, *, code: str = "invalid"
    ) -> Problem:
        """A problem at ``value[offset:]``, a ``{{`` inside the string value at ``path``: the
        n-th ``{{`` of the value is the n-th in the file from where the value starts, in any
        scalar style (quotes and escapes do not change a ``{{``)."""
        m = self.at(path)
        line, col = m.line, m.col
        text = self.source
        nth = value.count("{{", 0, offset)
        if text is not None and value.startswith("{{", offset):
            lines = text.split("\n")
            if 0 < line <= len(lines):
                start = sum(len(ln) + 1 for ln in lines[: line - 1]) + col - 1
                pos = start - 1
                for _ in range(nth + 1):
                    pos = text.find("{{", pos + 1)
                    if pos < 0:
                        break
                if pos >= 0:
                    line = text.count("\n", 0, pos) + 1
                    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return Problem(self.file, line, col, format_path(path), message, "error", code)


def format_path(path: Path) -> str:
    """``("phases", 1, "steps", 0, "with")`` -> ``phases[1].steps[0].with``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif out:
            out.append("." + part)
        else:
            out.append(part)
    return "".join(out)


class _Resolver:
    """The safe loader's implicit scalar types, cached by text (runbooks repeat values)."""

    def __init__(self) -> None:
        self._resolver = yaml.resolver.Resolver()
        self._constructor = yaml.constructor.SafeConstructor()
        self.cache: dict[str, tuple[str, Any]] = {}

    def plain(self, value: str) -> tuple[str, Any]:
        hit = self.cache.get(value)
        if hit is None:
            tag = self._resolver.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
            if tag not in _SAFE_SCALAR_TAGS:
                tag = _STR  # a plain `<<` or `=` outside a key: text (YAML 1.2), not a crash
            hit = (tag, self.construct(tag, value))
            if len(self.cache) < 100_000:
                self.cache[value] = hit
        return hit

    def construct(self, tag: str, value: str) -> Any:
        if tag == _STR or tag == "tag:yaml.org,2002:timestamp":
            return value  # dates stay the text the author wrote
        node = yaml.ScalarNode(tag, value)
        ctor = self._constructor.yaml_constructors[tag]
        return ctor(self._constructor, node)


_RESOLVER: _Resolver | None = None


def _resolver() -> _Resolver:
    global _RESOLVER
    if _RESOLVER is None:
        _RESOLVER = _Resolver()
    return _RESOLVER


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag


_SCALAR = yaml.ScalarEvent
_ALIAS = yaml.AliasEvent
_SEQ_START = yaml.SequenceStartEvent
_SEQ_END = yaml.SequenceEndEvent
_MAP_START = yaml.MappingStartEvent
_MAP_END = yaml.MappingEndEvent


class _Builder:
    """Turns libyaml events into Python values plus a SourceMap.

    This loop is the cost of reading a big runbook (libyaml's events are the floor), hence the
    local names and the inlined plain scalars of ``_sequence`` and ``_mapping``.
    """

    def __init__(self, smap: SourceMap, next_event: Callable[[], Any]) -> None:
        self.smap = smap
        self.next = next_event
        self.values = smap._values
        self.problems: list[Problem] = []
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, expanded node count)
        self.alias_nodes = 0
        self.res = _resolver()

    def _error(self, event: Any, path: Path, message: str) -> None:
        m = event.start_mark
        self.problems.append(
            Problem(
                self.smap.file, m.line + 1, m.column + 1, format_path(path), message, code="yaml"
            )
        )

    def build(self, first: Any, path: Path, depth: int) -> tuple[Any, int]:
        """Build the node that starts with ``first``; returns (value, expanded size)."""
        if depth > MAX_DEPTH:
            self._error(first, path, f"nesting deeper than {MAX_DEPTH} levels")
            raise _Abort
        m = first.start_mark
        self.values[path] = (m.line + 1, m.column + 1)
        kind = type(first)
        if kind is _SCALAR:
            value: Any = self._scalar(first, path)
            size = 1
        elif kind is _ALIAS:
            anchored = self.anchors.get(first.anchor)
            if anchored is None:  # libyaml reports this itself; kept for the pure parser
                self._error(first, path, f"unknown alias *{first.anchor}")
                return None, 1
            value, size = anchored
            self.alias_nodes += size
            if self.alias_nodes > MAX_ALIAS_NODES:
                self._error(
                    first,
                    path,
                    f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes: refused "
                    "(a YAML alias bomb?)",
                )
                raise _Abort
            return value, size
        elif kind is _SEQ_START:
            self._check_tag(first, path, "tag:yaml.org,2002:seq")
            value, size = self._sequence(path, depth)
        elif kind is _MAP_START:
            self._check_tag(first, path, "tag:yaml.org,2002:map")
            value, size = self._mapping(path, depth)
        else:  # pragma: no cover - libyaml guarantees a node here
            self._error(first, path, f"unexpected YAML event {kind.__name__}")
            raise _Abort
        if first.anchor:
            self.anchors[first.anchor] = (value, size)
        return value, size

    def _check_tag(self, event: Any, path: Path, expected: str) -> None:
        tag = event.tag
        if tag and tag not in ("!", expected):
            self._error(event, path, f"unsupported YAML tag {_short_tag(tag)}")

    def _scalar(self, event: Any, path: Path) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            if event.implicit[0]:  # plain scalar: resolve int/float/bool/null
                return self.res.plain(event.value)[1]
            return event.value
        if tag not in _SAFE_SCALAR_TAGS:
            self._error(event, path, f"unsupported YAML tag {_short_tag(tag)}")
            return event.value
        try:
            return self.res.construct(tag, event.value)
        except (yaml.YAMLError, ValueError, TypeError, LookupError, OverflowError):
            # PyYAML: `!!bool maybe` is a KeyError, `!!float ""` an IndexError, `!!int x` a ValueError
            self._error(event, path, f"{event.value!r} is not a valid {_short_tag(tag)}")
            return event.value

    def _leaf(self, ev: Any, path: Path) -> Any:
        """A scalar without anchor or tag, the common case, with its position recorded."""
        m = ev.start_mark
        self.values[path] = (m.line + 1, m.column + 1)
        if ev.implicit[0]:
            hit = self.res.cache.get(ev.value)
            return hit[1] if hit is not None else self.res.plain(ev.value)[1]
        return ev.value

    def _sequence(self, path: Path, depth: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        size = 1
        next_event = self.next
        while True:
            ev = next_event()
            kind = type(ev)
            if kind is _SEQ_END:
                return out, size
            if kind is _SCALAR and ev.tag is None and not ev.anchor:
                out.append(self._leaf(ev, (*path, len(out))))
                size += 1
                continue
            value, n = self.build(ev, (*path, len(out)), depth + 1)
            out.append(value)
            size += n

    def _mapping(self, path: Path, depth: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        size = 1
        next_event = self.next
        keys = self.smap._keys
        while True:
            ev = next_event()
            if type(ev) is _MAP_END:
                break
            if type(ev) is not _SCALAR:
                self._error(ev, path, "mapping keys must be plain strings")
                self.build(ev, (*path, "<key>"), depth + 1)
                self.build(next_event(), (*path, "<key>"), depth + 1)
                continue
            key = ev.value
            if ev.tag is not None and ev.tag not in ("!", _STR):
                self._error(ev, path, f"unsupported YAML tag {_short_tag(ev.tag)} on a key")
            value_ev = next_event()
            if key == "<<" and ev.implicit[0]:
                value, n = self.build(value_ev, (*path, "<<"), depth + 1)
                size += n
                self._merge(ev, path, value, merged)
                continue
            kpath = (*path, key)
            if key in out:
                first = keys.get(kpath)
                where = f" (first at line {first[0]})" if first else ""
                self._error(ev, kpath, f"duplicate key {key!r}{where}: YAML would keep only one")
                self.build(value_ev, (*path, f"{key}<dup>"), depth + 1)
                continue
            m: Any = ev.start_mark
            keys[kpath] = (m.line + 1, m.column + 1)
            if type(value_ev) is _SCALAR and value_ev.tag is None and not value_ev.anchor:
                out[key] = self._leaf(value_ev, kpath)
                size += 1
                continue
            value, n = self.build(value_ev, kpath, depth + 1)
            out[key] = value
            size += n
        if merged:
            for k, v in merged.items():
                out.setdefault(k, v)
        return out, size

    def _merge(self, ev: Any, path: Path, value: Any, merged: dict[str, Any]) -> None:
        sources = value if isinstance(value, list) else [value]
        for src in sources:
            if not isinstance(src, dict):
                self._error(ev, path, "a merge key '<<' takes a mapping or a list of mappings")
                return
            for k, v in src.items():
                merged.setdefault(k, v)


class _Abort(Exception):
    pass


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def decode(data: bytes, file: str) -> str:
    """UTF-8 text or a located error (binary garbage is refused here, not by the parser)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ValidationFailed(
            [Problem(file, line, col, "", f"not UTF-8 text (byte {exc.start}): is this a runbook?")]
        ) from None
    m = _CONTROL.search(text)
    if m:
        before_text = text[: m.start()]
        line = before_text.count("\n") + 1
        col = m.start() - (before_text.rfind("\n") + 1) + 1
        raise ValidationFailed(
            [
                Problem(
                    file,
                    line,
                    col,
                    "",
                    f"control character {m.group()!r} in the text: is this a runbook?",
                )
            ]
        )
    return text


def read_file(path: str, display: str | None = None) -> str:
    """The file's text, refusing files over MAX_BYTES before reading them."""
    import os

    name = display or path
    try:
        size = os.stat(path).st_size
        if size > MAX_BYTES:
            raise ValidationFailed(
                [
                    Problem(
                        name,
                        1,
                        1,
                        "",
                        f"file is {size / 1048576:.1f} MiB; runbooks are limited to "
                        f"{MAX_BYTES // 1048576} MiB",
                    )
                ]
            )
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ValidationFailed(
            [Problem(name, 1, 1, "", f"cannot read: {exc.strerror or exc}")]
        ) from None
    return decode(data, name)


def parse(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; raise ``ValidationFailed`` with every problem found.

    Most files are plain YAML: they are read once without positions (``_plain``), and their
    ``SourceMap`` finds positions only when a problem must be located.  Anything unusual
    (tags, anchors, merge keys, duplicate keys, syntax errors, several documents) is read by
    the located builder, which reports it.
    """
    if len(text) > MAX_BYTES:
        raise ValidationFailed(
            [Problem(file, 1, 1, "", f"text over {MAX_BYTES // 1048576} MiB: refused")]
        )
    try:
        value = _plain(text)
    except (_Unusual, yaml.YAMLError, RecursionError):
        return _parse_located(text, file)
    return value, SourceMap(file, text)


def _parse_located(text: str, file: str) -> tuple[Any, SourceMap]:
    smap = SourceMap(file)
    smap.source = text
    parser = _parser(text)
    builder = _Builder(smap, parser.get_event)
    value: Any = None
    try:
        docs = 0
        for ev in iter(parser.get_event, None):
            if type(ev) is yaml.DocumentStartEvent:
                docs += 1
                if docs > 1:
                    builder._error(ev, (), "more than one YAML document: a runbook is one")
                    raise _Abort
                value, _ = builder.build(parser.get_event(), (), 0)
    except _Abort:
        pass
    except yaml.MarkedYAMLError as exc:
        line, col, message = _syntax_message(exc, text)
        builder.problems.append(Problem(file, line, col, "", message, code="yaml"))
    except yaml.YAMLError as exc:
        builder.problems.append(Problem(file, 1, 1, "", f"YAML: {exc}", code="yaml"))
    finally:
        parser.dispose()
    if builder.problems:
        raise ValidationFailed(builder.problems)
    return value, smap


class _Unusual(Exception):
    """Something ``_plain`` leaves to the located builder."""


def _plain(text: str) -> Any:
    """The document of a plain YAML file, without positions; ``_Unusual`` for anything else.

    Accepts exactly what ``_Builder`` builds without a problem and without tags, anchors,
    aliases or merge keys, and gives the same value (held by tests/engine/test_yamlsource.py).
    """
    parser = _parser(text)
    next_event = parser.get_event
    res = _resolver()
    cache = res.cache

    def node(ev: Any, depth: int) -> Any:
        kind = type(ev)
        if kind is _SCALAR:
            if ev.tag is not None or ev.anchor is not None:
                raise _Unusual
            if ev.implicit[0]:
                hit = cache.get(ev.value)
                return hit[1] if hit is not None else res.plain(ev.value)[1]
            return ev.value
        if kind is _ALIAS or ev.tag is not None or ev.anchor is not None or depth >= MAX_DEPTH:
            raise _Unusual  # an alias event has no tag: test its kind first
        if kind is _MAP_START:
            out: dict[str, Any] = {}
            while True:
                key = next_event()
                if type(key) is _MAP_END:
                    return out
                if type(key) is not _SCALAR or key.tag is not None or key.anchor is not None:
                    raise _Unusual
                name = key.value
                if name in out or name == "<<":
                    raise _Unusual
                out[name] = node(next_event(), depth + 1)
        if kind is _SEQ_START:
            items: list[Any] = []
            while True:
                item = next_event()
                if type(item) is _SEQ_END:
                    return items
                items.append(node(item, depth + 1))
        raise _Unusual  # pragma: no cover - libyaml gives a node here

    try:
        value: Any = None
        docs = 0
        for ev in iter(next_event, None):
            if type(ev) is yaml.DocumentStartEvent:
                docs += 1
                if docs > 1:
                    raise _Unusual
                value = node(next_event(), 0)
        return value
    finally:
        parser.dispose()


def _syntax_message(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, int, str]:
    """libyaml's complaint, located at the problem, saying where the construct began."""
    mark: Any = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    context = exc.context or ""
    start: Any = exc.context_mark
    if context and start is not None and (start.line, start.column) != (line - 1, col - 1):
        context += f" (from line {start.line + 1}, column {start.column + 1})"
    message = " ".join(x for x in (context, exc.problem) if x)
    if mark is not None and 0 <= mark.index < len(text) and text[mark.index] == "\t":
        message += ": a tab? YAML indents with spaces"
    return line, col, f"YAML syntax: {message}"


def _parser(text: str) -> Any:
    """libyaml's event parser when PyYAML was built with it, else PyYAML's own."""
    try:
        from yaml._yaml import CParser
    except ImportError:  # pragma: no cover - PyYAML wheels ship libyaml
        return yaml.SafeLoader(text)
    return CParser(text)
