"""Each cohort's waves in the plan, before anything runs (SPEC §7, §11): a frozen cohort as the
ledger holds it; one not frozen yet drawn in memory from its source (nothing is written), so
the operator sees the sizes and strata the first ``apply`` would freeze. A source that cannot
be read is shown as "not drawn: REASON", never an error of the plan.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..cohort import freeze as fz
from ..errors import RunbookError
from ..format.model import Cohort, Runbook
from ..format.templates import TemplateError, render
from ..masking import Masker
from ..state import journeys, ledger


@dataclass(frozen=True)
class PlanWave:
    id: str
    size: int
    strata: Mapping[str, int]  # "segment=retail, locale=en" -> members (one "all" unstratified)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "strata": dict(self.strata)}


@dataclass(frozen=True)
class PlanCohort:
    name: str
    frozen_at: str | None  # None: not frozen (drawn here, in memory, or not drawn)
    source_rows: int | None
    eligible: int | None
    excluded: Mapping[str, int]  # reason -> entities
    waves: tuple[PlanWave, ...]
    not_drawn: str | None = None  # why the source could not be drawn now
    changed: bool = False  # frozen with another draw than the runbook's (`cohort redraw`)

    def as_json(self) -> dict[str, Any]:
        return {
            "eligible": self.eligible,
            "excluded": dict(self.excluded),
            "waves": [w.as_json() for w in self.waves],
            "frozen": self.frozen_at is not None,
            "frozen_at": self.frozen_at,
            "source_rows": self.source_rows,
            "not_drawn": self.not_drawn,
            "changed_since_frozen": self.changed,
        }


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _label(text: str, cohort: Cohort) -> str:
    """A stratum as ``segment=retail, locale=en`` (from customer data: control characters
    escaped, never printed raw)."""
    label = fz.stratum_label(text or None, cohort) if text else "all"
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), label)


def from_summary(
    cohort: Cohort, summary: Mapping[str, Any], frozen_at: str | None, changed: bool = False
) -> PlanCohort:
    waves = tuple(
        PlanWave(
            str(w["id"]),
            int(w["size"]),
            {_label(str(k), cohort): int(n) for k, n in (w.get("strata") or {}).items()},
        )
        for w in summary.get("waves", [])
    )
    return PlanCohort(
        cohort.name,
        frozen_at,
        int(summary.get("source_rows", 0)),
        int(summary.get("eligible", 0)),
        {str(r): int(n) for r, n in (summary.get("excluded") or {}).items()},
        waves,
        changed=changed,
    )


def draw_now(
    rb: Runbook,
    cohort: Cohort,
    variables: Mapping[str, Any],
    secrets: Mapping[str, str],
    masker: Masker,
) -> PlanCohort:
    """The draw the first apply would freeze, computed in memory; "not drawn" when it cannot."""
    try:
        dsn = str(render(cohort.dsn, {"vars": variables, "secrets": secrets}))
        drawn = fz.read(cohort, dsn, rb.source)
    except TemplateError as exc:
        why = f"its source's dsn cannot be rendered here ({exc}); pass the variables with --var"
        return PlanCohort(cohort.name, None, None, None, {}, (), not_drawn=masker.mask(why))
    except RunbookError as exc:
        return PlanCohort(cohort.name, None, None, None, {}, (), not_drawn=masker.mask(str(exc)))
    return from_summary(cohort, drawn.summary(), None)


def plan_cohorts(
    rb: Runbook,
    state_dir: str | os.PathLike[str],
    variables: Mapping[str, Any],
    secrets: Mapping[str, str],
    masker: Masker,
) -> tuple[PlanCohort, ...]:
    out: list[PlanCohort] = []
    with journeys.reader(state_dir, rb.name) as db:
        for cohort in rb.cohorts.values():
            got = ledger.frozen(db, cohort.name) if db is not None else None
            if got is not None:
                changed = got.digest != fz.digest(cohort)
                out.append(from_summary(cohort, got.summary, got.frozen_at, changed))
            else:
                out.append(draw_now(rb, cohort, variables, secrets, masker))
    return tuple(out)
