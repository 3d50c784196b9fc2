"""Mutants of the two example runbooks, for the fuzz test and for ``bench/fuzz_campaign.py``.

A mutant is an example runbook with a few ``Mutation``s applied: lines deleted, duplicated,
swapped, re-indented or taken from the other example; stray YAML syntax (flow brackets,
indicators, document markers, tabs); anchors, aliases, merge keys ``<<`` and tags; values, keys
and words replaced by others of the format; and, last, raw bytes inserted, overwritten or cut
(invalid UTF-8, control characters, NUL). Both the hypothesis test (which draws the
mutations) and the campaign (which draws them from a seeded ``random.Random``) build mutants
with ``mutate``, so a mutant found by one can be replayed by the other.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "runbooks" / "examples"
SOURCES = (
    EXAMPLES / "acai-distributor-gradual-migration.yaml",
    EXAMPLES / "subscription-platform-switch.yaml",
)

LINE_OPS = (
    "delete",
    "duplicate",
    "indent",
    "dedent",
    "swap",
    "stray",
    "anchor",
    "alias",
    "merge",
    "tag",
    "value",
    "key",
    "word",
    "splice",
)
BYTE_OPS = ("insert", "overwrite", "truncate")
OPS = LINE_OPS + BYTE_OPS

STRAY = (
    ":",
    ": ",
    "- ",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "? ",
    "|",
    ">",
    "|-\n",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "#",
    " #",
    "'",
    '"',
    "\t",
    "@",
    "`",
    "*",
    "&",
    "!",
    "!!",
    "*ah:",
    "&ah ",
    "<<: *ah",
    "<<:",
    "wit<<: *ah:",
    "{{",
    "}}",
    "{%",
    "{{ }}",
    "{{ steps }}",
    "{{ vars.nope }}",
    "{{ wave.previous.vars.percent }}",
    "{{ failed_step.error }}",
    "{% for x in y %}",
    "\\",
    "\\u",
    '"\\x"',
    "\u00a0",
    "\u2028",
    "\ufeff",
    "\r",
    "\n",
    " ",
)
TAGS = (
    "!!str ",
    "!!int ",
    "!!float ",
    "!!bool ",
    "!!null ",
    "!!timestamp ",
    "!!binary ",
    "!!map ",
    "!!seq ",
    "!!set ",
    "!!omap ",
    "!!python/object:os.system ",
    "!!python/name:os.system ",
    "!local ",
    "! ",
    "!<tag:yaml.org,2002:str> ",
    "!<tag:yaml.org,2002:int> ",
    "!e!x ",
)
VALUES = (
    "",
    "~",
    "null",
    "true",
    "no",
    "0",
    "-1",
    "1e400",
    ".nan",
    "-.inf",
    "0x1F",
    "0o17",
    "2026-01-01",
    "2026-01-01T00:00:00Z",
    "[]",
    "{}",
    "[a, b]",
    "{a: 1}",
    "none",
    "abort",
    "rollback-wave",
    "continue",
    "pilot",
    "0s",
    "1h30m",
    "99999999999999999999999",
    "x" * 70,
    "Bad_Id",
    '"x\\n"',
    '"a\\nb"',
    "'{{ vars }}'",
    '"{{ steps.x.outputs.y }}"',
    '"{{ 1/0 }}"',
    '"{{ vars.batch_size | quote }}"',
    '"{{ secrets.x }}"',
    '"{{ [].__class__ }}"',
    '"{% raw %}"',
    "sql.copy",
    "shell",
    "notify",
    "check",
    "no.such.action",
    "sqlite:///x.db",
    "postgresql://u:p@h/db",
)
LINE_RE = re.compile(
    r"^(?P<indent>\s*(?:- )?)(?P<key>[^:#\s][^:#]*?)(?P<colon>:(?: |$))(?P<rest>.*)$"
)
WORD_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Mutation:
    """One change: ``op`` applied at ``at`` (a content line, or a byte offset, taken modulo
    the size) with ``arg`` choosing a snippet, a column or a width, and ``data`` the bytes of
    the byte operations."""

    op: str
    at: int
    arg: int
    data: bytes = b""


class Sources:
    """The two examples, split once: their lines, content lines, keys and words."""

    def __init__(self, paths: Sequence[Path] = SOURCES) -> None:
        self.texts = [p.read_text(encoding="utf-8") for p in paths]
        self.lines = [t.splitlines(keepends=True) for t in self.texts]
        words: set[str] = set()
        keys: set[str] = set()
        for text in self.texts:
            words.update(WORD_RE.findall(text))
            for line in text.splitlines():
                m = LINE_RE.match(line)
                if m and not line.lstrip().startswith("#"):
                    keys.add(m.group("key").strip())
        self.words = sorted(words)
        self.keys = sorted(keys)


def _content(lines: list[str]) -> list[int]:
    """Indexes of lines that are neither blank nor comments (mutating those does nothing)."""
    found = [
        i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")
    ]
    return found or list(range(len(lines))) or [0]


def _set_value(line: str, value: str) -> str:
    m = LINE_RE.match(line.rstrip("\n"))
    if not m:
        return line
    return f"{m.group('indent')}{m.group('key')}: {value}\n"


def _line_op(lines: list[str], m: Mutation, src: Sources, donor: int) -> list[str]:
    if not lines:
        return lines
    content = _content(lines)
    i = content[m.at % len(content)]
    line = lines[i]
    width = len(line) - len(line.lstrip(" "))
    op = m.op
    if op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i + 1, line)
    elif op in ("indent", "dedent"):
        shift = (1, 2, 4)[m.arg % 3]
        count = 1 + (m.arg // 3) % 4
        for j in range(i, min(len(lines), i + count)):
            if op == "indent":
                lines[j] = " " * shift + lines[j]
            else:
                cut = min(shift, len(lines[j]) - len(lines[j].lstrip(" ")))
                lines[j] = lines[j][cut:]
    elif op == "swap":
        j = min(len(lines) - 1, i + 1 + m.arg % 5)
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "stray":
        token = STRAY[m.arg % len(STRAY)]
        col = (m.arg // len(STRAY)) % (len(line.rstrip("\n")) + 1)
        lines[i] = line[:col] + token + line[col:]
    elif op == "anchor":
        name = f"a{m.arg % 3}"
        lines[i] = re.sub(r"(: |- )", rf"\1&{name} ", line, count=1)
    elif op == "alias":
        name = f"a{m.arg % 3}"
        if m.arg % 2:
            lines[i] = _set_value(line, f"*{name}")
        else:
            lines[i] = re.sub(r"^(\s*(?:- )?)[^:\s]+:", rf"\1*{name} :", line, count=1)
    elif op == "merge":
        name = f"a{m.arg % 3}"
        if m.arg % 2:
            lines.insert(i + 1, " " * width + f"<<: *{name}\n")
        else:
            lines[i] = re.sub(r"^(\s*(?:- )?)([^:\s]+):", rf"\1\2<<: *{name}:", line, count=1)
    elif op == "tag":
        tag = TAGS[m.arg % len(TAGS)]
        lines[i] = re.sub(r"(: |- )", rf"\1{tag}", line, count=1)
    elif op == "value":
        lines[i] = _set_value(line, VALUES[m.arg % len(VALUES)])
    elif op == "key":
        key = src.keys[m.arg % len(src.keys)]
        lines[i] = re.sub(r"^(\s*(?:- )?)[^:\s]+:", rf"\g<1>{key}:", line, count=1)
    elif op == "word":
        words = list(WORD_RE.finditer(line))
        if words:
            w = words[m.arg % len(words)]
            new = src.words[(m.arg // len(words)) % len(src.words)]
            lines[i] = line[: w.start()] + new + line[w.end() :]
    elif op == "splice":
        other = src.lines[donor]
        picked = other[_content(other)[m.arg % len(_content(other))]]
        lines[i] = " " * width + picked.lstrip(" ")
    return lines


def _byte_op(data: bytes, m: Mutation) -> bytes:
    if not data:
        return m.data
    at = m.at % (len(data) + 1)
    if m.op == "insert":
        return data[:at] + m.data + data[at:]
    if m.op == "overwrite":
        return data[:at] + m.data + data[at + len(m.data) :]
    return data[:at]  # truncate


def mutate(src: Sources, which: int, mutations: Sequence[Mutation]) -> bytes:
    """Example ``which`` (0: acai, 1: subscription) with ``mutations`` applied, as bytes."""
    which %= len(src.texts)
    lines = list(src.lines[which])
    donor = (which + 1) % len(src.texts)
    for m in mutations:
        if m.op in LINE_OPS:
            lines = _line_op(lines, m, src, donor)
    data = "".join(lines).encode("utf-8")
    for m in mutations:
        if m.op in BYTE_OPS:
            data = _byte_op(data, m)
    return data


def random_mutations(rng: random.Random) -> list[Mutation]:
    """One to four mutations; byte operations in about one mutant of six."""
    out = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
        op = rng.choice(LINE_OPS) if rng.random() > 0.06 else rng.choice(BYTE_OPS)
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        out.append(Mutation(op, rng.randrange(1 << 20), rng.randrange(1 << 20), data))
    return out
