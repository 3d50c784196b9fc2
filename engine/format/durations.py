"""Durations of SPEC §6: a number with a unit (ms, s, m, h), compoundable; a bare number is seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds; raises ValueError with a message fit for the user."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        while pos < len(text):
            m = _PART.match(text, pos)
            if not m or m.end() == pos:
                break
            total += float(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
    raise ValueError(
        f"invalid duration {value!r}: use a number with a unit (ms, s, m, h), e.g. 30s, 1h30m, 250ms"
    )


def format_duration(seconds: float) -> str:
    """Short human form: 250ms, 42s, 5m, 1h30m, 2m05s."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds != int(seconds) else f"{int(seconds)}s"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m" if m or not sec else f"{h}h{m:02d}m{sec:02d}s"
    return f"{m}m{sec:02d}s" if sec else f"{m}m"
