"""Host keys for the ``ssh`` action: a known_hosts file, verified the way OpenSSH does it.

A server's key is accepted when a line of the file names the host (plain, ``*``/``?``
wildcards, ``!`` negation, or hashed ``|1|SALT|HASH``) with exactly that key.  Otherwise:

- the host has other keys in the file (or the key is ``@revoked``): refused, always, as a
  possible man-in-the-middle, whatever the policy;
- the host is not in the file: refused under ``verify`` (the default), with the command that
  trusts it; recorded (appended, fsynced) under ``accept-new``.

The file is read again only when its size or mtime changed, so a connection costs a ``stat``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko

POLICIES = ("verify", "accept-new")


class HostKeyError(Exception):
    """The server's host key is not trusted: never retried, never downgraded to a warning."""


@dataclass(frozen=True)
class Entry:
    line: int
    marker: str  # "" | "@revoked" | "@cert-authority"
    patterns: tuple[str, ...]
    keytype: str
    blob: bytes


def host_id(address: str, port: int) -> str:
    """How known_hosts names an endpoint: ``HOST`` on port 22, else ``[HOST]:PORT``."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def _glob(pattern: str, name: str) -> bool:
    regex = "".join(
        ".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern.lower()
    )
    return re.fullmatch(regex, name.lower()) is not None


def _hashed(pattern: str, name: str) -> bool:
    parts = pattern.split("|")  # "", "1", salt, hash
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    got = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def matches(patterns: tuple[str, ...], name: str) -> bool:
    hit = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        found = _hashed(pattern, name) if pattern.startswith("|") else _glob(pattern, name)
        if found and negated:
            return False
        hit = hit or found
    return hit


def parse(text: str) -> list[Entry]:
    """The usable lines of a known_hosts file; comments and malformed lines are skipped."""
    out: list[Entry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        if len(fields) < 3:
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except (binascii.Error, ValueError):
            continue
        out.append(Entry(number, marker, tuple(fields[0].split(",")), fields[1], blob))
    return out


class KnownHosts:
    """One known_hosts file, shared by the threads of a run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: list[Entry] = []

    def entries(self) -> list[Entry]:
        with self._lock:
            return self._load()

    def _load(self) -> list[Entry]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._entries = None, []
            return []
        except OSError as exc:
            raise HostKeyError(f"cannot read known_hosts {self.path}: {exc.strerror}") from exc
        stamp = (st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise HostKeyError(f"cannot read known_hosts {self.path}: {exc.strerror}") from exc
            self._stamp, self._entries = stamp, parse(text)
        return self._entries

    def known_types(self, name: str) -> list[str]:
        """Key types the file holds for ``name``, first line first (to prefer in the handshake)."""
        seen: list[str] = []
        for e in self.entries():
            if not e.marker and e.keytype not in seen and matches(e.patterns, name):
                seen.append(e.keytype)
        return seen

    def check(self, name: str, key: paramiko.PKey, policy: str) -> bool:
        """Accept ``key`` for ``name`` or raise ``HostKeyError``; True when it was just recorded."""
        with self._lock:
            entries = self._load()
            blob = key.asbytes()
            mine = [e for e in entries if matches(e.patterns, name)]
            if any(e.marker == "@revoked" and e.blob == blob for e in entries):
                raise HostKeyError(
                    f"host key of {name} ({fingerprint(key)}) is marked @revoked in "
                    f"{self.path}: refused"
                )
            plain = [e for e in mine if not e.marker]
            if any(e.blob == blob for e in plain):
                return False
            if plain:
                raise HostKeyError(self._changed(name, key, plain))
            if policy != "accept-new":
                raise HostKeyError(self._unknown(name, key))
            self._append(f"{name} {key.get_name()} {key.get_base64()}\n")
            self._load()
            return True

    def _changed(self, name: str, key: paramiko.PKey, known: list[Entry]) -> str:
        lines = ", ".join(f"{self.path}:{e.line} ({e.keytype})" for e in known)
        return (
            f"HOST KEY CHANGED for {name}: the server sent {fingerprint(key)}, which is not "
            f"the key recorded at {lines}. Someone may be intercepting the connection "
            "(man-in-the-middle), or the host was reinstalled. Refused, whatever "
            "host_key_policy says. If the change is expected, remove the old key with "
            f"`ssh-keygen -R '{name}' -f {self.path}` and trust the new one."
        )

    def _unknown(self, name: str, key: paramiko.PKey) -> str:
        address, _, port = name.removeprefix("[").partition("]:")
        scan = f"ssh-keyscan -p {port} {address}" if port else f"ssh-keyscan {address}"
        return (
            f"host {name} is not in {self.path} (it offered {fingerprint(key)}); "
            f"refused. To trust it, check the fingerprint and run `{scan} >> {self.path}`, "
            "or set `host_key_policy: accept-new` on the step to record unknown keys on "
            "first use."
        )

    def _append(self, line: str) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size and not _ends_with_newline(self.path):
                    line = "\n" + line
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise HostKeyError(
                f"cannot record the host key in {self.path}: {exc.strerror}"
            ) from exc


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
