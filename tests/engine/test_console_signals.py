"""A Ctrl-C/SIGTERM notice printed by the signal handler while the main thread is itself writing
a line: the apply hung (the reporter's lock was never given back, and later signals hung
too). Run in a child process: a hang is a timeout, not a stuck test run."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import io, json, os, signal, sys
from runbook_engine.console.reporters import {cls}
from runbook_engine.masking import Masker

class Out(io.StringIO):
    armed = True

    def write(self, text):
        n = super().write(text)
        if self.armed:  # the signal lands while the reporter writes its first line
            self.armed = False
            os.kill(os.getpid(), signal.SIGINT)
        return n

out = Out()
reporter = {cls}(Masker({{}}), out)
signal.signal(signal.SIGINT, lambda *_: reporter.notice("interrupted: starting nothing new"))
reporter.notice("step a started")
reporter.notice("step a succeeded")
sys.stdout.write(out.getvalue())
"""


@pytest.mark.parametrize("cls", ["PlainReporter", "JsonReporter"])
def test_a_notice_from_the_signal_handler_while_a_line_is_written_does_not_hang(
    cls: str,
) -> None:
    try:
        r = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(cls=cls)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the reporter hung on the notice printed by the signal handler")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, lines  # whole lines: the interrupted one, the notice, the next
    assert "step a started" in lines[0] and "interrupted: starting nothing new" in lines[1]
    assert "step a succeeded" in lines[2]
