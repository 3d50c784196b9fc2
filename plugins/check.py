"""``check``: a metric gate.

A value comes from ``query`` on ``dsn`` (first column of the first row; read-only, with bound
``params``), from ``url`` (JSON,
``json_path`` inside it) or from ``command`` (its standard output, run by /bin/sh in its own
process group, killed whole on timeout or Ctrl-C).  It is measured ``count`` times, every
``interval``; each measurement is tested with ``condition`` (a Jinja2 expression over ``value``
and ``values``, with the run's context too) and recorded as a ``check.measured`` event
``{index (0-based), value, passed, condition}``.  The step fails as soon as more than
``failure_limit`` measurements failed.  A value that is not a number fails the step at once,
naming its source; so does a source that cannot be read.
"""

from __future__ import annotations

import contextlib
import decimal
import math
import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction, Masker
from runbook_engine.errors import ActionFailed
from runbook_engine.format.durations import format_duration, parse_duration
from runbook_engine.format.templates import TemplateError, evaluate

DEFAULT_INTERVAL = "10s"
SHOWN_VALUES = 20  # values listed in a failure message
STREAM_TAIL = 2000  # characters of a command's stderr shown under a failure
_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")


class CheckAction(BuiltinAction):
    name = "check"
    summary = "measure a metric and gate on a condition"
    idempotent = True
    changes = False
    late_keys = frozenset({"condition"})
    late_names = frozenset({"value", "values"})
    expression_keys = frozenset({"condition"})
    command_keys = frozenset({"command"})
    url_keys = frozenset({"url"})
    sql_keys = frozenset({"query"})

    def describe(self, params: Mapping[str, Any]) -> str:
        count = params.get("count", 1)
        every = f" every {params.get('interval', DEFAULT_INTERVAL)}" if count != 1 else ""
        return f"gate: {params.get('condition')} ({count}×{every})"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        condition = str(params["condition"])
        count = int(params.get("count", 1))
        limit = int(params.get("failure_limit", 0))
        try:
            interval = parse_duration(params.get("interval", DEFAULT_INTERVAL))
        except ValueError as exc:
            raise ActionFailed(f"check: interval: {exc}", retryable=False) from None
        source, measure = _source(params, ctx)
        context = dict(getattr(ctx, "template_context", {}))
        values: list[int | float] = []
        passed = failed = 0

        def outputs() -> dict[str, Any]:
            return {"values": list(values), "passed": passed, "failed": failed}

        for index in range(count):
            if ctx.cancel.is_set():
                raise ActionFailed(f"check interrupted after {index} of {count}", outputs=outputs())
            value = as_number(measure(), source, ctx.masker)
            values.append(value)
            ok = _test(condition, {**context, "value": value, "values": list(values)}, outputs)
            passed, failed = passed + ok, failed + (not ok)
            ctx.emit(
                "check.measured",
                {"index": index, "value": value, "passed": ok, "condition": condition},
            )
            verdict = "passed" if ok else "FAILED"
            ctx.progress(f"check {index + 1}/{count}: value {value} {verdict} `{condition}`")
            if failed > limit:
                raise ActionFailed(
                    f"check failed: {failed} of {index + 1} measurement(s) failed `{condition}` "
                    f"(failure_limit {limit}); values: {_shown(values)}",
                    outputs=outputs(),
                )
            if index + 1 < count and not ctx.sleep(interval):
                if ctx.cancel.is_set():
                    raise ActionFailed(
                        f"check interrupted after {index + 1} of {count} measurement(s)",
                        outputs=outputs(),
                    )
                raise ActionFailed(
                    f"check timed out after {index + 1} of {count} measurement(s): "
                    f"{count} every {format_duration(interval)} does not fit in the step's "
                    f"timeout of {format_duration(ctx.timeout)}",
                    outputs=outputs(),
                )
        return outputs()


def _test(condition: str, context: Mapping[str, Any], outputs: Callable[[], Any]) -> bool:
    try:
        return bool(evaluate(condition, context))
    except TemplateError as exc:
        raise ActionFailed(
            f"check: condition `{condition}`: {exc.message}", outputs=outputs(), retryable=False
        ) from None


def _shown(values: list[int | float]) -> str:
    head = "…, " if len(values) > SHOWN_VALUES else ""
    return "[" + head + ", ".join(str(v) for v in values[-SHOWN_VALUES:]) + "]"


