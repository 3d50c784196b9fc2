"""The relay: ``runbook outbox FILE --relay smtp://[user[:password]@]host:port`` delivers the
queued messages of the outbox table with their stable Message-IDs (SPEC §10-§11).

One message at a time, each in one transaction with the settling of the one before: claim it
(``sending``, durable), send it, and in the next transaction mark it ``sent`` (or ``failed``
with the server's reason, or back to ``queued`` when the refusal is temporary) while claiming
the next. A relay killed mid-send leaves exactly one message ``sending``; the next relay finds
its claimant gone and makes it ``uncertain``, never sent again unless ``--resend-uncertain``.
So a relay can be stopped and started again at any instant without sending a Message-ID twice.
STARTTLS is used whenever the server offers it (``smtps://``: TLS from the first byte); a
password (in the URL or in ``RUNBOOK_SMTP_PASSWORD``) is never sent without TLS, never printed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from runbook_engine.actions import OutboxRow
from runbook_engine.plugins.notify.channels import (
    ChannelDown,
    MaybeSent,
    NotSent,
    Smtp,
    email_bytes,
)

PASSWORD_ENV = "RUNBOOK_SMTP_PASSWORD"


class BadUrl(ValueError):
    pass


class Claim(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def row(self) -> OutboxRow: ...

    @property
    def queued_at(self) -> str: ...


class Queue(Protocol):
    """``state.delivery.RelayQueue``."""

    def settle_orphans(self) -> int: ...

    def requeue_uncertain(self) -> int: ...

    def next(self, done: tuple[int, str, str | None] | None = None) -> Claim | None: ...

    def finish(self, done: tuple[int, str, str | None] | None) -> None: ...


def smtp_config(url: str, ca_file: str | None = None) -> dict[str, Any]:
    """``smtp://[user[:password]@]host[:port]`` (STARTTLS when offered; port 25) or
    ``smtps://…`` (TLS from the first byte; port 465) as the ``Smtp`` channel's config. The
    password may come from ``RUNBOOK_SMTP_PASSWORD`` instead of the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadUrl(f"not an SMTP URL ({exc})") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise BadUrl("expected smtp://[user[:password]@]host[:port] or smtps://…")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadUrl("an SMTP URL has no path, query or fragment")
    password = unquote(parts.password) if parts.password else os.environ.get(PASSWORD_ENV)
    config: dict[str, Any] = {
        "host": parts.hostname,
        "port": port or (465 if parts.scheme == "smtps" else 25),
        "security": "tls" if parts.scheme == "smtps" else "auto",
        "username": unquote(parts.username) if parts.username else None,
        "password": password or None,
        "ca_file": ca_file,
    }
    if config["password"] and not config["username"]:
        raise BadUrl("a password needs a user name: smtp://user@host:port")
    return config


@dataclass
class Relayed:
    """What one relay did."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0  # refused for now (4xx): queued again for the next relay
    uncertain: int = 0  # cut mid-send by this relay (the connection dropped after the data)
    orphans: int = 0  # found `sending` by a relay that is gone: made uncertain
    requeued: int = 0  # uncertain ones queued again on request
    stopped: str | None = None  # why the relay stopped early (server unreachable, Ctrl-C)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (address, reason), first


def relay(
    queue: Queue,
    smtp: Smtp,
    *,
    resend_uncertain: bool = False,
    cancel: threading.Event | None = None,
    progress: Callable[[Relayed], None] = lambda _r: None,
    listed: int = 20,
) -> Relayed:
    """Deliver every queued message of the outbox table; returns what happened."""
    out = Relayed(orphans=queue.settle_orphans())
    if resend_uncertain:
        out.requeued = queue.requeue_uncertain()
    done: tuple[int, str, str | None] | None = None
    try:
        while True:
            if cancel is not None and cancel.is_set():
                out.stopped = "interrupted"
                break
            claim = queue.next(done)
            done = None
            if claim is None:
                break
            done = _send(smtp, claim, out, listed)
            if sum((out.sent, out.failed, out.deferred, out.uncertain)) % 500 == 0:
                progress(out)
            if out.stopped:
                break
    finally:
        queue.finish(done)
        smtp.close()
    return out


def _send(smtp: Smtp, claim: Claim, out: Relayed, listed: int) -> tuple[int, str, str | None]:
    row = claim.row
    try:
        smtp.send(row.sender, row.address, email_bytes(row, claim.queued_at))
    except NotSent as exc:
        if exc.permanent:
            out.failed += 1
            if len(out.failures) < listed:
                out.failures.append((row.address, exc.reason))
            return (claim.id, "failed", exc.reason)
        out.deferred += 1
        return (claim.id, "queued", exc.reason)
    except MaybeSent as exc:
        out.uncertain += 1
        return (claim.id, "uncertain", exc.reason)
    except ChannelDown as exc:  # nothing of this message went out
        out.stopped = exc.reason
        return (claim.id, "queued", exc.reason)
    out.sent += 1
    return (claim.id, "sent", None)
