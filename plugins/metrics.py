"""Where a ``check`` gate reads its value: ``query`` on ``dsn`` (first column of the first row;
read-only, with bound ``params``), ``url`` (JSON, ``json_path`` inside it) or ``command`` (its
standard output, run by /bin/sh in its own process group, killed whole on timeout or Ctrl-C).

A reading is a number, or no number and the reason why: NULL, NaN, no rows, empty output, a
JSON path that is missing, a value that is not a number, or a source that failed after the
step's retries.  Such a reading makes the measurement inconclusive (SPEC §7, §11): never a pass
or a fail.  A source error is retried here, per reading, with the step's ``retries`` (attempts,
delay, backoff), so that one bad minute does not restart a gate of hours.
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
from dataclasses import dataclass
from typing import Any

from runbook_engine.actions import ActionContext, Masker
from runbook_engine.errors import ActionFailed
from runbook_engine.format.durations import format_duration
from runbook_engine.format.model import Retry
from runbook_engine.processes import child_env

STREAM_TAIL = 2000  # characters of a command's stderr shown under a failure
SHOWN_RAW = 200  # characters of a value that is not a number, in a reason
_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")


@dataclass(frozen=True)
class Reading:
    """A number, or None and why not."""

    value: int | float | None
    reason: str = ""


def no_value(reason: str) -> Reading:
    return Reading(None, reason)


def as_number(raw: Any, source: str, masker: Masker | None = None) -> Reading:
    """The raw value as an int or a finite float; otherwise no value, with the reason (the
    value shown is masked by ``masker`` before it is cut)."""
    if isinstance(raw, Reading):
        return raw
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    if isinstance(raw, bool):
        return Reading(int(raw))
    value: Any = raw
    if isinstance(raw, decimal.Decimal):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if not text:
            return no_value(f"{source} gave an empty value")
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                value = None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return Reading(value)
    if raw is None:
        return no_value(f"{source} gave NULL")
    if isinstance(value, float):
        return no_value(f"{source} gave {value}")  # nan, inf
    shown = repr(raw.strip() if isinstance(raw, str) else raw)
    if masker is not None:
        cut = masker.head(shown, SHOWN_RAW) + ("…" if len(shown) > SHOWN_RAW else "")
    else:
        cut = shown[:SHOWN_RAW] + ("…" if len(shown) > SHOWN_RAW else "")
    return no_value(f"{source} gave a value that is not a number: {cut}")


def retrying(fn: Callable[[], Any], ctx: ActionContext, retry: Retry) -> Any:
    """``fn()``, retried on source errors as the step's ``retries`` say; a source that still
    fails gives a ``Reading`` with no value (the error is the reason). Cancellation
    propagates."""
    delay = retry.delay
    attempts = max(1, retry.attempts)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except ActionFailed as exc:
            if ctx.cancel.is_set():
                raise
            message = exc.message + _last_line(exc.details)
            message += f" (after {attempt} attempts)" if attempt > 1 else ""
            if not exc.retryable or attempt == attempts:
                return no_value(message)
            ctx.progress(f"{exc.message}; reading again in {format_duration(delay)}")
            if not ctx.sleep(delay):
                if ctx.cancel.is_set():
                    raise
                return no_value(f"{exc.message} (no time left for another attempt)")
            delay *= retry.backoff
    raise AssertionError("unreachable")


def read(measure: Callable[[], Any], source: str, ctx: ActionContext, retry: Retry) -> Reading:
    """One reading of a plain gate's source: a number, or none and why."""
    return as_number(retrying(measure, ctx, retry), source, ctx.masker)


def _last_line(details: str) -> str:
    lines = [ln.strip() for ln in details.splitlines() if ln.strip()]
    return f": {lines[-1][:SHOWN_RAW]}" if lines else ""


def source_of(params: Mapping[str, Any], ctx: ActionContext) -> tuple[str, Callable[[], Any]]:
    """(how messages name the source, a function that reads it once)."""
    if params.get("query") is not None:
        from runbook_engine.plugins.sql.actions import params_of
        from runbook_engine.plugins.sql.db import fetch, redact_dsn

        dsn, sql = str(params["dsn"]), str(params["query"])
        bound = params_of(params)
        label = f"the query on {redact_dsn(dsn)}"

        def query() -> Any:
            _, rows = fetch(dsn, sql, 1, bound, ctx.masker)
            if not rows or not rows[0]:
                return no_value(f"{label} returned no rows")
            return rows[0][0]

        return label, query
    if params.get("url") is not None:
        url, path = str(params["url"]), str(params["json_path"])
        headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
        steps = parse_json_path(path)
        return ctx.masker.mask(f"{url} at {path}"), lambda: _from_url(
            url, path, steps, headers, ctx
        )
    command = str(params["command"])
    label = f"command `{ctx.masker.mask(command)}`"
    return label, lambda: _from_command(command, label, ctx)


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
            return no_value(
                mask(f"{path!r} not found in the JSON from {url} (no {step!r} at ${done})")
            )
    return node


def _from_command(command: str, label: str, ctx: ActionContext) -> Any:
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        env=child_env(ctx.state_dir, ctx.step_id),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=min(0.2, max(ctx.remaining(), 0.01)))
                break
            except subprocess.TimeoutExpired:
                if ctx.cancel.is_set() or ctx.remaining() <= 0:
                    why = "interrupted" if ctx.cancel.is_set() else "timed out"
                    raise ActionFailed(f"check: {label} {why}; killed") from None
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    if proc.returncode != 0:
        tail = ctx.masker.tail(err.decode(errors="replace"), STREAM_TAIL)
        raise ActionFailed(
            f"check: {label} exited with status {proc.returncode}",
            details="\n".join("    " + line for line in tail.splitlines()),
        )
    if not out.strip():
        return no_value(f"{label} printed nothing")
    return out


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
