"""How ``notify`` delivers one message: SMTP or webhook (the ``outbox`` channel is a table of
the state, ``outbox.py``), and the RFC 5322 bytes of a message for SMTP, the relay and exports.

A channel's ``deliver`` returns when the message is delivered, raises ``NotSent`` when it
surely was not (the server said no: the recipient may be tried again), ``MaybeSent`` when it
may have been (the connection dropped after the message went out: the recipient is
``uncertain``), or ``ChannelDown`` when the channel cannot be used at all (the step fails).
"""

from __future__ import annotations

import binascii
import contextlib
import json
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from datetime import datetime
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache
from typing import Any, Protocol

from runbook_engine.actions import Masker, OutboxRow
from runbook_engine.plugins.http import RequestError, indented, send
from runbook_engine.plugins.notify.recipients import Message

DEFAULT_FROM = "runbook@localhost"
_PORTS = {"none": 25, "starttls": 587, "tls": 465, "auto": 25}


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
    def open(self) -> None: ...

    def deliver(self, message: Message, row: OutboxRow) -> None: ...

    def close(self) -> None: ...


@lru_cache(maxsize=256)
def extra_headers(text: str) -> tuple[tuple[str, str], ...]:
    """A row's own headers (a JSON object) as (name, value) pairs, in their order."""
    got = json.loads(text) if text else {}
    return tuple((str(k), str(v)) for k, v in got.items())


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # C0 controls and DEL (tab included)
_NOT_A_BREAK = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")  # CR and LF: said apart


def check_headers(row: OutboxRow) -> None:
    """A header value with a line break (CR or LF: a header injection) is refused: ``NotSent``,
    permanent (SPEC §11: the member or recipient is failed with that reason); so is an
    address with any other control character. Other values keep theirs, RFC 2047-encoded."""
    if _NOT_A_BREAK.search(row.address):
        raise NotSent(
            "the To address contains a control character (no valid address does): refused",
            permanent=True,
        )
    values = row.name + row.address + row.subject + (row.locale or "")
    if "\r" in values or "\n" in values or _breaks(row.sender, row.headers):
        for name, value in (
            ("From", row.sender),
            ("To", row.name),
            ("To", row.address),
            ("Subject", row.subject),
            ("Content-Language", row.locale or ""),
            *extra_headers(row.headers),
        ):
            if "\r" in value or "\n" in value:
                raise NotSent(
                    f"the {name} header would contain a line break (CR or LF): refused",
                    permanent=True,
                )


def check_text(row: OutboxRow) -> None:
    """A NUL byte in a message (its recipient's data, or what a template rendered from it) is
    refused: ``NotSent``, permanent, naming where. No e-mail may hold one (RFC 5322), and a
    PostgreSQL state cannot store one in its TEXT columns: the message fails alone, before
    anything of it is written, on either backend."""
    for where, value in (
        ("name", row.name),
        ("address", row.address),
        ("subject", row.subject),
        ("body", row.body),
        ("locale", row.locale or ""),
    ):
        if "\0" in value:
            raise NotSent(
                f"the message's {where} contains a NUL byte (\\x00): refused", permanent=True
            )


@lru_cache(maxsize=64)
def _breaks(sender: str, headers: str) -> bool:
    """Whether the headers a step gives all its messages hold a line break (once per step)."""
    return any("\r" in v or "\n" in v for v in (sender, *(v for _, v in extra_headers(headers))))


@lru_cache(maxsize=64)
def _date(at: str | None) -> str:
    """The Date header: of the time the message was queued (so that every export of it and its
    delivery carry the same bytes), or now."""
    if not at:
        return formatdate(localtime=True)
    stamp = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    return formatdate(stamp, localtime=True)


def email_bytes(row: OutboxRow, at: str | None = None) -> bytes:
    """The message as RFC 5322 bytes: ASCII headers (RFC 2047 words where needed), a UTF-8
    quoted-printable body, CRLF line ends.  Written by hand: ``email.message.EmailMessage``
    costs about a millisecond a message, twenty times the rest of a queued message.  ``at``:
    the time it was queued (the Date header).  Raises ``NotSent`` as ``check_headers``."""
    check_headers(row)
    headers = extra_headers(row.headers)
    to = _named(row.name, row.address) if row.name else row.address
    lines = [
        f"From: {address_header(row.sender)}",
        f"To: {to}",
        f"Subject: {_header(row.subject, 'Subject')}",
        f"Date: {_date(at)}",
        f"Message-ID: {row.message_id}",
    ]
    if row.locale:
        lines.append(f"Content-Language: {_header(row.locale, 'Content-Language')}")
    lines.append("Auto-Submitted: auto-generated")
    lines += [f"{name}: {_header(value, name)}" for name, value in headers]
    lines += [
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
    ]
    text = "\n".join(row.body.splitlines()) + "\n"
    body = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return "\r\n".join(lines).encode("ascii") + b"\r\n\r\n" + body


