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
import json
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction, Outbox, OutboxRow
from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.http import secret_headers
from runbook_engine.plugins.notify.channels import (
    DEFAULT_FROM,
    Channel,
    ChannelDown,
    MaybeSent,
    NotSent,
    Smtp,
    Webhook,
    check_headers,
)
from runbook_engine.plugins.notify.export import ExportError, Folder
from runbook_engine.plugins.notify.recipients import (
    Message,
    Recipient,
    Renderer,
    from_members,
    from_params,
    shown,
)

SENDING, SENT, FAILED, UNCERTAIN, QUEUED = "sending", "sent", "failed", "uncertain", "queued"
LISTED = 100  # uncertain/failed recipients listed in the outputs
BATCH = 1000  # outbox messages per transaction
PROGRESS_EVERY = 500  # direct sends between two progress lines
POLL = 0.5  # seconds between two looks at the outbox while waiting for the relay
# an outbox message handed over (queued, or further on): told, for the ledger's marks
HANDED = frozenset({QUEUED, SENDING, SENT, UNCERTAIN})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
            recipients = from_params(params, channel_name)
        scope = (outbox.run, outbox.step, outbox.attempt)
        renderer = Renderer(params, getattr(ctx, "template_context", {}), ctx.runbook.name, scope)
        run = _Run(ctx, outbox, channel_name, params)
        todo = [renderer.render(r) for r in sorted(run.triage(recipients), key=_index_order)]
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
        if run.failed:
            names = [f"{address} ({why})" for address, why in run.failed]
            raise ActionFailed(
                run.mask(
                    f"notify: {len(run.failed)} of {len(recipients)} recipient(s) refused: "
                    + shown(names)
                ),
                outputs=outputs,
                retryable=not all(run.permanent),
            )
        return outputs


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


