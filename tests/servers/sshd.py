"""A real OpenSSH server on loopback for the tests (Debian package ``openssh-server``).

``ssh_keys`` (session): a directory outside pytest's tmp (which is mode 0700 and root's; sshd
reads ``authorized_keys`` as the login user) with generated ed25519 keys: two host keys
(``main`` and ``second``, to test a changed host key), the client key that is authorised and
one that is not; and the login user: ``runbook-ssh``, created with ``/bin/sh`` as its shell and
no rc files when the tests run as root (root's ``.bashrc`` costs ~250 ms per command here),
else the current user.

``sshd_factory`` (function): ``start(count=N, host_key="main")`` runs ``/usr/sbin/sshd -D``
with its own config (checked first with ``sshd -t``) listening on N endpoints ``127.0.0.K:PORT``
(one per inventory alias ``h1..hN``), logging at VERBOSE to a file, so that a test can count
the TCP connections the server accepted.  Every server is stopped by its process group at
teardown, even when the test failed.  ``sshd`` is one server with three endpoints.  Without
``sshd``: ``ci_requires("sshd")``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = Path(os.environ.get("RUNBOOK_SSHD", "/usr/sbin/sshd"))
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
TEST_USER = "runbook-ssh"
_LISTENING = re.compile(r"Server listening on (\S+) port (\d+)")


def free_port(address: str = "127.0.0.1") -> int:
    """A port nothing listens on at the moment (bound to 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class SshKeys:
    root: Path
    user: str
    host_keys: dict[str, Path]  # "main", "second" -> private key file
    client_key: Path  # authorised for ``user``
    stranger_key: Path  # a valid key that is not authorised

    def host_public(self, which: str = "main") -> str:
        """``ssh-ed25519 AAAA...`` of a host key."""
        text = Path(f"{self.host_keys[which]}.pub").read_text().split()
        return f"{text[0]} {text[1]}"


@dataclass
class SshServer:
    keys: SshKeys
    root: Path
    endpoints: list[tuple[str, int]]
    host_key: str
    proc: subprocess.Popen[bytes] | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def connections(self) -> int:
        """TCP connections the server accepted so far (its VERBOSE log says each)."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("Connection from ")

    def known_hosts_text(self, key: str | None = None) -> str:
        """known_hosts lines for every endpoint, with this server's key or ``key``."""
        public = self.keys.host_public(key or self.host_key)
        return "".join(f"[{addr}]:{port} {public}\n" for addr, port in self.endpoints)

    def inventory(
        self,
        *,
        key_file: Path | str | None = None,
        user: str | None = None,
        groups: dict[str, list[str]] | None = None,
    ) -> str:
        """A ``hosts:`` block: alias ``hN`` -> endpoint N, with the authorised key by default."""
        key = str(key_file or self.keys.client_key)
        lines = ["hosts:"]
        for alias, (addr, port) in zip(self.aliases, self.endpoints, strict=True):
            extra = ""
            if groups and alias in groups:
                extra = f", groups: [{', '.join(groups[alias])}]"
            lines.append(
                f"  {alias}: {{address: {addr}, port: {port}, user: {user or self.keys.user}, "
                f"key_file: '{key}'{extra}}}"
            )
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        listen = "\n".join(f"ListenAddress {addr}:{port}" for addr, port in self.endpoints)
        config = self.root / "sshd_config"
        config.write_text(
            f"""{listen}
HostKey {self.keys.host_keys[self.host_key]}
PidFile {self.root}/sshd.pid
AuthorizedKeysFile {self.keys.root}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers {self.keys.user}
MaxStartups 100
MaxSessions 100
PrintMotd no
PrintLastLog no
X11Forwarding no
LogLevel VERBOSE
"""
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run(
            [str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            pytest.fail(f"sshd -t rejected the test config: {check.stderr}", pytrace=False)
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-f", str(config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped with its children
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        want = {(addr, port) for addr, port in self.endpoints}
        for _ in range(400):  # up to ~20 s on a loaded machine
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            seen = {(m.group(1), int(m.group(2))) for m in _LISTENING.finditer(text)}
            if want <= seen:
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        pytest.fail(f"sshd did not start listening on {sorted(want)}:\n{text[-2000:]}", False)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _login_user() -> str:
    if os.geteuid() != 0:
        return getpass.getuser()
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-m", "-s", "/bin/sh", TEST_USER],
            check=True,
            capture_output=True,
            timeout=30,
        )
    # a new account is locked ("!" password), which sshd refuses without PAM: "*" is
    # "no password" without the lock
    subprocess.run(["usermod", "-p", "*", TEST_USER], check=True, capture_output=True, timeout=30)
    return TEST_USER


def make_keys(root: Path) -> SshKeys:
    """Generate the keys in ``root`` (made readable by the login user) and set up the user."""
    root.chmod(0o755)  # the login user reads authorized_keys here
    for name in ("host_main", "host_second", "client", "stranger"):
        _keygen(root / name, f"runbook-test-{name}")
    (root / "authorized_keys").write_text((root / "client.pub").read_text())
    (root / "authorized_keys").chmod(0o644)
    return SshKeys(
        root=root,
        user=_login_user(),
        host_keys={"main": root / "host_main", "second": root / "host_second"},
        client_key=root / "client",
        stranger_key=root / "stranger",
    )


def sshd_missing() -> str | None:
    if not SSHD.exists() or not Path(SSH_KEYGEN).exists():
        return "sshd (apt-get install openssh-server)"
    return None


@pytest.fixture(scope="session")
def ssh_keys() -> Iterator[SshKeys]:
    missing = sshd_missing()
    if missing:
        from tests.conftest import ci_requires

        ci_requires(missing)
    root = Path(tempfile.mkdtemp(prefix="runbook-sshd-"))
    try:
        yield make_keys(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class SshdFactory:
    def __init__(self, keys: SshKeys) -> None:
        self.keys = keys
        self.servers: list[SshServer] = []

    def __call__(self, count: int = 1, *, host_key: str = "main") -> SshServer:
        """A running sshd with ``count`` endpoints 127.0.0.K:PORT (aliases h1..hN)."""
        root = Path(tempfile.mkdtemp(prefix="srv-", dir=self.keys.root))
        endpoints = []
        for k in range(count):
            addr = f"127.0.0.{k + 1}"
            endpoints.append((addr, free_port(addr)))
        server = SshServer(self.keys, root, endpoints, host_key)
        server.aliases = [f"h{k + 1}" for k in range(count)]
        self.servers.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def sshd_factory(ssh_keys: SshKeys) -> Iterator[SshdFactory]:
    factory = SshdFactory(ssh_keys)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def sshd(sshd_factory: SshdFactory) -> SshServer:
    """One server with three endpoints (aliases h1, h2, h3), host key ``main``."""
    return sshd_factory(3)
