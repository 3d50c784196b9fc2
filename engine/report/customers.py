"""``runbook customers``: the ledger read for people (SPEC §7, §11): counts by wave x state, a
list of the entities a filter matches, or each asked entity's journey, as text, JSON or CSV.

Customer data is hostile: control characters are shown escaped on a terminal, CSV cells that
a spreadsheet would run as a formula are quoted with a leading ``'``, and every line goes
through the caller's masker. Nothing here writes: the ledger is opened read-only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..format.model import Cohort, Runbook
from ..format.printable import one_line
from ..masking import Masker
from ..state import journeys as jy
from ..state.ledger import STATES

_NUMBER = re.compile(r"[+-][\d\s().-]*")
NO_WAVE = "(no wave)"


def safe(value: Any) -> str:
    """One line of text, control characters shown as escapes (no terminal injection)."""
    return one_line(value)


def pick_cohort(rb: Runbook, name: str | None) -> Cohort:
    names = ", ".join(rb.cohorts)
    if not rb.cohorts:
        raise InvalidInput(f"{rb.file}: declares no cohorts (`cohorts:`): there are no customers")
    if name is None:
        if len(rb.cohorts) > 1:
            raise InvalidInput(
                f"{rb.file} declares {len(rb.cohorts)} cohorts ({names}): pick one with "
                "--cohort NAME"
            )
        return next(iter(rb.cohorts.values()))
    if name not in rb.cohorts:
        raise InvalidInput(f"--cohort {name}: no such cohort in {rb.file} (cohorts: {names})")
    return rb.cohorts[name]


@dataclass
class Query:
    keys: Sequence[str]
    wave: str | None
    states: Sequence[str]
    fmt: str  # text | json | csv


def customers(
    rb: Runbook,
    state_dir: str | os.PathLike[str],
    cohort: Cohort,
    q: Query,
    masker: Masker,
    write: Callable[[str], object],
) -> None:
    """Print what ``q`` asks (masked) through ``write``: a JSON document, text or CSV."""

    def lines(it: Iterable[str]) -> None:
        for line in it:
            write(masker.mask(line) + "\n")

    def chunks(it: Iterable[str]) -> None:
        for chunk in it:
            write(masker.mask(chunk))

    def doc(value: dict[str, Any]) -> None:
        write(json.dumps(masker.mask_value(value), indent=2, ensure_ascii=False, default=str))
        write("\n")

    with jy.reader(state_dir, rb.name) as db:
        got = jy.frozen(db, cohort.name, rb.file)
        assert db is not None
        waves = jy.wave_order(got)
        if q.wave is not None and q.wave not in waves:
            raise InvalidInput(
                f"--wave {q.wave}: cohort {cohort.name!r} has no such wave (waves: "
                f"{', '.join(waves)})"
            )
        if q.keys:
            found, missing = jy.find(db, cohort.name, q.keys)
            if missing:
                shown = ", ".join(repr(k) for k in missing[:10]) + (
                    " …" if len(missing) > 10 else ""
                )
                raise InvalidInput(
                    f"cohort {cohort.name!r} has no entity with key {safe(shown)} "
                    f"({len(missing)} of the {len(q.keys)} key(s) asked; keys are the "
                    f"source's `{cohort.key}`)"
                )
            entities = [
                e
                for e in found
                if (q.wave is None or e.wave == q.wave) and (not q.states or e.state in q.states)
            ]
            if q.fmt == "csv":
                return chunks(csv_lines(cohort, entities))
            jy.history(db, cohort.name, entities)
            if q.fmt == "json":
                return doc({"cohort": cohort.name, "entities": [e.as_json() for e in entities]})
            return lines(journeys_text(cohort, got.frozen_at, entities))
        if q.wave is not None or q.states or q.fmt == "csv":
            if q.fmt == "csv":
                attrs = list(cohort.attributes)
                rows = jy.flat(db, cohort.name, waves, attrs, q.wave, q.states)
                return chunks(csv_rows(attrs, rows))
            selected = jy.select(db, cohort.name, waves, q.wave, q.states)
            if q.fmt == "json":
                entities = list(selected)
                jy.history_where(db, cohort.name, entities, q.wave, q.states)
                return doc({"cohort": cohort.name, "entities": [e.as_json() for e in entities]})
            total = jy.count(db, cohort.name, q.wave, q.states)
            return lines(listing_text(cohort, total, selected, q))
        counts = jy.counts(db, cohort.name)
        if q.fmt == "json":
            return doc(counts_json(cohort, got.frozen_at, waves, counts))
        return lines(counts_text(cohort, got.frozen_at, waves, counts))


# -- counts -----------------------------------------------------------------------------------
def _ordered(
    waves: Sequence[str], counts: Iterable[tuple[str | None, str, int]]
) -> list[tuple[str | None, str, int]]:
    def key(row: tuple[str | None, str, int]) -> tuple[int, int, str]:
        w, s, _ = row
        wi = waves.index(w) if w in waves else len(waves)
        si = STATES.index(s) if s in STATES else len(STATES)
        return wi, si, s

    return sorted(counts, key=key)


def counts_json(
    cohort: Cohort,
    frozen_at: str,
    waves: Sequence[str],
    counts: Iterable[tuple[str | None, str, int]],
) -> dict[str, Any]:
    rows = _ordered(waves, counts)
    return {
        "cohort": cohort.name,
        "counts": [{"wave": w, "state": s, "count": n} for w, s, n in rows],
        "total": sum(n for _, _, n in rows),
        "frozen_at": frozen_at,
        "waves": list(waves),
    }


def counts_text(
    cohort: Cohort,
    frozen_at: str,
    waves: Sequence[str],
    counts: Iterable[tuple[str | None, str, int]],
) -> Iterator[str]:
    rows = _ordered(waves, counts)
    present = {s for _, s, _ in rows}
    states = [s for s in STATES if s in present or s in STATES[:4]]
    states += sorted(present - set(states))
    table: dict[str, dict[str, int]] = {}
    labels = list(waves)
    for w, s, n in rows:
        label = w if w is not None else NO_WAVE
        if label not in labels:
            labels.append(label)
        table.setdefault(label, {})[s] = n
    labels = [w for w in labels if w in table or w in waves]
    total = sum(n for _, _, n in rows)
    yield f"cohort {cohort.name}: {total:,} entities, drawn {frozen_at}"
    head = ["wave", *states, "total"]
    body = [
        (w, [*(table.get(w, {}).get(s, 0) for s in states), sum(table.get(w, {}).values())])
        for w in labels
    ]
    body.append(("total", [*(sum(r[1][i] for r in body) for i in range(len(states))), total]))
    cells = [[safe(w), *(f"{n:,}" for n in ns)] for w, ns in body]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(head)]
    yield "  ".join(
        h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head)
    )
    for r in cells:
        yield "  ".join(
            c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        )


# -- lists and journeys -----------------------------------------------------------------------
def _attrs(attrs: dict[str, Any]) -> str:
    return (
        ", ".join(
            f"{safe(k)}={'(none)' if v is None else safe(_plain(v))}" for k, v in attrs.items()
        )
        or "none"
    )


def _plain(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return "" if v is None else str(v)


def listing_text(
    cohort: Cohort, total: int, entities: Iterable[jy.Entity], q: Query
) -> Iterator[str]:
    """A header, then one line per entity, streamed (the columns are as wide as the first
    thousand rows need: a long list never sits in memory)."""
    what = []
    if q.wave is not None:
        what.append(f"wave {q.wave}")
    if q.states:
        what.append("state " + " or ".join(q.states))
    yield f"cohort {cohort.name}, {' and '.join(what)}: {total:,} entities"
    head = ["key", "wave", "state", "reason", "updated"]
    it = iter(entities)
    first = [_row(e) for _, e in zip(range(1000), it, strict=False)]
    if not first:
        return
    widths = [max(len(h), *(len(r[i]) for r in first)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    yield line(head)
    yield from (line(r) for r in first)
    yield from (line(_row(e)) for e in it)


def _row(e: jy.Entity) -> list[str]:
    return [safe(e.key), safe(e.wave or "-"), e.state, safe(e.reason or ""), e.updated_at]


def _events(e: jy.Entity, frozen_at: str) -> list[tuple[str, int, int, str]]:
    """(time, kind order, position, line) of the draw, each message and each transition."""
    out: list[tuple[str, int, int, str]] = []
    if e.rank is not None:  # in the draw (a late entity has no rank)
        if e.wave is not None:
            out.append((frozen_at, 0, 0, "drawn into wave " + safe(e.wave)))
        else:
            out.append((frozen_at, 0, 0, f"excluded at the draw: {safe(e.reason or '')}"))
    for i, m in enumerate(e.messages):
        mid = safe(m.message_id) if m.message_id else "(no message)"
        out.append(
            (
                m.at,
                1,
                i,
                f"message {safe(m.shown)}: {safe(m.channel)} {mid}, by {safe(m.step)} "
                f"(attempt {m.attempt})",
            )
        )
    for i, t in enumerate(e.transitions):
        by = f"by {safe(t.step)}, " if t.step else ""
        attempt = f"attempt {t.attempt}, " if t.attempt is not None else ""
        why = f": {safe(t.reason)}" if t.reason else ""
        out.append((t.at, 2, i, f"-> {t.state} ({by}{attempt}run {safe(t.run)}){why}"))
    return sorted(out)


def journeys_text(cohort: Cohort, frozen_at: str, entities: Sequence[jy.Entity]) -> Iterator[str]:
    for n, e in enumerate(entities):
        if n:
            yield ""
        why = f" ({safe(e.reason)})" if e.reason else ""
        wave = f"wave {safe(e.wave)}" if e.wave is not None else "in no wave"
        yield (f"{cohort.name} {safe(e.key)}: {wave}, {e.state}{why} since {e.updated_at}")
        yield f"  attributes: {_attrs(e.attributes)}"
        for at, _k, _i, line in _events(e, frozen_at):
            yield f"  {at}  {line}"
    if not entities:
        yield "no entity matches the keys with these filters"


# -- csv --------------------------------------------------------------------------------------
_RISKY = frozenset("=@\t\r+-")


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        if "\x00" in value:  # no reader keeps a NUL character: shown as its escape
            value = value.replace("\x00", "\\x00")
        if value and value[0] in _RISKY and (value[0] not in "+-" or not _NUMBER.fullmatch(value)):
            return "'" + value  # a spreadsheet would run it as a formula
        return value
    return _plain(value) if isinstance(value, (dict, list)) else value


def csv_lines(cohort: Cohort, entities: Iterable[jy.Entity]) -> Iterator[str]:
    """One line per entity: key, wave, state, reason, updated_at, then the attributes."""
    attrs = list(cohort.attributes)
    rows = (
        (e.key, e.wave, e.state, e.reason, e.updated_at, *(e.attributes.get(a) for a in attrs))
        for e in entities
    )
    return csv_rows(attrs, rows)


def csv_rows(attrs: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The CSV text of (key, wave, state, reason, updated_at, *attributes) rows, in chunks."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "wave", "state", "reason", "updated_at", *attrs])
    for row in rows:
        w.writerow([_cell(v) for v in row])
        if buf.tell() > 1 << 16:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue()