def as_number(raw: Any, source: str, masker: Masker | None = None) -> int | float:
    """The measured value as an int or a finite float; ActionFailed naming the source (the
    value shown is masked by ``masker`` before it is cut)."""
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    value: Any = raw
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, decimal.Decimal):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = int(raw.strip())
        except ValueError:
            try:
                value = float(raw.strip())
            except ValueError:
                value = None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    shown = "NULL" if raw is None else repr(raw if not isinstance(raw, str) else raw.strip())
    if masker is not None:
        shown = masker.head(shown, 200) + ("…" if len(shown) > 200 else "")
    elif len(shown) > 200:
        shown = shown[:200] + "…"
    raise ActionFailed(f"check: the value from {source} is not a number: {shown}")


def _source(params: Mapping[str, Any], ctx: ActionContext) -> tuple[str, Callable[[], Any]]:
    if params.get("query") is not None:
        from runbook_engine.plugins.sql.actions import params_of
        from runbook_engine.plugins.sql.db import fetch, redact_dsn

        dsn, sql = str(params["dsn"]), str(params["query"])
        bound = params_of(params)

        def query() -> Any:
            _, rows = fetch(dsn, sql, 1, bound, ctx.masker)
            if not rows or not rows[0]:
                raise ActionFailed(f"check: the query on {redact_dsn(dsn)} returned no rows")
            return rows[0][0]

        return f"the query on {redact_dsn(dsn)}", query
    if params.get("url") is not None:
        url, path = str(params["url"]), str(params["json_path"])
        headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
        steps = parse_json_path(path)
        return ctx.masker.mask(f"{url} at {path}"), lambda: _from_url(
            url, path, steps, headers, ctx
        )
    command = str(params["command"])
    return f"command `{ctx.masker.mask(command)}`", lambda: _from_command(command, ctx)


def parse_json_path(path: str) -> list[str | int]:
    text = path.strip()
    text = text[1:] if text.startswith("$") else text
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _PATH_PART.match(text, pos)
        if not m:
            raise ActionFailed(
                f"check: invalid json_path {path!r} (use e.g. metrics.error_rate or items[0].value)",
                retryable=False,
            )
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not steps:
        raise ActionFailed(f"check: json_path {path!r} is empty", retryable=False)
    return steps


def _from_url(
    url: str, path: str, steps: list[str | int], headers: Mapping[str, str], ctx: ActionContext
) -> Any:
    from runbook_engine.plugins.http import RequestError, indented, secret_headers, send

    mask = ctx.masker.mask
    try:
        reply = send(
            "GET",
            url,
            timeout=ctx.remaining(),
            headers={"Accept": "application/json", **headers},
            cancel=ctx.cancel,
            secret=secret_headers(headers, mask),
        )
    except RequestError as exc:
        raise ActionFailed(
            mask(f"check: GET {url} failed: {exc.message}"), retryable=not exc.refused
        ) from None
    if not 200 <= reply.status < 300:
        raise ActionFailed(
            mask(f"check: GET {url} returned {reply.status} {reply.reason}"),
            details=indented(reply.text(1000, ctx.masker)),
        )
    node = reply.json()
    if node is None:
        raise ActionFailed(
            mask(f"check: GET {url} did not return JSON"),
            details=indented(reply.text(1000, ctx.masker)),
        )
    for i, step in enumerate(steps):
        in_list = (
            isinstance(step, int) and isinstance(node, list) and -len(node) <= step < len(node)
        )
        if in_list or (isinstance(step, str) and isinstance(node, dict) and step in node):
            node = node[step]
        else:
            done = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps[:i])
            raise ActionFailed(
                mask(f"check: {path!r} not found in the JSON from {url} (no {step!r} at ${done})")
            )
    return node


def _from_command(command: str, ctx: ActionContext) -> Any:
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    shown = f"`{ctx.masker.mask(command)}`"
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=min(0.2, max(ctx.remaining(), 0.01)))
                break
            except subprocess.TimeoutExpired:
                if ctx.cancel.is_set() or ctx.remaining() <= 0:
                    why = "interrupted" if ctx.cancel.is_set() else "timed out"
                    raise ActionFailed(f"check: command {shown} {why}; killed") from None
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    if proc.returncode != 0:
        tail = ctx.masker.tail(err.decode(errors="replace"), STREAM_TAIL)
        raise ActionFailed(
            f"check: command {shown} exited with status {proc.returncode}",
            details="\n".join("    " + line for line in tail.splitlines()),
        )
    return out


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
