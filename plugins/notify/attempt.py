"""One attempt of a ``notify`` step: what the outbox says of its recipients, the messages it
queues (``outbox``) or sends (``email``, ``webhook``), what failed, and its outputs.

Messages are queued a batch of ``BATCH`` per transaction, each batch written to the step's
``outbox:`` folder once committed; a direct send is ``sending`` (durable) before it happens
and ``sent``, ``failed`` or ``uncertain`` after, in the transaction of the next one's
``sending``. A row found ``sending`` by a later attempt (a crash between a send and its
record) becomes ``uncertain``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_engine.actions import ActionContext, Outbox, OutboxRow
from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.notify.channels import (
    DEFAULT_FROM,
    Channel,
    ChannelDown,
    MaybeSent,
    NotSent,
    check_headers,
    check_text,
)
from runbook_engine.plugins.notify.export import ExportError, Folder
from runbook_engine.plugins.notify.recipients import Message, Recipient

SENDING, SENT, FAILED, UNCERTAIN, QUEUED = "sending", "sent", "failed", "uncertain", "queued"
LISTED = 100  # uncertain/failed recipients listed in the outputs
BATCH = 1000  # outbox messages per transaction
PROGRESS_EVERY = 500  # direct sends between two progress lines
POLL = 0.5  # seconds between two looks at the outbox while waiting for the relay
# an outbox message handed over (queued, or further on): told, for the ledger's marks
HANDED = frozenset({QUEUED, SENDING, SENT, UNCERTAIN})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Attempt:
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
        self.invalid: list[Recipient] = []  # refused before any send: not an address

    def refuse(self, bad: list[tuple[Recipient, str]]) -> None:
        """Recipients whose address is not one: failed, with the reason, never sent to."""
        for r, why in bad:
            self.invalid.append(r)
            self.failed.append((r.address, why))
            self.permanent.append(True)

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
                    check_text(one)
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
            last = start + BATCH >= len(todo)
            if len(todo) > BATCH or (last and self.failed):
                self.ctx.progress(self.progress_line(start + len(chunk), len(todo), "queued"))
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
        try:
            self.export.open()  # and clear what a killed writer left half-written
        except ExportError as exc:
            raise ActionFailed(f"notify: {exc.reason}", retryable=False) from None
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
                try:
                    check_text(row)  # before its `sending` record: the state keeps no NUL
                except NotSent as exc:
                    self._refused(m, exc)
                    continue
                self.outbox.write(
                    [self.stored(row)], state=SENDING, at=now(), replace=True, changes=changes
                )
                changes = {}
                self._send_one(channel, m, row, changes)
                if (i + 1) % PROGRESS_EVERY == 0:
                    self.ctx.progress(self.progress_line(i + 1, len(todo)))
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

    def progress_line(self, done: int, total: int, what: str = "sent") -> str:
        """What happened to the messages so far: sent (or queued) ones counted as such, never
        more; refused and uncertain ones apart."""
        refused = len(self.failed)
        line = f"notify: {self.sent} of {total + len(self.invalid)} {what}"
        extra = [f"{refused} refused"] if refused else []
        extra += [f"{self.uncertain_count} uncertain"] if self.uncertain_count else []
        left = total - done
        extra += [f"{left} to go"] if left else []
        return line + (f" ({', '.join(extra)})" if extra else "")

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
