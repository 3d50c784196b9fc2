"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives.

``smtp_server(...)`` starts one on a free port and stops it at teardown.  Options:
``auth=(user, password)`` requires AUTH, allowed only after STARTTLS (a self-signed certificate
for 127.0.0.1 and localhost is generated for the test; ``server.cert_file`` is its CA file);
``implicit_tls=True`` speaks TLS from the first byte (port-465 style); ``reject={addr}`` refuses
those recipients with 550; ``drop_for={addr}`` closes the connection when a message for one of
them has been transmitted, before replying (a crash mid-send seen from the client: the message
is not kept); ``hold_for={addr}`` keeps such a message (delivered) but withholds the reply
until ``server.release`` is set (``server.holding`` is set meanwhile): a client killed then
sent it without learning so.  ``server.messages`` holds each accepted message, parsed; ``server.connections``
counts the connections that sent mail.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpServer:
    host: str
    port: int
    cert_file: Path | None = None
    username: str | None = None
    password: str | None = None
    reject: set[str] = field(default_factory=set)
    drop_for: set[str] = field(default_factory=set)
    hold_for: set[str] = field(default_factory=set)
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    messages: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)  # user names that authenticated
    sessions: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Any = None

    @property
    def connections(self) -> int:
        with self.lock:
            return len(self.sessions)

    def to(self, address: str) -> list[EmailMessage]:
        """Messages received for ``address``."""
        with self.lock:
            got = [m for m in self.messages if address in m.rcpt_tos]
        return [m.message for m in got]

    # aiosmtpd handler hooks -----------------------------------------------------------------

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            if not any(s is session for s in self.sessions):
                self.sessions.append(session)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.lower() in self.reject:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if any(r.lower() in self.drop_for for r in envelope.rcpt_tos):
            server.transport.close()
            return "421 4.3.0 connection dropped"  # never reaches the client
        with self.lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        if any(r.lower() in self.hold_for for r in envelope.rcpt_tos):
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        return "250 2.0.0 OK: queued"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        if ok:
            with self.lock:
                self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    def stop(self) -> None:
        self.release.set()
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def start_smtp(
    folder: Path,
    *,
    auth: tuple[str, str] | None = None,
    implicit_tls: bool = False,
    reject: set[str] | None = None,
    drop_for: set[str] | None = None,
    hold_for: set[str] | None = None,
) -> SmtpServer:
    from aiosmtpd.controller import Controller

    server = SmtpServer(
        "127.0.0.1",
        free_port(),
        reject={a.lower() for a in reject or ()},
        drop_for={a.lower() for a in drop_for or ()},
        hold_for={a.lower() for a in hold_for or ()},
    )
    kwargs: dict[str, Any] = {}
    if auth or implicit_tls:
        cert_file, key_file = make_certificate(folder)
        server.cert_file = cert_file
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert_file, key_file)
        if implicit_tls:
            kwargs["ssl_context"] = tls
        else:
            kwargs.update(tls_context=tls, require_starttls=True)
    if auth:
        server.username, server.password = auth
        kwargs.update(authenticator=server.authenticate, auth_required=True, auth_require_tls=True)
    server.controller = Controller(server, hostname=server.host, port=server.port, **kwargs)
    server.controller.start()
    return server


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[Callable[..., SmtpServer]]:
    """A factory: ``smtp_server(auth=("u", "p"), reject={"x@example.org"})``."""
    started: list[SmtpServer] = []

    def start(**options: Any) -> SmtpServer:
        folder = tmp_path / f"smtp-{len(started)}"
        folder.mkdir()
        server = start_smtp(folder, **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
