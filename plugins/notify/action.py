"""``notify``: tell recipients by email, webhook or outbox, once each.

Every recipient's send is recorded through ``ctx.records`` (durable): ``sending`` before the
send, ``sent`` after it (``failed`` when the server refused it: tried again on the next run).
A recipient found ``sending`` on a later run — a crash between the send and its record — is
``uncertain``: reported, and not resent unless ``resend_uncertain: true``; for the outbox the
file on disk (named after the Message-ID) tells instead, so its records are batched.  Records
are merged: the ``sent`` of one message and the ``sending`` of the next are one ``put``.

The engine leaves ``templates``, ``subject`` and ``message`` unrendered; they are rendered here
per recipient with the run's context (``ctx.template_context``) plus ``recipient``.  Uncertain
recipients do not fail the step (they are in the outputs and a ``notify.uncertain`` event);
recipients the server refused do, after every other recipient was tried.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.http import secret_headers
from runbook_engine.plugins.notify.channels import (
    DEFAULT_FROM,
    Channel,
    ChannelDown,
    MaybeSent,
    NotSent,
    Outbox,
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
    token,
)

SENDING, SENT, FAILED = "sending", "sent", "failed"
LISTED = 100  # uncertain/failed recipients listed in the outputs
PROGRESS_EVERY = 500


class NotifyAction(BuiltinAction):
    name = "notify"
    summary = "notify recipients (email, webhook, outbox), once each"
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
        channel_name = str(params.get("channel") or "outbox")
        to = params.get("to")
        unreachable: list[Any] = []
        refused: list[tuple[Any, str]] = []
        bad: list[tuple[Recipient, str]] = []
        if isinstance(to, Mapping) and to.get("cohort"):
            if ctx.members is None:
                raise ActionFailed(
                    "notify: `to: {cohort}` runs in a wave of that cohort only", retryable=False
                )
            recipients, unreachable, refused = from_members(
                ctx.members, str(to.get("address") or "email")
            )
            for key, why in refused:
                ctx.members.fail(key, why)
        else:
            recipients, bad = from_params(params, channel_name)
        renderer = Renderer(
            params,
            getattr(ctx, "template_context", {}),
            ctx.runbook.name,
            ctx.step_id,
        )
        channel = _channel(channel_name, params, ctx)
        run = _Run(ctx, channel, bool(params.get("resend_uncertain")))
        run.refuse(bad)  # each fails alone, with its reason; the others are sent
        per_member = ctx.members is not None and isinstance(to, Mapping) and bool(to.get("cohort"))
        try:
            todo = _render_all(run.triage(recipients, renderer), renderer, ctx, per_member)
            if todo:
                channel.open()
                run.send_all(todo)
        except ChannelDown as exc:
            run.flush()
            raise ActionFailed(
                run.mask(f"notify: {exc.reason}"),
                outputs=run.outputs(channel_name, channel),
                retryable=exc.retryable,
            ) from None
        finally:
            channel.close()
        run.flush()
        outputs = run.outputs(channel_name, channel)
        if per_member and ctx.members is not None:
            members = ctx.members
            told = run.told(recipients)
            members.only(r.entity for r in told)
            members.messages(  # every member told, a resume's earlier sends included
                (r.entity, channel_name, renderer.message_id(r), "sent") for r in told
            )
            members.messages((k, channel_name, None, "unreachable") for k in unreachable)
            # a send cut by a crash (or a server that did not answer) is uncertain: not resent,
            # and shown in the member's journey, never as told
            members.messages(
                (r.entity, channel_name, renderer.message_id(r), "uncertain")
                for r in run.uncertain_recipients
            )
            # one member's refused message fails that member, not the wave (SPEC §11)
            for r, why in run.refused_recipients:
                members.fail(r.entity, why)
            members.messages(
                (r.entity, channel_name, renderer.message_id(r), "failed")
                for r, _ in run.refused_recipients
            )
            outputs["unreachable"] = len(unreachable)
            outputs["refused"] = len(refused) + len(run.refused_recipients)
            if run.failed and len(run.refused_recipients) < len(recipients):
                run.failed = []  # the members that failed are failed; the others were told
        if run.uncertain:
            ctx.emit(
                "notify.uncertain",
                {"count": run.uncertain_count, "recipients": run.uncertain[:LISTED]},
            )
        if run.failed:
            names = [f"{printable(address)} ({why})" for address, why in run.failed]
            total = len(recipients) + len(run.invalid)
            raise ActionFailed(
                run.mask(
                    f"notify: {len(run.failed)} of {total} recipient(s) refused: " + shown(names)
                ),
                outputs=outputs,
                retryable=not all(permanent for permanent in run.permanent),
            )
        return outputs


def _render_all(
    recipients: list[Recipient], renderer: Renderer, ctx: ActionContext, per_member: bool
) -> list[Message]:
    """Every message rendered before the first is sent; for a cohort, a member whose message
    cannot be rendered (a missing locale, a bad value) fails alone."""
    if not per_member or ctx.members is None:
        return [renderer.render(r) for r in recipients]
    out: list[Message] = []
    for r in recipients:
        try:
            out.append(renderer.render(r))
        except ActionFailed as exc:
            ctx.members.fail(r.entity, exc.message)
    return out


def _channel(name: str, params: Mapping[str, Any], ctx: ActionContext) -> Channel:
    sender = str(params.get("from") or DEFAULT_FROM)
    headers = {"X-Runbook": ctx.runbook.name, "X-Runbook-Step": ctx.step_id}
    if name == "outbox":
        folder = Path(params["outbox"]) if params.get("outbox") else None
        return Outbox(folder or ctx.state_dir / "outbox" / ctx.step_id, sender, headers)
    if name == "email":
        if not params.get("smtp"):
            raise ActionFailed("notify: channel email needs `smtp` (host...)", retryable=False)
        try:
            return Smtp(params["smtp"], sender, headers, ctx.remaining)
        except ChannelDown as exc:
            raise ActionFailed(f"notify: {exc.reason}", retryable=False) from None
    if not params.get("url"):
        raise ActionFailed("notify: channel webhook needs `url`", retryable=False)
    about = {"runbook": ctx.runbook.name, "step": ctx.step_id, "run_id": ctx.run_id}
    extra = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
    secret = secret_headers(extra, ctx.masker.mask)
    return Webhook(str(params["url"]), extra, about, ctx.remaining, ctx.cancel, secret, ctx.masker)


class _Run:
    """The bookkeeping of one attempt: what the records say, what was sent, what failed."""

    def __init__(self, ctx: ActionContext, channel: Channel, resend_uncertain: bool) -> None:
        self.ctx, self.channel, self.resend = ctx, channel, resend_uncertain
        self.secrets = _secret_values(channel)
        self.pending: dict[str, str] = {}  # records not yet put
        self.sent = 0
        self.already = 0
        self.uncertain: list[str] = []
        self.uncertain_count = 0
        self.uncertain_recipients: list[Recipient] = []
        self.refused_recipients: list[tuple[Recipient, str]] = []
        self.failed: list[tuple[str, str]] = []
        self.permanent: list[bool] = []
        self.invalid: list[Recipient] = []  # refused before any send: not an address

    def refuse(self, bad: list[tuple[Recipient, str]]) -> None:
        """Recipients whose address is not one: failed, with the reason, never sent to."""
        for r, why in bad:
            self.invalid.append(r)
            self.failed.append((r.address, why))
            self.permanent.append(True)
            self.pending[r.key] = FAILED

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return self.ctx.masker.mask(text)

    def triage(self, recipients: list[Recipient], renderer: Renderer) -> list[Recipient]:
        """Recipients still to send to, after the records (and the outbox on disk) are read."""
        records = self.ctx.records.items()
        todo: list[Recipient] = []
        for r in recipients:
            state = records.get(r.key)
            if state == SENT:
                self.already += 1
            elif state == SENDING:
                on_disk = self.channel.delivered(token(renderer.message_id(r)))
                if on_disk:
                    self.already += 1
                    self.pending[r.key] = SENT
                elif on_disk is False or self.resend:
                    todo.append(r)
                else:
                    self._uncertain(r)
            else:
                todo.append(r)
        return todo

    def _uncertain(self, r: Recipient) -> None:
        self.uncertain_count += 1
        self.uncertain_recipients.append(r)
        if len(self.uncertain) < LISTED:
            self.uncertain.append(r.address or r.key)

    def send_all(self, todo: list[Message]) -> None:
        batch = max(1, self.channel.batch)
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            self._check_time(start, len(todo))
            self.pending.update({m.key: SENDING for m in chunk})
            self.flush()
            for m in chunk:
                self._send_one(m)
            self.channel.flush()
            if (start // batch + 1) % max(1, PROGRESS_EVERY // batch) == 0:
                self.ctx.progress(self.progress_line(start + len(chunk), len(todo)))

    def _send_one(self, m: Message) -> None:
        try:
            self.channel.deliver(m)
        except ChannelDown:
            self.pending[m.key] = FAILED  # the channel failed before this message went out
            raise
        except NotSent as exc:
            self.pending[m.key] = FAILED
            self.failed.append((m.recipient.address or "webhook", exc.reason))
            self.refused_recipients.append((m.recipient, self.mask(exc.reason)))
            self.permanent.append(exc.permanent)
            return
        except MaybeSent as exc:
            self._uncertain(m.recipient)  # its record stays `sending`
            self.ctx.progress(self.mask(f"notify: {m.recipient.address}: {exc.reason}"))
            return
        self.pending[m.key] = SENT
        self.sent += 1

    def progress_line(self, done: int, total: int) -> str:
        """What happened to the messages so far: sent ones counted as sent, never more."""
        refused = len(self.failed)
        line = f"notify: {self.sent} of {total + len(self.invalid)} sent"
        extra = [f"{refused} refused"] if refused else []
        extra += [f"{self.uncertain_count} uncertain"] if self.uncertain_count else []
        left = total - done
        extra += [f"{left} to go"] if left else []
        return line + (f" ({', '.join(extra)})" if extra else "")

    def told(self, recipients: list[Recipient]) -> list[Recipient]:
        """Recipients whose message is sent (in this attempt or an earlier run of it)."""
        records = self.ctx.records.items()
        return [r for r in recipients if records.get(r.key) == SENT]

    def _check_time(self, done: int, total: int) -> None:
        if self.ctx.cancel.is_set():
            raise ChannelDown(f"interrupted after {done} of {total} message(s)")
        if self.ctx.remaining() <= 0:
            raise ChannelDown(f"timed out after {done} of {total} message(s)")

    def flush(self) -> None:
        if self.pending:
            items, self.pending = self.pending, {}
            self.ctx.records.put(items)

    def outputs(self, channel_name: str, channel: Channel) -> dict[str, Any]:
        out: dict[str, Any] = {
            "channel": channel_name,
            "sent": self.sent,
            "skipped_already_sent": self.already,
            "uncertain": self.uncertain_count,
            "uncertain_recipients": list(self.uncertain),
            "failed": len(self.failed),
            "failed_recipients": [address for address, _ in self.failed[:LISTED]],
        }
        if isinstance(channel, Outbox):
            out["outbox"] = str(channel.folder)
        return out


def _secret_values(channel: Channel) -> list[str]:
    password = getattr(channel, "password", None)
    return [str(password)] if password else []
