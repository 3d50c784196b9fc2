"""The journal of earlier versions, ``journal.jsonl``: read once to import it into the state
database (``db.py``), then kept as ``journal.jsonl.imported``.

One record per line, framed as ``CRC32 JSON\\n`` (CRC32 of the JSON bytes, 8 hex digits), so
that a torn last record (a crash during its write: never fsynced, never acted on) is told apart
from damage. A torn last record is dropped with a notice; damage anywhere else, a missing header
or another runbook's journal is a ``StateError`` (exit 2) and nothing is written.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import StateError

FILE = "journal.jsonl"
FORMAT = "runbook-journal/1"


def frame(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


@dataclass(frozen=True)
class Loaded:
    records: list[dict[str, Any]]
    good_bytes: int  # where the last good record ends
    notice: str | None  # a torn last record was dropped


def read(path: str, expect_name: str | None = None) -> Loaded:
    """All records of the journal at ``path``; raises StateError on damage."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise StateError(f"{path}: cannot read the state journal: {exc.strerror}") from None
    records: list[dict[str, Any]] = []
    pos = 0
    notice = None
    for lineno, line in enumerate(_lines(data), start=1):
        end = pos + len(line)
        rec = _parse(line)
        if rec is None:
            if end >= len(data) and _torn(line):
                notice = (
                    f"{path}: dropped a torn last record (line {lineno}, {len(line)} bytes): "
                    "a crash cut its write short; it was never acted on"
                )
                break
            if lineno == 1:
                raise StateError(f"{path}: not a runbook state journal; it was left untouched")
            raise StateError(
                f"{path}: the state journal is damaged at line {lineno} (byte {pos}); "
                "it was left untouched. Restore it from a backup, or move it away to start "
                "over (the runbook's steps would then run again)"
            )
        records.append(rec)
        pos = end
    if records:
        head = records[0]
        if head.get("t") != "header" or head.get("format") != FORMAT:
            raise StateError(f"{path}: not a runbook state journal (no {FORMAT} header)")
        if expect_name is not None and head.get("runbook") != expect_name:
            raise StateError(
                f"{path}: this state belongs to another runbook ({head.get('runbook')!r}, "
                f"not {expect_name!r}); use another --state-dir or rename the runbook"
            )
    return Loaded(records, pos, notice)


def _lines(data: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(data):
        nl = data.find(b"\n", start)
        if nl < 0:
            yield data[start:]
            return
        yield data[start : nl + 1]
        start = nl + 1


_HEX = frozenset(b"0123456789abcdef")


def _torn(line: bytes) -> bool:
    """A write cut short: no newline yet (or zeros where the data never landed), and what
    is there looks like the start of a frame."""
    if b"\x00" in line:
        return not line.strip(b"\x00") or _torn(line.split(b"\x00", 1)[0])
    if line.endswith(b"\n"):
        return False
    head = line[:8]
    return all(c in _HEX for c in head) and (len(line) <= 8 or line[8:9] == b" ")


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        rec = json.loads(body)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None
