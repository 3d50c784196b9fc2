"""What ``runbook outbox`` prints: the messages by channel and state, what an export wrote and
what a relay did (text for a terminal, one JSON object for a program)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..state.outbox import CHANNELS, STATES

Counts = Sequence[tuple[str, str, int]]


def table(counts: Counts) -> Iterator[str]:
    """Channels as rows, states as columns, with totals; nothing but a line when empty."""
    if not counts:
        yield "no messages in the outbox"
        return
    by: dict[str, dict[str, int]] = {}
    for channel, state, n in counts:
        by.setdefault(channel, {})[state] = n
    channels = [c for c in CHANNELS if c in by] + sorted(c for c in by if c not in CHANNELS)
    states = [*STATES, *sorted({s for c in by.values() for s in c} - set(STATES))]
    head = ["channel", *states, "total"]
    rows = [
        [c, *(f"{by[c].get(s, 0):,}" for s in states), f"{sum(by[c].values()):,}"] for c in channels
    ]
    if len(rows) > 1:
        total = [sum(by[c].get(s, 0) for c in channels) for s in states]
        rows.append(["all", *(f"{n:,}" for n in total), f"{sum(total):,}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    yield "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(head, widths, strict=True))
    )
    for r in rows:
        yield "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )


def relay_lines(done: Mapping[str, Any], where: str) -> Iterator[str]:
    parts = [f"{done['sent']:,} sent"]
    for key, word in (
        ("failed", "failed"),
        ("deferred", "refused for now (queued again)"),
        ("uncertain", "uncertain (the connection dropped mid-send)"),
    ):
        if done[key]:
            parts.append(f"{done[key]:,} {word}")
    yield f"relay to {where}: " + ", ".join(parts)
    if done["orphans"]:
        yield (
            f"  {done['orphans']:,} message(s) found `sending` by a relay that is gone: now "
            "uncertain (sent again only with --resend-uncertain)"
        )
    if done["requeued"]:
        yield f"  {done['requeued']:,} uncertain message(s) queued again (--resend-uncertain)"
    for address, why in done["failures"]:
        yield f"  failed: {address}: {why}"
    if done["stopped"]:
        yield f"  stopped: {done['stopped']}"


def left_line(left: Mapping[str, int]) -> str | None:
    """The messages the relay did not deliver, or None when every one is sent."""
    if not any(left.values()):
        return None
    parts = ", ".join(f"{n:,} {s}" for s, n in left.items() if n)
    return f"not delivered: {parts}"


def as_json(
    runbook: str,
    counts: Counts,
    export: Mapping[str, Any] | None,
    relay: Mapping[str, Any] | None,
) -> str:
    doc: dict[str, Any] = {
        "runbook": runbook,
        "counts": [{"channel": c, "state": s, "count": n} for c, s, n in counts],
        "total": sum(n for _, _, n in counts),
    }
    if export is not None:
        doc["export"] = dict(export)
    if relay is not None:
        doc["relay"] = dict(relay)
    return json.dumps(doc, indent=2, default=str)