class _Run:
    """The bookkeeping of one attempt: what the outbox says, what was sent, what failed."""

    def __init__(
        self, ctx: ActionContext, outbox: Outbox, channel: str, params: Mapping[str, Any]
    ) -> None:
        self.ctx, self.outbox, self.channel = ctx, outbox, channel
        self.resend = bool(params.get("resend_uncertain"))
        self.wait = channel == "outbox" and bool(params.get("wait_delivered"))
        self.sender = str(params.get("from") or DEFAULT_FROM)
        self.headers = json.dumps({"X-Runbook": ctx.runbook.name, "X-Runbook-Step": ctx.step_id})
        smtp = params.get("smtp")
        password = smtp.get("password") if isinstance(smtp, Mapping) else None
        self.secrets = [str(password)] if password else []
        self.states = outbox.states()
        self.legacy = dict(ctx.records.items())
        self.legacy_told: set[str] = set()
        self.settle: dict[str, tuple[str, str | None]] = {}  # found `sending`: now uncertain
        self.sent = 0
        self.already = 0
        self.delivered: int | None = None
        self.uncertain: list[str] = []
        self.uncertain_count = 0
        self.failed: list[tuple[str, str]] = []
        self.permanent: list[bool] = []
        self.export: Folder | None = None
        self.queued: set[str] = set()  # recipients queued in the outbox by this attempt

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return self.ctx.masker.mask(text)

    # -- which recipients are still to do --------------------------------------------------
    def triage(self, recipients: list[Recipient]) -> list[Recipient]:
        todo: list[Recipient] = []
        direct = self.channel != "outbox"
        for r in recipients:
            state = self.states.get(r.key)
            if state is not None and not direct:
                self.already += 1  # in the outbox: the relay's from here (a failed one too)
                continue
            if state is None:
                state = self.legacy.get(r.key)
                if state == SENT:
                    self.legacy_told.add(r.key)
            if state is None or state == FAILED or (direct and state == QUEUED):
                todo.append(r)
            elif state == SENT:
                self.already += 1
            elif self.resend:  # sending (cut by a crash) or uncertain, sent again on request
                todo.append(r)
            else:
                if state == SENDING and r.key in self.states:
                    self.settle[r.key] = (UNCERTAIN, "the send was cut by a crash or a stop")
                self._uncertain(r)
        return todo

    def _uncertain(self, r: Recipient) -> None:
        self.uncertain_count += 1
        if len(self.uncertain) < LISTED:
            self.uncertain.append(r.address or r.key)

    def row(self, m: Message) -> OutboxRow:
        r = m.recipient
        return OutboxRow(
            r.key,
            self.channel,
            m.message_id,
            self.sender,
            r.address,
            r.name,
            m.locale,
            m.subject,
            m.body,
            self.headers,
            r.entity,
        )

    def stored(self, row: OutboxRow) -> OutboxRow:
        """The row as the state keeps it: no secret value reaches the disk (SPEC §9)."""
        mask = self.ctx.masker.mask
        text = f"{row.subject}\0{row.body}\0{row.name}"
        if mask(text) == text:  # one search for the three (a secret holds no NUL)
            return row
        return row._replace(subject=mask(row.subject), body=mask(row.body), name=mask(row.name))

    # -- outbox: queued in batches ----------------------------------------------------------
    def queue_all(self, todo: list[Message], folder: Path | None) -> None:
        if folder is not None:
            self.export = Folder(folder)
            if self.states:
                self._export_missing()
        row, stored = self.row, self.stored
        for start in range(0, len(todo), BATCH):
            self._check_time(start, len(todo), "queued")
            chunk = todo[start : start + BATCH]
            rows: list[OutboxRow] = []
            for m in chunk:
                one = stored(row(m))
                try:
                    check_headers(one)
                except NotSent as exc:
                    self._refused(m, exc)
                    continue
                rows.append(one)
            at = now()
            added = self.outbox.write(rows, state=QUEUED, at=at)
            self.queued.update(one.recipient for one in rows)
            self.sent += added
            self.already += len(rows) - added
            self._export(rows, at)
            if len(todo) > BATCH:
                self.ctx.progress(f"notify: {start + len(chunk)}/{len(todo)} queued")
        if self.settle:
            self.outbox.write(changes=self.settle, at=now())

    def _export(self, rows: list[OutboxRow], at: str) -> None:
        if self.export is None or not rows:
            return
        try:
            for row in rows:
                self.export.write(row, at)
            self.export.sync()
        except ExportError as exc:
            raise ActionFailed(
                f"notify: the messages are queued in the outbox, but {exc.reason}; run the "
                "step again to write the files, or `runbook outbox FILE --export DIR`",
                retryable=False,
            ) from None

    def _export_missing(self) -> None:
        """A resume: files of earlier batches that a crash kept from the folder."""
        assert self.export is not None
        done = [(row, at) for row, _state, at, _why in self.outbox.rows()]
        for row, at in self.export.missing(done):
            self._export([row], at)

    def wait_delivered(self) -> None:
        """Wait until the relay delivered every message of this step: none left queued or
        sending. Failed ones fail the step; uncertain ones are reported."""
        shown_left = -1
        while True:
            counts = self.outbox.counts()
            left = counts.get(QUEUED, 0) + counts.get(SENDING, 0)
            if not left:
                break
            total = sum(counts.values())
            why = "stopped" if self.ctx.cancel.is_set() else "timed out"
            if self.ctx.cancel.is_set() or self.ctx.remaining() <= 0:
                raise ChannelDown(
                    f"{why} waiting for the relay: {total - left} of {total} message(s) "
                    "delivered; deliver them with `runbook outbox FILE --relay smtp://HOST:PORT`"
                )
            if left != shown_left:
                self.ctx.progress(f"notify: waiting for the relay: {left} message(s) to send")
                shown_left = left
            self.ctx.sleep(POLL)
        self.delivered = counts.get(SENT, 0)
        for row, state, _at, reason in self.outbox.rows():
            if state == FAILED:
                self.failed.append((row.address, reason or "refused"))
                self.permanent.append(True)
            elif state == UNCERTAIN:
                self.uncertain_count += 1
                if len(self.uncertain) < LISTED:
                    self.uncertain.append(row.address)

    # -- email, webhook: sent one by one ----------------------------------------------------
    def send_all(self, todo: list[Message], channel: Channel) -> None:
        changes = dict(self.settle)
        try:
            if todo:
                channel.open()
            for i, m in enumerate(todo):
                self._check_time(i, len(todo), "sent")
                row = self.row(m)
                self.outbox.write(
                    [self.stored(row)], state=SENDING, at=now(), replace=True, changes=changes
                )
                changes = {}
                self._send_one(channel, m, row, changes)
                if (i + 1) % PROGRESS_EVERY == 0:
                    self.ctx.progress(f"notify: {i + 1}/{len(todo)} sent")
        except ChannelDown as exc:
            self.outbox.write(changes=changes, at=now())
            raise ActionFailed(
                self.mask(f"notify: {exc.reason}"),
                outputs=self.outputs(),
                retryable=exc.retryable,
            ) from None
        finally:
            channel.close()
        if changes:
            self.outbox.write(changes=changes, at=now())

    def _send_one(
        self,
        channel: Channel,
        m: Message,
        row: OutboxRow,
        changes: dict[str, tuple[str, str | None]],
    ) -> None:
        try:
            channel.deliver(m, row)
        except ChannelDown as exc:
            changes[m.key] = (FAILED, exc.reason)  # the channel failed before this one went out
            raise
        except NotSent as exc:
            changes[m.key] = (FAILED, self.mask(exc.reason))
            self._refused(m, exc)
            return
        except MaybeSent as exc:
            changes[m.key] = (UNCERTAIN, self.mask(exc.reason))
            self._uncertain(m.recipient)
            self.ctx.progress(self.mask(f"notify: {m.recipient.address}: {exc.reason}"))
            return
        changes[m.key] = (SENT, None)
        self.sent += 1

    def _refused(self, m: Message, exc: NotSent) -> None:
        self.failed.append((m.recipient.address or "webhook", exc.reason))
        self.permanent.append(exc.permanent)
        members = self.ctx.members
        if exc.permanent and members is not None and m.recipient.entity is not None:
            members.fail(m.recipient.entity, exc.reason)  # will not pass by trying again

    # -- the end ------------------------------------------------------------------------------
    def told(self, recipients: list[Recipient]) -> list[Recipient]:
        """Recipients whose message is handed over (the outbox) or sent (email, webhook;
        with ``wait_delivered``, the outbox too), in this attempt or an earlier run of it."""
        if self.channel == "outbox" and not self.wait:  # no need to read 40,000 rows back
            states = {k: s for k, s in self.states.items() if s in HANDED}
            states.update(dict.fromkeys(self.queued, QUEUED))
        else:
            states = self.outbox.states()
        ok = frozenset({SENT}) if self.channel != "outbox" or self.wait else HANDED
        return [
            r
            for r in recipients
            if states.get(r.key) in ok or (r.key not in states and r.key in self.legacy_told)
        ]

    def _check_time(self, done: int, total: int, what: str) -> None:
        if self.ctx.cancel.is_set():
            raise ChannelDown(f"interrupted after {done} of {total} message(s) {what}")
        if self.ctx.remaining() <= 0:
            raise ChannelDown(f"timed out after {done} of {total} message(s) {what}")

    def outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "channel": self.channel,
            "sent": self.sent,
            "skipped_already_sent": self.already,
            "uncertain": self.uncertain_count,
            "uncertain_recipients": list(self.uncertain),
            "failed": len(self.failed),
            "failed_recipients": [address for address, _ in self.failed[:LISTED]],
        }
        if self.export is not None:
            out["outbox"] = str(self.export.folder)
        if self.delivered is not None:
            out["delivered"] = self.delivered
        return out
