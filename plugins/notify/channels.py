"""How ``notify`` delivers one message: outbox files, SMTP, webhook.

A channel's ``deliver`` returns when the message is delivered, raises ``NotSent`` when it
surely was not (the server said no: the recipient may be tried again), ``MaybeSent`` when it
may have been (the connection dropped after the message went out: the recipient is
``uncertain``), or ``ChannelDown`` when the channel cannot be used at all (the step fails).
``batch`` is how many messages share one pair of records; ``delivered(token)`` tells, for a
channel that can, whether a message whose send was recorded but not confirmed did arrive.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from runbook_engine.actions import Masker
from runbook_engine.files import open_private, private_dir
from runbook_engine.plugins.http import RequestError, indented, send
from runbook_engine.plugins.notify.recipients import Message

OUTBOX_BATCH = 500  # outbox files written between two records (one fsync each side)
DEFAULT_FROM = "runbook@localhost"
_PORTS = {"none": 25, "starttls": 587, "tls": 465}


class NotSent(Exception):
    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class MaybeSent(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChannelDown(Exception):
    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Channel(Protocol):
    batch: int

    def open(self) -> None: ...

    def deliver(self, message: Message) -> None: ...

    def delivered(self, token: str) -> bool | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def email_bytes(message: Message, sender: str, headers: Mapping[str, str]) -> bytes:
    """The message as RFC 5322 bytes: ASCII headers (RFC 2047 words where needed), a UTF-8
    quoted-printable body, CRLF line ends.  Written by hand: ``email.message.EmailMessage``
    costs about a millisecond a message, more than the fsync it sits next to.  A header value
    with a line break (CR or LF: a header injection) is refused: ``NotSent``, permanent."""
    r = message.recipient
    for name, value in (
        ("From", sender),
        ("To", r.name),
        ("To", r.address),
        ("Subject", message.subject),
        ("Content-Language", message.locale or ""),
        *headers.items(),
    ):
        if "\r" in value or "\n" in value:
            raise NotSent(
                f"the {name} header would contain a line break (CR or LF): refused",
                permanent=True,
            )
    lines = [
        f"From: {address_header(sender)}",
        f"To: {formataddr((r.name, r.address), charset='utf-8') if r.name else r.address}",
        f"Subject: {_header(message.subject, 'Subject')}",
        f"Date: {formatdate(localtime=True)}",
        f"Message-ID: {message.message_id}",
    ]
    if message.locale:
        lines.append(f"Content-Language: {_header(message.locale, 'Content-Language')}")
    lines.append("Auto-Submitted: auto-generated")
    lines += [f"{name}: {_header(value, name)}" for name, value in headers.items()]
    lines += [
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
    ]
    text = "\n".join(message.body.splitlines()) + "\n"
    body = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return "\r\n".join(lines).encode("ascii") + b"\r\n\r\n" + body


@lru_cache(maxsize=4096)
def _header(value: str, name: str) -> str:
    """One header value, unfolded from any line break, encoded when not plain ASCII, folded
    to 78 characters a line with the header's name."""
    value = " ".join(value.split())
    if value.isascii() and "=?" not in value:
        if len(name) + 2 + len(value) <= 78:
            return value
        return Header(value, header_name=name).encode(linesep="\r\n")
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


@lru_cache(maxsize=64)
def address_header(value: str) -> str:
    """``Name <addr>`` or ``addr`` with the name encoded when needed."""
    name, address = parseaddr(" ".join(value.split()))
    return formataddr((name, address), charset="utf-8") if name else address


class Outbox:
    """One ``<Message-ID token>.eml`` per message: temp file, fsync, rename; the folder is
    fsynced once per batch, before the batch is recorded as sent.  Files are 0600 and the
    folders the outbox creates 0700 (SPEC §9)."""

    batch = OUTBOX_BATCH

    def __init__(self, folder: Path, sender: str, headers: Mapping[str, str]) -> None:
        self.folder, self.sender, self.headers = folder, sender, headers

    def path(self, token: str) -> Path:
        return self.folder / f"{token}.eml"

    def open(self) -> None:
        try:
            private_dir(self.folder)
        except OSError as exc:
            raise ChannelDown(f"cannot create the outbox {self.folder}: {exc.strerror}") from None

    def deliver(self, message: Message) -> None:
        final = self.path(message.token)
        temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        data = email_bytes(message, self.sender, self.headers)
        try:
            fd = open_private(temp, exclusive=False)  # 0600: messages carry customer data
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except OSError as exc:
            raise ChannelDown(f"cannot write {final}: {exc.strerror}") from None

    def delivered(self, token: str) -> bool | None:
        return self.path(token).exists()

    def flush(self) -> None:
        try:
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ChannelDown(f"cannot sync the outbox {self.folder}: {exc.strerror}") from None

    def close(self) -> None:
        pass


