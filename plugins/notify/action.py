"""``notify``: tell recipients by outbox, email or webhook, once each.

Every message is a row of the state's outbox table (``ctx.outbox``), keyed by (run, step,
wave attempt or firing, recipient), with a Message-ID stable for that key:

* ``channel: outbox`` queues the messages, a batch of ``BATCH`` per transaction, inserted
  with ``ON CONFLICT DO NOTHING``: a crash leaves whole batches, and a resume queues the rest,
  each message once. ``runbook outbox FILE --relay smtp://…`` delivers them. With ``outbox:
  FOLDER`` each batch is also written there as ``.eml`` files once it is committed.
  ``wait_delivered: true`` makes the step wait until the relay sent them.
* ``email`` and ``webhook`` send at once: a row is ``sending`` (durable) before its send and
  ``sent`` after it (``failed`` when the server refused it: tried again on the next run); the
  ``sent`` of one message and the ``sending`` of the next are one transaction. A row found
  ``sending`` by a later run — a crash between the send and its record — is ``uncertain``:
  reported, and not resent unless ``resend_uncertain: true``.

The engine leaves ``templates``, ``subject`` and ``message`` unrendered; they are rendered here
per recipient with the run's context (``ctx.template_context``) plus ``recipient``, every one
before the first message is queued or sent. Uncertain recipients do not fail the step (they
are in the outputs and a ``notify.uncertain`` event); refused ones do, after every other
recipient was tried. Records of an earlier version (``ctx.records``, in the journal) still
decide for the recipients they name.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.http import secret_headers
from runbook_engine.plugins.notify.attempt import LISTED, SENT, Attempt
from runbook_engine.plugins.notify.channels import (
    Channel,
    ChannelDown,
    Smtp,
    Webhook,
)
from runbook_engine.plugins.notify.recipients import (
    Message,
    Recipient,
    Renderer,
    from_members,
    from_params,
    printable,
    shown,
)


class NotifyAction(BuiltinAction):
    name = "notify"
    summary = "notify recipients (outbox, email, webhook), once each"
    idempotent = True
    changes = True
    late_keys = frozenset({"templates", "subject", "message"})
    late_names = frozenset({"recipient"})
    url_keys = frozenset({"url"})
    sql_keys = frozenset({"recipients_query"})

    def describe(self, params: Mapping[str, Any]) -> str:
        to = params.get("to")
        channel = params.get("channel", "outbox")
        if params.get("recipients_query"):
            who = "recipients of a query"
        elif isinstance(to, list):
            who = f"{len(to)} recipient(s)"
        elif channel == "webhook":
            who = "a webhook"
        else:
            who = "recipients given at run time"
        locales = params.get("templates")
        tail = f" in {', '.join(locales)}" if isinstance(locales, Mapping) and locales else ""
        return f"notify {who} by {channel}{tail}"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        with _fewer_collections():
            return self._run(params, ctx)

    def _run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        channel_name = str(params.get("channel") or "outbox")
        outbox = ctx.outbox
        if outbox is None:
            raise ActionFailed(
                "notify: runs under the engine only (its messages live in the state's outbox)",
                retryable=False,
            )
        to = params.get("to")
        unreachable: list[Any] = []
        refused: list[tuple[Any, str]] = []
        bad: list[tuple[Recipient, str]] = []
        cohort = isinstance(to, Mapping) and bool(to.get("cohort"))
        if cohort:
            if ctx.members is None:
                raise ActionFailed(
                    "notify: `to: {cohort}` runs in a wave of that cohort only", retryable=False
                )
            recipients, unreachable, refused = from_members(
                ctx.members,
                str(to.get("address") or "email"),  # type: ignore[union-attr]
            )
            for key, why in refused:
                ctx.members.fail(key, why)
        else:
            recipients, bad = from_params(params, channel_name)
        scope = (outbox.run, outbox.step, outbox.attempt)
        renderer = Renderer(params, getattr(ctx, "template_context", {}), ctx.runbook.name, scope)
        run = Attempt(ctx, outbox, channel_name, params)
        run.refuse(bad)  # each fails alone, with its reason; the others are sent
        todo = _render_all(sorted(run.triage(recipients), key=_index_order), renderer, ctx, cohort)
        if channel_name == "outbox":
            folder = Path(params["outbox"]) if params.get("outbox") else None
            try:
                run.queue_all(todo, folder)
                if params.get("wait_delivered"):
                    run.wait_delivered()
            except ChannelDown as exc:
                raise ActionFailed(
                    f"notify: {exc.reason}", outputs=run.outputs(), retryable=exc.retryable
                ) from None
        else:
            run.send_all(todo, _channel(channel_name, params, ctx))
        outputs = run.outputs()
        if ctx.members is not None and cohort:
            told = run.told(recipients)
            if unreachable or refused or len(told) < len(recipients):
                ctx.members.only(r.entity for r in told)  # else: every member, set-wise
            earlier = [r for r in told if r.key in run.legacy_told]
            ctx.members.messages(  # told by an earlier version of runbook (journal records)
                (r.entity, channel_name, renderer.message_id(r), SENT) for r in earlier
            )
            ctx.members.messages((k, channel_name, None, "unreachable") for k in unreachable)
            outputs["unreachable"] = len(unreachable)
            outputs["refused"] = len(refused)
        if run.uncertain:
            ctx.emit(
                "notify.uncertain",
                {"count": run.uncertain_count, "recipients": run.uncertain[:LISTED]},
            )
        if cohort and run.failed and len(run.failed) < len(recipients):
            # for a cohort, a refused message fails that member (marked failed with the
            # reason), not the wave: the others were told (SPEC §11)
            outputs["refused"] = outputs.get("refused", 0) + len(run.failed)
            run.failed = []
        if run.failed:
            names = [f"{printable(address)} ({why})" for address, why in run.failed]
            total = len(recipients) + len(run.invalid)
            raise ActionFailed(
                run.mask(
                    f"notify: {len(run.failed)} of {total} recipient(s) refused: " + shown(names)
                ),
                outputs=outputs,
                retryable=not all(run.permanent),
            )
        return outputs


def _render_all(
    recipients: list[Recipient], renderer: Renderer, ctx: ActionContext, cohort: bool
) -> list[Message]:
    """Every message rendered before the first is queued or sent; for a cohort, a member whose
    message cannot be rendered (a missing locale, a bad value) fails alone."""
    if not cohort or ctx.members is None:
        return [renderer.render(r) for r in recipients]
    out: list[Message] = []
    for r in recipients:
        try:
            out.append(renderer.render(r))
        except ActionFailed as exc:
            ctx.members.fail(r.entity, exc.message)
    return out


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Reading, rendering and queueing thousands of messages allocates millions of short-lived
    objects that hold no cycles: the collector's youngest generation runs a hundred times less
    often meanwhile (process-wide: counted, and restored when the last step that asked is
    done)."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(_gc_saved[0], 1) * 100, *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)


def _index_order(r: Recipient) -> tuple[str, Any]:
    """Messages are queued in the order of the outbox's keys (a member's key, else the
    address), not in the draw's random order: each batch then adds to a few neighbouring
    pages of each index instead of touching every page of them (with a thousand random keys
    per batch, every commit wrote most of the index again: twice the time at 40,000)."""
    if r.entity is None:
        return ("", r.key)
    return (type(r.entity).__name__, r.entity)


def _channel(name: str, params: Mapping[str, Any], ctx: ActionContext) -> Channel:
    if name == "email":
        if not params.get("smtp"):
            raise ActionFailed("notify: channel email needs `smtp` (host...)", retryable=False)
        try:
            return Smtp(params["smtp"], ctx.remaining)
        except ChannelDown as exc:
            raise ActionFailed(f"notify: {exc.reason}", retryable=False) from None
    if not params.get("url"):
        raise ActionFailed("notify: channel webhook needs `url`", retryable=False)
    about = {"runbook": ctx.runbook.name, "step": ctx.step_id, "run_id": ctx.run_id}
    extra = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
    secret = secret_headers(extra, ctx.masker.mask)
    return Webhook(str(params["url"]), extra, about, ctx.remaining, ctx.cancel, secret, ctx.masker)
