"""SSH connections of one run: one per endpoint, opened on first use, reused by every step.

The pool lives in ``ctx.resources`` under ``"ssh"``; the engine calls ``close()`` when the run
ends.  Each connection is a paramiko ``SSHClient`` over a socket with TCP_NODELAY (paramiko
does not set it: ~50 ms instead of ~5 ms per command).  The host key is checked against the
step's known_hosts on connect and again whenever a later step reuses the connection, so a
step never runs on a host its own trust settings refuse.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from runbook_engine.format.durations import format_duration

from .hostkeys import HostKeyError, KnownHosts, host_id

# paramiko logs a failed handshake as an ERROR with a traceback from its own thread; with no
# handler configured, Python's last-resort handler would print it on stderr behind the
# reporter's back.  The failure reaches the user as a HostFailed message instead; log
# handlers the engine installs still receive the records.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE = 30  # seconds: keeps idle connections alive between steps (approvals, waits)


class HostFailed(Exception):
    """One host could not be worked on; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class Target:
    alias: str
    address: str
    port: int
    user: str
    key_file: str | None  # resolved path, or None: the agent and ~/.ssh/id_* keys

    @property
    def endpoint(self) -> tuple[str, int, str, str | None]:
        return (self.address, self.port, self.user, self.key_file)

    @property
    def label(self) -> str:
        return f"{self.user}@{host_id(self.address, self.port)}"


def make_target(alias: str, address: str, port: int, user: str | None, key: str | None) -> Target:
    key_file = str(Path(key).expanduser().absolute()) if key else None
    return Target(alias, address, port, user or getpass.getuser(), key_file)


@dataclass(frozen=True)
class Trust:
    known_hosts: KnownHosts
    policy: str  # "verify" | "accept-new"


class _Policy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko for every server (the client itself holds no keys): checks ours."""

    def __init__(self, trust: Trust) -> None:
        self.trust = trust

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.trust.known_hosts.check(hostname, key, self.trust.policy)


def _prefer(transport: paramiko.Transport, known: list[str]) -> None:
    """Ask first for the host key types known_hosts holds (as OpenSSH does)."""
    opts = transport.get_security_options()
    wanted: list[str] = []
    for kind in known:
        names = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if kind == "ssh-rsa" else [kind]
        wanted.extend(n for n in names if n in opts.key_types and n not in wanted)
    if wanted:
        opts.key_types = [*wanted, *(k for k in opts.key_types if k not in wanted)]


def _socket(target: Target, timeout: float) -> socket.socket:
    where = host_id(target.address, target.port)
    try:
        sock = socket.create_connection((target.address, target.port), timeout=timeout)
    except ConnectionRefusedError:
        raise HostFailed(f"connection to {where} refused (is sshd running there?)") from None
    except TimeoutError:
        raise HostFailed(f"connection to {where} timed out after {timeout:.3g}s") from None
    except socket.gaierror as exc:
        raise HostFailed(f"cannot resolve {target.address}: {exc.strerror}") from None
    except OSError as exc:
        raise HostFailed(f"cannot connect to {where}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(target: Target, trust: Trust, timeout: float) -> paramiko.SSHClient:
    """A connected, verified, authenticated client, or ``HostFailed`` saying why not."""
    if target.key_file and not os.path.isfile(target.key_file):
        raise HostFailed(f"key file {target.key_file} not found", retryable=False)
    name = host_id(target.address, target.port)
    known = trust.known_hosts.known_types(name)
    sock = _socket(target, timeout)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_Policy(trust))

    def transport_factory(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
        transport = paramiko.Transport(sock, **kwargs)
        _prefer(transport, known)
        return transport

    keys = f"key file {target.key_file}" if target.key_file else "the agent and ~/.ssh/id_* keys"
    try:
        client.connect(
            target.address,
            target.port,
            username=target.user,
            key_filename=target.key_file,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=target.key_file is None,
            look_for_keys=target.key_file is None,
            sock=sock,
            transport_factory=transport_factory,
        )
    except HostKeyError as exc:
        client.close()
        raise HostFailed(str(exc), retryable=False) from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise HostFailed(
            f"{keys} is encrypted: load it into ssh-agent and leave key_file out",
            retryable=False,
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise HostFailed(
            f"authentication as {target.user} on {name} failed with {keys} "
            "(is the public key in the user's authorized_keys?)",
            retryable=False,
        ) from None
    except paramiko.SSHException as exc:
        client.close()
        if "No authentication methods available" in str(exc):
            raise HostFailed(
                f"no key to log in as {target.user} on {name}: set key_file in the "
                "inventory, or load a key into ssh-agent",
                retryable=False,
            ) from None
        if "protocol banner" in str(exc) or "No existing session" in str(exc):
            # paramiko: no greeting before banner_timeout, or no key exchange before timeout
            raise HostFailed(
                f"SSH handshake with {name} did not complete within "
                f"{format_duration(timeout)} (is an SSH server listening there?)"
            ) from None
        raise HostFailed(f"SSH handshake with {name} failed: {exc}") from None
    except (OSError, EOFError) as exc:
        client.close()
        raise HostFailed(f"connection to {name} lost during the handshake: {exc}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(KEEPALIVE)
    return client


class SshPool:
    """One client per endpoint (address, port, user, key), shared by the steps of a run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, int, str, str | None], paramiko.SSHClient] = {}
        self._locks: dict[tuple[str, int, str, str | None], threading.Lock] = {}
        self._known: dict[Path, KnownHosts] = {}
        self.connects = 0  # connections opened, for the curious (tests count them on the server)

    def known_hosts(self, path: Path) -> KnownHosts:
        with self._lock:
            known = self._known.get(path)
            if known is None:
                known = self._known[path] = KnownHosts(path)
            return known

    def _transport(self, target: Target, trust: Trust, timeout: float) -> paramiko.Transport:
        with self._lock:
            lock = self._locks.setdefault(target.endpoint, threading.Lock())
        with lock:
            client = self._clients.get(target.endpoint)
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                name = host_id(target.address, target.port)
                try:
                    trust.known_hosts.check(name, transport.get_remote_server_key(), trust.policy)
                except HostKeyError as exc:
                    raise HostFailed(str(exc), retryable=False) from None
                return transport
            if client is not None:
                client.close()
            client = connect(target, trust, timeout)
            self._clients[target.endpoint] = client
            self.connects += 1
            transport = client.get_transport()
            if transport is None:  # paramiko always sets it after connect
                raise HostFailed(f"connection to {target.label} has no transport")
            return transport

    def _discard(self, target: Target, transport: paramiko.Transport) -> None:
        with self._lock:
            client = self._clients.get(target.endpoint)
            if client is not None and client.get_transport() is transport:
                del self._clients[target.endpoint]
                client.close()

    def session(self, target: Target, trust: Trust, timeout: float) -> paramiko.Channel:
        """A new channel on the endpoint's connection; reconnects once if the old one died.

        Nothing has run on the host when this fails, so reconnecting is always safe.
        """
        for attempt in (1, 2):
            transport = self._transport(target, trust, timeout)
            try:
                return transport.open_session(timeout=timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 2 or transport.is_active():  # alive: other steps still use it
                    raise HostFailed(f"cannot open a session on {target.label}: {exc}") from None
                self._discard(target, transport)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