class Smtp:
    """One SMTP connection for every message (reopened once if it drops between messages)."""

    batch = 1

    def __init__(
        self,
        config: Mapping[str, Any],
        sender: str,
        headers: Mapping[str, str],
        remaining: Callable[[], float],
    ) -> None:
        self.host = str(config["host"])
        self.user = config.get("username")
        self.password = config.get("password")
        default = "starttls" if self.password else "none"
        self.security = str(config.get("security") or default)
        self.port = int(config.get("port") or _PORTS[self.security])
        self.ca_file = config.get("ca_file")
        self.sender, self.headers, self.remaining = sender, headers, remaining
        self.envelope_from = parseaddr(sender)[1] or sender
        self.conn: smtplib.SMTP | None = None
        self.where = f"SMTP server {self.host}:{self.port}"
        if self.password and self.security == "none":
            raise ChannelDown(
                f"{self.where}: refusing to send a password without TLS; "
                "set smtp.security to starttls or tls",
                retryable=False,
            )

    def _timeout(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise ChannelDown("timed out")
        return min(left, 120.0)

    def open(self) -> None:
        if self.conn is not None:
            return
        tls = ssl.create_default_context(cafile=self.ca_file) if self.security != "none" else None
        conn: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self._timeout(), context=tls)
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self._timeout())
            conn.ehlo()
            if self.security == "starttls":
                conn.starttls(context=tls)
                conn.ehlo()
            if self.user:
                conn.login(str(self.user), str(self.password or ""))
        except smtplib.SMTPAuthenticationError as exc:
            _quit(conn)
            raise ChannelDown(
                f"{self.where}: authentication as {self.user} refused: {_reply(exc)}",
                retryable=False,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            _quit(conn)
            raise ChannelDown(f"{self.where}: {exc}", retryable=False) from None
        except ssl.SSLCertVerificationError as exc:
            _quit(conn)
            raise ChannelDown(
                f"{self.where}: TLS certificate not trusted ({exc.verify_message}); "
                "give the CA in smtp.ca_file",
                retryable=False,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            _quit(conn)
            raise ChannelDown(f"cannot reach {self.where}: {_reason(exc)}") from None
        self.conn = conn

    def deliver(self, message: Message) -> None:
        address = message.recipient.address
        data = email_bytes(message, self.sender, self.headers)
        conn = self._envelope(address)
        try:
            conn.data(data)
        except smtplib.SMTPDataError as exc:
            raise NotSent(_reply(exc), permanent=exc.smtp_code >= 500) from None
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            raise MaybeSent(f"connection lost while sending: {_reason(exc)}") from None

    def _envelope(self, address: str) -> smtplib.SMTP:
        """MAIL FROM and RCPT TO; a connection found dead here is reopened once (nothing of
        this message has been sent yet)."""
        for attempt in (1, 2):
            self.open()
            conn = self.conn
            assert conn is not None
            try:
                if conn.sock is not None:  # the step's deadline comes closer with every message
                    conn.sock.settimeout(self._timeout())
                code, text = conn.mail(self.envelope_from)
                if code != 250:
                    _rset(conn)
                    raise NotSent(f"sender refused: {code} {_text(text)}", permanent=code >= 500)
                code, text = conn.rcpt(address)
                if code not in (250, 251):
                    _rset(conn)
                    raise NotSent(f"{code} {_text(text)}", permanent=code >= 500)
                return conn
            except (OSError, smtplib.SMTPServerDisconnected) as exc:
                self.close()
                if attempt == 2:
                    raise ChannelDown(
                        f"{self.where} closed the connection: {_reason(exc)}"
                    ) from None
        raise AssertionError("unreachable")

    def delivered(self, token: str) -> bool | None:
        return None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        conn, self.conn = self.conn, None
        _quit(conn)


class Webhook:
    """A JSON POST per message, with the Message-ID as ``Idempotency-Key``."""

    batch = 1

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        about: Mapping[str, Any],
        remaining: Callable[[], float],
        cancel: Any,
        secret: frozenset[str] = frozenset(),
        masker: Masker | None = None,
    ) -> None:
        self.url, self.headers, self.about = url, dict(headers), dict(about)
        self.remaining, self.cancel, self.secret = remaining, cancel, secret
        self.masker = masker

    def open(self) -> None:
        pass

    def deliver(self, message: Message) -> None:
        import json

        payload: dict[str, Any] = {
            "text": message.body,
            "subject": message.subject,
            "message_id": message.message_id,
            "locale": message.locale,
            **self.about,
        }
        if message.recipient.address:
            payload["recipient"] = message.recipient.as_context()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.token}
        headers.update(self.headers)
        body = json.dumps(payload, default=str).encode()
        try:
            reply = send(
                "POST",
                self.url,
                timeout=self.remaining(),
                headers=headers,
                data=body,
                cancel=self.cancel,
                secret=self.secret,
            )
        except RequestError as exc:
            if exc.maybe_received:
                raise MaybeSent(exc.message) from None
            raise ChannelDown(
                f"webhook {self.url}: {exc.message}", retryable=not exc.refused
            ) from None
        if not 200 <= reply.status < 300:
            excerpt = indented(reply.text(300, self.masker)).strip()
            raise NotSent(
                f"webhook returned {reply.status} {reply.reason}"
                + (f": {excerpt}" if excerpt else ""),
                permanent=400 <= reply.status < 500 and reply.status not in (408, 429),
            )

    def delivered(self, token: str) -> bool | None:
        return None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _quit(conn: smtplib.SMTP | None) -> None:
    if conn is None:
        return
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        conn.close()


def _rset(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError, smtplib.SMTPException):
        conn.rset()


def _text(text: bytes | str) -> str:
    return (text.decode(errors="replace") if isinstance(text, bytes) else text).strip()


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
