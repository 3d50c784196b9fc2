"""The draw (SPEC §7, §11): which eligible entity goes into which wave. Pure: no database.

- Sizes: the base is the eligible members. A share is rounded down, ``min`` is a floor per
  wave, ``rest`` takes what is left; when no wave says ``rest``, the last wave takes what the
  rounding of shares left over (fewer members than there are waves), and any larger gap is an
  error. The holdout is cut from the last wave's members and becomes a wave of its own after it.
- Order: within each stratum, entities are ranked by a hash of (seed, key): the draw depends
  only on the seed and the set of keys, never on row order.
- Strata: each wave's count is split between the strata in proportion to their sizes, rounded
  by the largest-remainder method (each stratum gets the floor or the ceiling of its share);
  the last wave takes what is left of every stratum, so each stratum's total is exact.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..format.model import HOLDOUT, Cohort, Size


class DrawError(InvalidInput):
    """The waves cannot be drawn from these entities (exit 2, nothing frozen)."""


def rank(seed: int, key: Any) -> int:
    """A 63-bit rank from (seed, key): the same key gets the same rank on every machine (the
    integer 1 and the text '1' share one: their order is then decided by their types)."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class Plan:
    """The waves' sizes and, per wave, per stratum, its count."""

    sizes: list[tuple[str, int]]  # (wave id, count), holdout last
    strata: dict[str, dict[str, int]] = field(default_factory=dict)  # wave -> stratum -> n


def is_empty(size: Size) -> bool:
    """``size: 0``: a wave kept empty by the draw (for entities admitted later)."""
    return size.kind != "rest" and size.value == 0


def sizes(cohort: Cohort, eligible: int) -> list[tuple[str, int]]:
    """Each wave's member count (holdout last); raises DrawError when they cannot be met."""
    remaining = eligible
    out: list[tuple[str, int]] = []
    for w in cohort.waves:
        if w.size.kind == "share":
            n = math.floor(eligible * w.size.value + 1e-9)
        elif w.size.kind == "count":
            n = int(w.size.value)
        else:
            n = remaining
        n = max(n, w.min)
        if n > remaining:
            asked = " + ".join(
                f"{x.id} {x.size.text}" + (f" (min {x.min})" if x.min else "") for x in cohort.waves
            )
            raise DrawError(
                f"cohort {cohort.name!r}: the waves ask for more members than the "
                f"{eligible} eligible ({asked}); wave {w.id!r} would need {n}, {remaining} are left"
            )
        out.append((w.id, n))
        remaining -= n
    if remaining and out:
        if remaining < len(cohort.waves) and all(w.size.kind == "share" for w in cohort.waves):
            wid, n = out[-1]
            out[-1] = (wid, n + remaining)  # what the rounding of shares left over
        else:
            raise DrawError(
                f"cohort {cohort.name!r}: the waves leave {remaining} of the {eligible} eligible "
                "members out; every member must be in a wave (make the last one `size: rest`)"
            )
    if cohort.holdout is not None and out:
        h = cohort.holdout
        n = math.floor(eligible * h.value + 1e-9) if h.kind == "share" else int(h.value)
        # the last wave that is not an empty one appended for late entities
        i = max((j for j, w in enumerate(cohort.waves) if not is_empty(w.size)), default=0)
        wid, last = out[i]
        if n > last:
            raise DrawError(
                f"cohort {cohort.name!r}: the holdout ({h.text} = {n}) is larger than the last "
                f"wave {wid!r} ({last}) it is drawn from"
            )
        out[i] = (wid, last - n)
        out.append((HOLDOUT, n))
    return out


def split(counts: Sequence[int], strata: dict[str, int]) -> list[dict[str, int]]:
    """Per wave, the count of each stratum: its proportional share, rounded down, and the
    members left over go to the strata furthest behind their share of all the waves so far
    (largest remainder, carried from wave to wave: the rounding never drifts to one stratum,
    so each stratum gets the floor or the ceiling of its share in every wave, the last one
    included, which takes what is left). Capped by what a stratum has left."""
    total = sum(strata.values())
    left = dict(strata)
    given = dict.fromkeys(strata, 0)  # members of each stratum placed in the waves so far
    out: list[dict[str, int]] = []
    order = sorted(strata)
    done = 0
    for i, n in enumerate(counts):
        if i == len(counts) - 1:
            out.append({s: left[s] for s in order})
            break
        if total == 0 or n == 0:
            out.append(dict.fromkeys(order, 0))
            continue
        done += n
        quotas = {s: n * strata[s] / total for s in order}
        got = {s: min(left[s], math.floor(quotas[s] + 1e-9)) for s in order}
        short = n - sum(got.values())

        def behind(s: str, done: int = done, got: dict[str, int] = got) -> tuple[float, str]:
            # how far the stratum would be below its share of every wave so far
            return (-(done * strata[s] / total - (given[s] + got[s])), s)

        while short > 0:
            moved = False
            for s in sorted(order, key=behind):
                if short and left[s] > got[s] and got[s] < math.ceil(quotas[s] - 1e-9):
                    got[s] += 1
                    short -= 1
                    moved = True
            if not moved:  # every stratum at its ceiling (or empty): the cap decides
                for s in sorted(order, key=behind):
                    if short and left[s] > got[s]:
                        got[s] += 1
                        short -= 1
                break
        for s in order:
            left[s] -= got[s]
            given[s] += got[s]
        out.append(got)
    return out


def assign(
    cohort: Cohort, eligible: Sequence[tuple[Any, str]]
) -> tuple[Plan, dict[Any, tuple[str, int]]]:
    """``eligible``: (key, stratum). Returns the plan and key -> (wave id, rank)."""
    plan = Plan(sizes(cohort, len(eligible)))
    plan.strata, out = place(cohort.seed, eligible, plan.sizes)
    return plan, out


def place(
    seed: int, pool: Sequence[tuple[Any, str]], counts: Sequence[tuple[str, int]]
) -> tuple[dict[str, dict[str, int]], dict[Any, tuple[str, int]]]:
    """Put ``pool`` ((key, stratum)) into waves of the given counts (which add up to it):
    strata by largest remainder, each stratum's members in rank order."""
    by_stratum: dict[str, list[tuple[int, Any]]] = {}
    blake, from_bytes, prefix = hashlib.blake2b, int.from_bytes, f"{seed}\x1f"
    for key, stratum in pool:  # rank() inlined: a million calls cost a second
        r = from_bytes(blake(f"{prefix}{key}".encode(), digest_size=8).digest(), "big") >> 1
        group = by_stratum.get(stratum)
        if group is None:
            group = by_stratum[stratum] = []
        group.append((r, key))
    for members in by_stratum.values():
        try:
            members.sort()  # by rank; a tie (1 in 2**63) by key: never by row order
        except TypeError:  # such a tie between keys of two types
            members.sort(key=lambda rk: (rk[0], type(rk[1]).__name__, str(rk[1])))
    waves = [w for w, _ in counts]
    per_wave = split([n for _, n in counts], {s: len(m) for s, m in by_stratum.items()})
    out: dict[Any, tuple[str, int]] = {}
    for s, members in by_stratum.items():
        pos = 0
        for wave, got in zip(waves, per_wave, strict=True):
            n = got.get(s, 0)
            for r, key in members[pos : pos + n]:
                out[key] = (wave, r)
            pos += n
    strata = {w: {s: n for s, n in c.items() if n} for w, c in zip(waves, per_wave, strict=True)}
    return strata, out