@lru_cache(maxsize=4096)
def _header(value: str, name: str) -> str:
    """One header value, unfolded from any line break, encoded when not plain ASCII, folded
    to 78 characters a line with the header's name."""
    value = " ".join(value.split())
    if value.isascii() and "=?" not in value and not _CONTROL.search(value):
        if len(name) + 2 + len(value) <= 78:
            return value
        return Header(value, header_name=name).encode(linesep="\r\n")
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


@lru_cache(maxsize=64)
def address_header(value: str) -> str:
    """``Name <addr>`` or ``addr`` with the name encoded when needed."""
    name, address = parseaddr(" ".join(value.split()))
    return _named(name, address) if name else address


def _named(name: str, address: str) -> str:
    """``Name <addr>``: the name quoted, or an RFC 2047 word when it is not plain ASCII or
    holds a control character (never raw in a header: a terminal or a parser would act on
    it)."""
    if _CONTROL.search(name):
        return f"{Header(name, 'utf-8').encode()} <{address}>"
    return formataddr((name, address), charset="utf-8")


class Smtp:
    """One SMTP connection for every message (reopened once if it drops between messages).

    ``security``: ``none``, ``starttls`` (required), ``tls`` (from the first byte) or ``auto``
    (STARTTLS when the server offers it: the relay's ``smtp://``); a password is never sent
    without TLS."""

    def __init__(
        self,
        config: Mapping[str, Any],
        remaining: Callable[[], float],
        ca_hint: str = "give the CA in smtp.ca_file",
    ) -> None:
        self.host = str(config["host"])
        self.user = config.get("username")
        self.password = config.get("password")
        default = "starttls" if self.password else "none"
        self.security = str(config.get("security") or default)
        self.port = int(config.get("port") or _PORTS[self.security])
        self.ca_file = config.get("ca_file")
        self.remaining, self.ca_hint = remaining, ca_hint
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
            offered = conn.has_extn("starttls")
            if self.security == "starttls" or (self.security == "auto" and offered):
                conn.starttls(context=tls)
                conn.ehlo()
            elif self.security == "auto" and self.password:
                raise ChannelDown(
                    f"{self.where} does not offer STARTTLS: refusing to send a password "
                    "without TLS",
                    retryable=False,
                )
            if self.user:
                conn.login(str(self.user), str(self.password or ""))
        except ChannelDown:
            _quit(conn)
            raise
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
                + self.ca_hint,
                retryable=False,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            _quit(conn)
            raise ChannelDown(f"cannot reach {self.where}: {_reason(exc)}") from None
        self.conn = conn

    def deliver(self, message: Message, row: OutboxRow) -> None:
        self.send(row.sender, row.address, email_bytes(row))

    def send(self, sender: str, address: str, data: bytes) -> None:
        """One message, ``data`` as it is, from ``sender`` (its address) to ``address``."""
        conn = self._envelope(parseaddr(sender)[1] or sender, address)
        try:
            conn.data(data)
        except smtplib.SMTPDataError as exc:
            raise NotSent(_reply(exc), permanent=exc.smtp_code >= 500) from None
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            raise MaybeSent(f"connection lost while sending: {_reason(exc)}") from None

    def _envelope(self, envelope_from: str, address: str) -> smtplib.SMTP:
        """MAIL FROM and RCPT TO; a connection found dead here is reopened once (nothing of
        this message has been sent yet)."""
        for attempt in (1, 2):
            self.open()
            conn = self.conn
            assert conn is not None
            try:
                if conn.sock is not None:  # the step's deadline comes closer with every message
                    conn.sock.settimeout(self._timeout())
                code, text = conn.mail(envelope_from)
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

    def close(self) -> None:
        conn, self.conn = self.conn, None
        _quit(conn)


class Webhook:
    """A JSON POST per message, with the Message-ID as ``Idempotency-Key``."""

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

    def deliver(self, message: Message, row: OutboxRow) -> None:
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
