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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Problem, ValidationFailed

MAX_BYTES = 16 * 1024 * 1024
MAX_ALIAS_NODES = 1_000_000
MAX_DEPTH = 200

Path = tuple[str | int, ...]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_SAFE_SCALAR_TAGS = {
    _STR,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class SourceMap:
    """Where each value and each mapping key stands in the file, by path."""

    file: str
    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)

    def at(self, path: Path) -> Mark:
        """The value at ``path``, or the nearest enclosing node that has a position."""
        p = tuple(path)
        while p:
            m = self.values.get(p)
            if m is not None:
                return m
            p = p[:-1]
        return self.values.get((), Mark(1, 1))

    def key_at(self, path: Path) -> Mark:
        """The key whose value is at ``path`` (for unknown and duplicate keys)."""
        m = self.keys.get(tuple(path))
        return m if m is not None else self.at(path)

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
        self._cache: dict[str, tuple[str, Any]] = {}

    def plain(self, value: str) -> tuple[str, Any]:
        hit = self._cache.get(value)
        if hit is None:
            tag = self._resolver.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
            hit = (tag, self.construct(tag, value))
            if len(self._cache) < 100_000:
                self._cache[value] = hit
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


class _Builder:
    """Turns libyaml events into Python values plus a SourceMap."""

    def __init__(self, smap: SourceMap) -> None:
        self.smap = smap
        self.problems: list[Problem] = []
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, expanded node count)
        self.nodes = 0
        self.alias_nodes = 0
        self.res = _resolver()

    def _mark(self, event: Any) -> Mark:
        m = event.start_mark
        return Mark(m.line + 1, m.column + 1)

    def _error(self, event: Any, path: Path, message: str) -> None:
        mark = self._mark(event)
        self.problems.append(
            Problem(self.smap.file, mark.line, mark.col, format_path(path), message, code="yaml")
        )

    def build(self, events: Iterator[Any], first: Any, path: Path, depth: int) -> tuple[Any, int]:
        """Build the node that starts with ``first``; returns (value, expanded size)."""
        if depth > MAX_DEPTH:
            self._error(first, path, f"nesting deeper than {MAX_DEPTH} levels")
            raise _Abort
        self.smap.values[path] = self._mark(first)
        self.nodes += 1
        kind = type(first)
        if kind is yaml.ScalarEvent:
            value = self._scalar(first, path)
            size = 1
        elif kind is yaml.AliasEvent:
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
        elif kind is yaml.SequenceStartEvent:
            self._check_tag(first, path, "tag:yaml.org,2002:seq")
            value, size = self._sequence(events, path, depth)
        elif kind is yaml.MappingStartEvent:
            self._check_tag(first, path, "tag:yaml.org,2002:map")
            value, size = self._mapping(events, first, path, depth)
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
        except (yaml.YAMLError, ValueError, TypeError):
            self._error(event, path, f"{event.value!r} is not a valid {_short_tag(tag)}")
            return event.value

    def _sequence(self, events: Iterator[Any], path: Path, depth: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        size = 1
        for ev in events:
            if type(ev) is yaml.SequenceEndEvent:
                return out, size
            value, n = self.build(events, ev, (*path, len(out)), depth + 1)
            out.append(value)
            size += n
        raise _Abort  # pragma: no cover - libyaml closes every sequence

    def _mapping(
        self, events: Iterator[Any], start: Any, path: Path, depth: int
    ) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        size = 1
        for ev in events:
            if type(ev) is yaml.MappingEndEvent:
                break
            if type(ev) is not yaml.ScalarEvent:
                self._error(ev, path, "mapping keys must be plain strings")
                _, n = self.build(events, ev, (*path, "<key>"), depth + 1)
                value_ev = next(events)
                self.build(events, value_ev, (*path, "<key>"), depth + 1)
                continue
            key = ev.value
            if ev.tag not in (None, "!", _STR):
                self._error(ev, path, f"unsupported YAML tag {_short_tag(ev.tag)} on a key")
            value_ev = next(events)
            if key == "<<" and ev.implicit[0]:
                value, n = self.build(events, value_ev, (*path, "<<"), depth + 1)
                size += n
                self._merge(ev, path, value, merged)
                continue
            kpath = (*path, key)
            if key in out:
                first = self.smap.keys.get(kpath)
                where = f" (first at line {first.line})" if first else ""
                self._error(ev, kpath, f"duplicate key {key!r}{where}: YAML would keep only one")
                self.build(events, value_ev, (*path, f"{key}<dup>"), depth + 1)
                continue
            self.smap.keys[kpath] = self._mark(ev)
            value, n = self.build(events, value_ev, kpath, depth + 1)
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
        from .errors import InvalidInput

        raise InvalidInput(f"{name}: cannot read: {exc.strerror or exc}") from None
    return decode(data, name)


def parse(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; raise ``ValidationFailed`` with every problem found."""
    if len(text) > MAX_BYTES:
        raise ValidationFailed(
            [Problem(file, 1, 1, "", f"text over {MAX_BYTES // 1048576} MiB: refused")]
        )
    smap = SourceMap(file)
    builder = _Builder(smap)
    value: Any = None
    try:
        events = iter(yaml.parse(text, Loader=_Loader))
        docs = 0
        for ev in events:
            kind = type(ev)
            if kind is yaml.DocumentStartEvent:
                docs += 1
                if docs > 1:
                    builder._error(ev, (), "more than one YAML document: a runbook is one")
                    raise _Abort
                node_ev = next(events)
                value, _ = builder.build(events, node_ev, (), 0)
    except _Abort:
        pass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(x for x in (exc.context, exc.problem) if x)
        builder.problems.append(
            Problem(file, line, col, "", f"YAML syntax: {message}", code="yaml")
        )
    except yaml.YAMLError as exc:
        builder.problems.append(Problem(file, 1, 1, "", f"YAML: {exc}", code="yaml"))
    if builder.problems:
        raise ValidationFailed(builder.problems)
    return value, smap
