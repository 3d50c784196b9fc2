"""A real PostgreSQL 15 on 127.0.0.1 for the tests (Debian package ``postgresql``).

``postgres_server`` (session): ``initdb`` + ``pg_ctl start`` as the ``postgres`` OS user in a
fresh directory outside pytest's tmp (which is mode 0700 and root's), on a free port, with
password authentication over TCP (so a DSN holds a real secret); stopped with ``pg_ctl stop``
and removed at teardown, even when tests failed.  ``pg_dsn`` (function): a fresh database on
it and its DSN.  ``private_postgres`` (function): a cluster of its own, for a test that stops
and restarts the server.  Without the binaries: ``ci_requires("PostgreSQL")``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("RUNBOOK_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PgServer:
    """One throw-away cluster; ``stop``/``start`` for tests of an outage."""

    root: Path
    port: int
    password: str
    fsync: bool = False  # tests need no durability; benchmarks run with the defaults
    _names = itertools.count(1)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", PG_USER, "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data)]
        return subprocess.run(
            [*cmd, *args], capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} "
            f"-c unix_socket_directories={self.root}" + ("" if self.fsync else " -c fsync=off")
        )
        log = str(self.root / "server.log")
        self._pg_ctl("-l", log, "-w", "-t", "60", "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def create_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.dsn(), autocommit=True) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _available() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL ({PG_BIN}/initdb missing: apt-get install postgresql)"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return "PostgreSQL (no 'postgres' OS user)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "PostgreSQL (psycopg missing: pip install -e '.[postgres]')"
    return None


@contextlib.contextmanager
def cluster(*, fsync: bool = False) -> Iterator[PgServer]:
    missing = _available()
    if missing:
        from tests.conftest import ci_requires

        ci_requires(missing)
    root = Path(tempfile.mkdtemp(prefix="runbook-pg-"))
    user = pwd.getpwnam(PG_USER)
    os.chown(root, user.pw_uid, user.pw_gid)
    password = "pw-" + secrets.token_hex(8)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    server = PgServer(root, _free_port(), password, fsync)
    try:
        subprocess.run(
            [
                "runuser", "-u", PG_USER, "--", str(PG_BIN / "initdb"), "-D", str(server.data),
                "-U", PG_USER, f"--pwfile={pwfile}", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
            ],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        server.start()
        yield server
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(f"PostgreSQL did not start: {exc.stderr}\n{tail}", pytrace=False)
    finally:
        if server.data.exists():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    with cluster() as server:
        yield server


@pytest.fixture
def pg_dsn(postgres_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server: its DSN (with the password)."""
    if not postgres_server.running():
        postgres_server.start()
    name = postgres_server.create_database()
    yield postgres_server.dsn(name)
    postgres_server.drop_database(name)


@pytest.fixture
def private_postgres() -> Iterator[PgServer]:
    """A cluster of the test's own, which it may stop and start."""
    with cluster() as server:
        yield server
