"""The checked document -> frozen records, with defaults applied.

Building is tolerant: an element too broken to use (a step without an id) is left out, since
the schema check has already reported it; everything else is built so that the later checks
(ids, references, templates, the DAG) can report their problems in the same pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .durations import parse_duration
from .model import (
    DEFAULT_TIMEOUT,
    HOLDOUT,
    Call,
    Cohort,
    CohortWave,
    Contingency,
    Defaults,
    Exclusion,
    Foreach,
    Host,
    OnFailure,
    Phase,
    Retry,
    Risk,
    Runbook,
    SecretRef,
    Size,
    Step,
    VarDecl,
    Wave,
)
from .yamlsource import Path, SourceMap

_VAR_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "mapping",
}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in _list(value) if isinstance(v, str))


def _duration(value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError:
        return default  # reported by the schema check


def _retry(value: Any, default: Retry) -> Retry:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return Retry(value, default.delay, default.backoff)
    if not isinstance(value, dict):
        return default
    attempts = value.get("attempts", default.attempts)
    backoff = value.get("backoff", default.backoff)
    return Retry(
        attempts if isinstance(attempts, int) and attempts >= 1 else default.attempts,
        _duration(value.get("delay"), default.delay),
        float(backoff) if isinstance(backoff, (int, float)) and backoff >= 1 else default.backoff,
    )


def _on_failure(value: Any, default: OnFailure) -> OnFailure:
    try:
        return OnFailure(value) if value is not None else default
    except ValueError:
        return default


def parse_size(value: Any) -> Size | None:
    """``20%`` (a share), ``500`` (a count) or ``rest``; None when it is none of them."""
    if value == "rest":
        return Size("rest", 0.0, "rest")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Size("count", float(value), str(value))
    if isinstance(value, str) and value.endswith("%"):
        try:
            share = float(value[:-1])
        except ValueError:
            return None
        if 0 <= share <= 100:
            return Size("share", share / 100, value)
    return None


DEFAULT_CONCURRENCY = 8


def _foreach(raw: Any) -> Foreach | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("cohort"), str):
        return None
    n = raw.get("concurrency", DEFAULT_CONCURRENCY)
    limit = parse_size(raw.get("max_failed", 0))
    return Foreach(
        cohort=raw["cohort"],
        concurrency=n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1,
        max_failed=limit if limit is not None and limit.kind != "rest" else Size("count", 0, "0"),
    )


class Builder:
    def __init__(self, data: Mapping[str, Any], smap: SourceMap, file: str) -> None:
        self.data = data
        self.smap = smap
        self.file = file
        raw_defaults = _dict(data.get("defaults"))
        self.defaults = Defaults(
            timeout=_duration(raw_defaults.get("timeout"), DEFAULT_TIMEOUT),
            retries=_retry(raw_defaults.get("retries"), Retry()),
            on_failure=_on_failure(raw_defaults.get("on_failure"), OnFailure.ABORT),
        )

    def call(self, raw: Mapping[str, Any], path: Path) -> Call:
        idem = raw.get("idempotent")
        return Call(
            action=_str(raw.get("action")),
            params=_dict(raw.get("with")),
            timeout=_duration(raw.get("timeout"), self.defaults.timeout),
            retries=_retry(raw.get("retries"), self.defaults.retries),
            idempotent=idem if isinstance(idem, bool) else None,
            description=_str(raw.get("description")),
            path=path,
        )

    def step(self, raw: Mapping[str, Any], phase: str, path: Path) -> Step | None:
        sid = raw.get("id")
        if not isinstance(sid, str):
            return None
        rb = raw.get("rollback")
        when = raw.get("when")
        return Step(
            id=sid,
            phase=phase,
            call=self.call(raw, path),
            needs=_strs(raw.get("needs")),
            when=when if isinstance(when, (str, bool)) else None,
            on_failure=_on_failure(raw.get("on_failure"), self.defaults.on_failure),
            risks=_strs(raw.get("risks")),
            rollback=self.call(rb, (*path, "rollback")) if isinstance(rb, dict) else None,
            rollback_declared="rollback" in raw,
            path=path,
            marks=raw["marks"] if isinstance(raw.get("marks"), str) else None,
            foreach=_foreach(raw.get("foreach")),
        )

    def phase(
        self, raw: Mapping[str, Any], path: Path, cohorts: Mapping[str, Cohort]
    ) -> Phase | None:
        pid = raw.get("id")
        if not isinstance(pid, str):
            return None
        spec = raw.get("waves")
        cohort_name = spec.get("cohort") if isinstance(spec, dict) else None
        if isinstance(cohort_name, str):
            return self._phase(
                raw, path, pid, self._cohort_waves(cohorts.get(cohort_name)), cohort_name
            )
        waves = tuple(
            Wave(
                id=w["id"],
                index=i,
                vars=_dict(w.get("vars")),
                description=_str(w.get("description")),
                path=(*path, "waves", i),
            )
            for i, w in enumerate(_list(raw.get("waves")))
            if isinstance(w, dict) and isinstance(w.get("id"), str)
        )
        return self._phase(raw, path, pid, waves, None)

    def _cohort_waves(self, cohort: Cohort | None) -> tuple[Wave, ...]:
        if cohort is None:
            return ()  # an unknown cohort: reported by the checks
        by_id = {w.id: w for w in cohort.waves}
        waves: list[Wave] = []
        for i, wid in enumerate(cohort.wave_ids):
            w = by_id.get(wid) if wid != HOLDOUT or cohort.holdout is None else None
            if w is not None:
                waves.append(Wave(w.id, i, w.vars, w.description, w.path))
            else:
                waves.append(
                    Wave(HOLDOUT, i, {}, "the holdout: moved last", (*cohort.path, "holdout"))
                )
        return tuple(waves)

    def _phase(
        self,
        raw: Mapping[str, Any],
        path: Path,
        pid: str,
        waves: tuple[Wave, ...],
        cohort: str | None,
    ) -> Phase:
        steps = tuple(
            s
            for i, r in enumerate(_list(raw.get("steps")))
            if isinstance(r, dict) and (s := self.step(r, pid, (*path, "steps", i))) is not None
        )
        needs = raw.get("needs")
        return Phase(
            id=pid,
            description=_str(raw.get("description")),
            needs=_strs(needs) if isinstance(needs, list) else None,
            parallel=raw.get("parallel") is True,
            waves=waves,
            steps=steps,
            path=path,
            cohort=cohort,
        )

    def cohort(self, name: str, raw: Mapping[str, Any]) -> Cohort:
        path: Path = ("cohorts", name)
        source = _dict(raw.get("source"))
        seed = raw.get("seed", 0)
        waves = tuple(
            CohortWave(
                id=w["id"],
                size=parse_size(w.get("size")) or Size("rest", 0.0, "rest"),
                min=w["min"] if isinstance(w.get("min"), int) and w["min"] >= 0 else 0,
                vars=_dict(w.get("vars")),
                description=_str(w.get("description")),
                path=(*path, "waves", i),
            )
            for i, w in enumerate(_list(raw.get("waves")))
            if isinstance(w, dict) and isinstance(w.get("id"), str)
        )
        holdout = _dict(raw.get("holdout"))
        return Cohort(
            name=name,
            dsn=_str(source.get("dsn")),
            query=_str(source.get("query")),
            key=_str(raw.get("key")),
            attributes=_strs(raw.get("attributes")),
            exclude=tuple(
                Exclusion(_str(e.get("reason")), _str(e.get("where")), (*path, "exclude", i))
                for i, e in enumerate(_list(raw.get("exclude")))
                if isinstance(e, dict)
            ),
            stratify_by=_strs(raw.get("stratify_by")),
            waves=waves,
            holdout=parse_size(holdout.get("size")) if holdout else None,
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
            path=path,
        )

    def var(self, name: str, raw: Any) -> VarDecl:
        path: Path = ("vars", name)
        if isinstance(raw, dict) and "type" in raw:
            return VarDecl(
                name=name,
                type=_str(raw.get("type"), "string"),
                default=raw.get("default"),
                has_default="default" in raw,
                description=_str(raw.get("description")),
                path=path,
            )
        return VarDecl(name, _VAR_TYPES.get(type(raw), "string"), raw, True, "", path)

    def build(self) -> Runbook:
        d = self.data
        meta = _dict(d.get("metadata"))
        hosts = {
            alias: Host(
                alias=alias,
                address=_str(h.get("address")),
                port=h["port"] if isinstance(h.get("port"), int) else 22,
                user=h.get("user") if isinstance(h.get("user"), str) else None,
                key_file=h.get("key_file") if isinstance(h.get("key_file"), str) else None,
                groups=_strs(h.get("groups")),
            )
            for alias, h in _dict(d.get("hosts")).items()
            if isinstance(h, dict)
        }
        secrets = {
            name: SecretRef(
                name,
                s.get("env") if isinstance(s.get("env"), str) else None,
                s.get("file") if isinstance(s.get("file"), str) else None,
                ("secrets", name),
            )
            for name, s in _dict(d.get("secrets")).items()
            if isinstance(s, dict)
        }
        risks = tuple(
            Risk(
                id=r["id"],
                description=_str(r.get("description")),
                likelihood=_str(r.get("likelihood"), "low"),
                impact=_str(r.get("impact"), "low"),
                mitigation=_str(r.get("mitigation")),
                owner=_str(r.get("owner")),
                contingencies=_strs(r.get("contingencies")),
                path=("risks", i),
            )
            for i, r in enumerate(_list(d.get("risks")))
            if isinstance(r, dict) and isinstance(r.get("id"), str)
        )
        contingencies = tuple(
            Contingency(c["id"], self.call(c, ("contingencies", i)), ("contingencies", i))
            for i, c in enumerate(_list(d.get("contingencies")))
            if isinstance(c, dict) and isinstance(c.get("id"), str)
        )
        cohorts = {
            name: self.cohort(name, c)
            for name, c in _dict(d.get("cohorts")).items()
            if isinstance(c, dict)
        }
        phases = tuple(
            p
            for i, r in enumerate(_list(d.get("phases")))
            if isinstance(r, dict) and (p := self.phase(r, ("phases", i), cohorts)) is not None
        )
        labels = {k: v for k, v in _dict(meta.get("labels")).items() if isinstance(v, str)}
        return Runbook(
            file=self.file,
            name=_str(meta.get("name")),
            description=_str(meta.get("description")),
            owner=_str(meta.get("owner")),
            labels=labels,
            vars={k: self.var(k, v) for k, v in _dict(d.get("vars")).items()},
            secrets=secrets,
            hosts=hosts,
            defaults=self.defaults,
            risks=risks,
            contingencies=contingencies,
            phases=phases,
            source=self.smap,
            data=d,
            cohorts=cohorts,
        )
