"""One command on one SSH channel: stream its output, wait for its exit status, or stop it.

Output is read as it comes (both streams, so that a chatty stderr cannot stall stdout behind a
full window) and bounded: the last ``CAPTURE_LIMIT`` bytes of each stream are kept, after a
line that says how much was cut.  A command still running at the deadline, or when the run is
cancelled, gets a ``signal`` request (TERM: OpenSSH's sshd sends it to the command's process
group) and its channel is closed: closing alone would leave it running on the host.
"""

from __future__ import annotations

import select
import threading
import time
from dataclasses import dataclass
from typing import Any

import paramiko

from runbook_engine.actions import Masker

CAPTURE_LIMIT = 256 * 1024  # bytes kept per stream per host
MARGIN = 64 * 1024  # bytes kept before the limit: a secret cut there is masked whole
_CHUNK = 65536
_POLL = 0.25  # seconds between checks of the cancel flag while a command is silent


class Capture:
    """The tail of a byte stream, bounded."""

    def __init__(self, limit: int = CAPTURE_LIMIT) -> None:
        self.limit = limit
        self.total = 0
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > 2 * self.limit + MARGIN:
            del self._buf[: -(self.limit + MARGIN)]

    def text(self, masker: Masker | None = None) -> str:
        """The kept tail; with ``masker``, masked before it is cut (the margin before the
        limit lets a secret that straddles the cut be recognised whole)."""
        if masker is None:
            kept = bytes(self._buf[-self.limit :])
            body = kept.decode("utf-8", errors="replace")
        else:
            whole = bytes(self._buf).decode("utf-8", errors="replace")
            body = masker.tail(whole, self.limit)
            kept = bytes(self._buf[-self.limit :])
        cut = self.total - len(kept)
        return f"[... {cut} bytes cut ...]\n{body}" if cut else body


@dataclass(frozen=True)
class Outcome:
    stdout: str
    stderr: str
    exit_code: int | None  # None: no exit status (stopped, or killed by a signal)
    stopped: str | None = None  # "timeout" | "cancelled" when we stopped it


def _drain(chan: paramiko.Channel, out: Capture, err: Capture) -> None:
    while chan.recv_ready():
        out.add(chan.recv(_CHUNK))
    while chan.recv_stderr_ready():
        err.add(chan.recv_stderr(_CHUNK))


def _signal(chan: paramiko.Channel, name: str) -> None:
    """Send the ``signal`` channel request (RFC 4254 §6.9); paramiko has no public call for it."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message

    msg = Message()
    msg.add_byte(cMSG_CHANNEL_REQUEST)
    msg.add_int(chan.remote_chanid)
    msg.add_string("signal")
    msg.add_boolean(False)
    msg.add_string(name)
    send: Any = getattr(chan.get_transport(), "_send_user_message", None)
    if callable(send):
        send(msg)


def _stop(chan: paramiko.Channel) -> None:
    try:
        if not chan.closed:
            _signal(chan, "TERM")
    except (paramiko.SSHException, EOFError, OSError):
        pass  # the connection is gone: so is the command
    finally:
        chan.close()


def run(
    chan: paramiko.Channel,
    command: str,
    *,
    deadline: float,
    cancel: threading.Event,
    masker: Masker | None = None,
) -> Outcome:
    """Run ``command`` on a fresh session channel until it exits, the deadline, or ``cancel``;
    the outputs are masked by ``masker`` before they are cut."""
    out, err = Capture(), Capture()
    stopped: str | None = None
    try:
        chan.exec_command(command)
        fd = chan.fileno()  # readable when either stream has data, and at EOF
        while True:
            _drain(chan, out, err)
            if chan.eof_received or chan.closed:
                break
            stopped = _why_stop(deadline, cancel)
            if stopped:
                break
            select.select([fd], [], [], min(_POLL, max(0.0, deadline - time.monotonic())))
        while not stopped and not chan.status_event.is_set():
            stopped = _why_stop(deadline, cancel)
            if not stopped:
                chan.status_event.wait(min(_POLL, max(0.0, deadline - time.monotonic())))
        _drain(chan, out, err)
    finally:
        if stopped:
            _stop(chan)
        else:
            chan.close()
    code = None if stopped or chan.exit_status < 0 else chan.exit_status
    return Outcome(out.text(masker), err.text(masker), code, stopped)


def _why_stop(deadline: float, cancel: threading.Event) -> str | None:
    if cancel.is_set():
        return "cancelled"
    if time.monotonic() >= deadline:
        return "timeout"
    return None
