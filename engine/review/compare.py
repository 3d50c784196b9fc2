"""The semantic diff of two runbooks in canonical form: typed change records.

Both sides are ``canonical.Side``s, so reformatting, comments, key order and the document
order of risks or contingencies never show.  Steps are matched by id; a step removed from
OLD and a step added to NEW with the same definition (``canonical.definition``: action, with,
when, idempotent, rollback, as ``Step.definition()`` has them, with defaults applied) are one
step *renamed*.  Dependencies are compared per instance
(``copy[pilot]``) on the nearest predecessor steps, through renames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..format.model import instance_id
from .canonical import Side, definition

# change kinds
ADDED, REMOVED, CHANGED = "added", "removed", "changed"
RENAMED, MOVED, RESIZED, REORDERED = "renamed", "moved", "resized", "reordered"

SUBJECTS = (
    "metadata",
    "defaults",
    "var",
    "secret",
    "host",
    "risk",
    "contingency",
    "phase",
    "wave",
    "step",
    "needs",
)


@dataclass(frozen=True)
class Change:
    subject: str  # one of SUBJECTS
    id: str  # the thing's id: a step, "PHASE.WAVE" for a wave, an instance for needs
    kind: str  # added | removed | changed | renamed | moved | resized | reordered
    field: str = ""  # what changed inside it: "with.table", "timeout", "rollback.action"...
    old: Any = None  # None: absent
    new: Any = None
    phase: str = ""  # the phase it belongs to (NEW's when it has one), for grouping

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "id": self.id,
            "kind": self.kind,
            "field": self.field,
            "old": self.old,
            "new": self.new,
            "phase": self.phase,
        }


@dataclass(frozen=True)
class Flag:
    """A change that makes the migration riskier, by rule (see ``diff_rules``)."""

    rule: str
    subject: str
    id: str
    message: str
    phase: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "subject": self.subject,
            "id": self.id,
            "phase": self.phase,
            "message": self.message,
        }


@dataclass
class Diff:
    old: Side
    new: Side
    changes: list[Change]
    renamed: dict[str, str]  # old step id -> new step id
    instance_map: dict[str, str]  # old instance id -> new instance id (common instances)
    shifted: list[tuple[str, int, int]]  # (instance, old generation, new generation)
    flags: list[Flag] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def summary(self) -> dict[str, dict[str, int]]:
        """Per subject: how many things were added, removed and changed (distinct ids)."""
        seen: dict[str, dict[str, set[str]]] = {}
        for c in self.changes:
            kind = c.kind if c.kind in (ADDED, REMOVED) else CHANGED
            seen.setdefault(c.subject, {ADDED: set(), REMOVED: set(), CHANGED: set()})
            seen[c.subject][kind].add(c.id)
        return {s: {k: len(v) for k, v in seen[s].items()} for s in SUBJECTS if s in seen}


def field_changes(
    old: dict[str, Any], new: dict[str, Any], prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, Any, Any]]:
    """(dotted field, old, new) for each differing key; mappings are opened two levels deep
    (``with.table``, ``rollback.with.sql``), values below are shown whole."""
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        name = prefix + key
        if isinstance(a, dict) and isinstance(b, dict) and depth < 2:
            yield from field_changes(a, b, name + ".", depth + 1)
        else:
            yield name, a, b


def _records(
    subject: str, old: dict[str, Any], new: dict[str, Any], out: list[Change], phase: str = ""
) -> None:
    for key, rec in old.items():
        if key not in new:
            out.append(Change(subject, key, REMOVED, old=rec, phase=phase))
        elif rec != new[key]:
            a, b = rec, new[key]
            if isinstance(a, dict) and isinstance(b, dict):
                for name, x, y in field_changes(a, b):
                    out.append(Change(subject, key, CHANGED, name, x, y, phase))
            else:
                out.append(Change(subject, key, CHANGED, "", a, b, phase))
    for key, rec in new.items():
        if key not in old:
            out.append(Change(subject, key, ADDED, new=rec, phase=phase))


def match_renames(old: Side, new: Side) -> dict[str, str]:
    """Removed and added steps with the same definition, paired in document order."""
    added: dict[tuple[Any, ...], list[str]] = {}
    for sid in new.steps:
        if sid not in old.steps:
            added.setdefault(definition(new.steps[sid]), []).append(sid)
    out: dict[str, str] = {}
    if not added:
        return out
    for sid in old.steps:
        if sid not in new.steps:
            candidates = added.get(definition(old.steps[sid]))
            if candidates:
                out[sid] = candidates.pop(0)
    return out


def map_instances(old: Side, new: Side, renamed: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for iid, (sid, wave) in old.instances.items():
        target = instance_id(renamed.get(sid, sid), wave)
        if target in new.instances:
            out[iid] = target
    return out


def _phases(old: Side, new: Side, renamed: dict[str, str], out: list[Change]) -> None:
    for pid in old.phases:
        if pid not in new.phases:
            out.append(Change("phase", pid, REMOVED, old=old.phase_steps[pid], phase=pid))
    for pid, rec in new.phases.items():
        if pid not in old.phases:
            out.append(Change("phase", pid, ADDED, new=new.phase_steps[pid], phase=pid))
            continue
        before = old.phases[pid]
        for key in ("description", "needs", "parallel"):
            if before.get(key) != rec.get(key):
                out.append(Change("phase", pid, CHANGED, key, before.get(key), rec.get(key), pid))
        _waves(pid, before["waves"], rec["waves"], out)
        kept = [renamed.get(s, s) for s in old.phase_steps[pid]]
        kept_set = set(kept)
        now = [s for s in new.phase_steps[pid] if s in kept_set]
        now_set = set(now)
        kept = [s for s in kept if s in now_set]
        if kept != now:
            out.append(Change("phase", pid, REORDERED, "steps", kept, now, pid))
    common_old = [p for p in old.phases if p in new.phases]
    common_new = [p for p in new.phases if p in old.phases]
    if common_old != common_new:
        out.append(Change("phase", "", REORDERED, "phases", common_old, common_new))


def _waves(
    pid: str, old: list[dict[str, Any]], new: list[dict[str, Any]], out: list[Change]
) -> None:
    before = {w["id"]: w for w in old}
    after = {w["id"]: w for w in new}
    for wid, w in before.items():
        if wid not in after:
            out.append(Change("wave", f"{pid}.{wid}", REMOVED, "vars", w["vars"], None, pid))
    for wid, w in after.items():
        key = f"{pid}.{wid}"
        if wid not in before:
            out.append(Change("wave", key, ADDED, "vars", None, w["vars"], pid))
            continue
        if w["vars"] != before[wid]["vars"]:
            out.append(Change("wave", key, RESIZED, "vars", before[wid]["vars"], w["vars"], pid))
        if w.get("description") != before[wid].get("description"):
            b, a = before[wid].get("description"), w.get("description")
            out.append(Change("wave", key, CHANGED, "description", b, a, pid))
    kept = [w for w in before if w in after]
    now = [w for w in after if w in before]
    if kept != now:
        out.append(Change("wave", pid, REORDERED, "waves", kept, now, pid))


def _steps(old: Side, new: Side, renamed: dict[str, str], out: list[Change]) -> None:
    targets = set(renamed.values())
    for sid, rec in old.steps.items():
        if sid not in new.steps and sid not in renamed:
            out.append(Change("step", sid, REMOVED, old=rec, phase=rec["phase"]))
    for sid, rec in new.steps.items():
        phase = rec["phase"]
        if sid in targets:
            continue
        if sid not in old.steps:
            out.append(Change("step", sid, ADDED, new=rec, phase=phase))
            continue
        _step_fields(sid, old.steps[sid], rec, out)
    for before, after in renamed.items():
        rec = new.steps[after]
        out.append(Change("step", after, RENAMED, "id", before, after, rec["phase"]))
        _step_fields(after, old.steps[before], rec, out)


def _step_fields(sid: str, old: dict[str, Any], new: dict[str, Any], out: list[Change]) -> None:
    if old == new:
        return
    phase = new["phase"]
    if old["phase"] != phase:
        out.append(Change("step", sid, MOVED, "phase", old["phase"], phase, phase))
    for name, a, b in field_changes(old, new):
        if name != "phase":
            out.append(Change("step", sid, CHANGED, name, a, b, phase))


def _needs(old: Side, new: Side, imap: dict[str, str], out: list[Change]) -> None:
    for oiid, niid in imap.items():
        before = [imap.get(p, p) for p in old.preds[oiid]]
        after = new.preds[niid]
        if set(before) != set(after):
            phase = new.steps[new.instances[niid][0]]["phase"]
            out.append(Change("needs", niid, CHANGED, "needs", before, after, phase))


def compare(old: Side, new: Side) -> Diff:
    out: list[Change] = []
    for name, a, b in field_changes(old.metadata, new.metadata):
        out.append(Change("metadata", name, CHANGED, name, a, b))
    for name, a, b in field_changes(old.defaults, new.defaults):
        out.append(Change("defaults", name, CHANGED, name, a, b))
    _records("var", old.vars, new.vars, out)
    for name in old.secrets:
        if name not in new.secrets:
            out.append(Change("secret", name, REMOVED))
        elif old.secrets[name] != new.secrets[name]:
            out.append(Change("secret", name, CHANGED, "source"))  # where from: never shown
    out.extend(Change("secret", name, ADDED) for name in new.secrets if name not in old.secrets)
    _records("host", old.hosts, new.hosts, out)
    _records("risk", old.risks, new.risks, out)
    _records("contingency", old.contingencies, new.contingencies, out)
    renamed = match_renames(old, new)
    _phases(old, new, renamed, out)
    _steps(old, new, renamed, out)
    imap = map_instances(old, new, renamed)
    _needs(old, new, imap, out)
    shifted = [
        (niid, old.generation[oiid], new.generation[niid])
        for oiid, niid in imap.items()
        if old.generation[oiid] != new.generation[niid]
    ]
    shifted.sort(key=lambda s: new.position[s[0]])
    return Diff(old, new, out, renamed, imap, shifted)
