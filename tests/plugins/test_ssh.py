"""The ``ssh`` action against a real OpenSSH server (``tests/servers/sshd.py``)."""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.masking import Masker
from runbook_engine.plugins.ssh.action import SshAction
from runbook_engine.plugins.ssh.execute import Capture
from runbook_engine.plugins.ssh.hostkeys import matches
from tests.servers.sshd import SshdFactory, SshServer, free_port

pytestmark = pytest.mark.servers

STEP = """\
phases:
  - id: only
    steps:
      - {id: s, action: wait, with: {duration: 0s}}
"""


def runbook_text(inventory: str) -> str:
    return f"apiVersion: runbook/v1\nkind: Runbook\nmetadata: {{name: ssh-test}}\n{inventory}{STEP}"


def known_hosts() -> Path:
    return Path(os.environ["HOME"]) / ".ssh" / "known_hosts"


def trust(server: SshServer, key: str | None = None) -> Path:
    path = known_hosts()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(server.known_hosts_text(key))
    return path


def ssh(params: Mapping[str, Any], ctx: Any) -> Mapping[str, Any]:
    return SshAction().run(params, ctx)


def failure(params: Mapping[str, Any], ctx: Any) -> ActionFailed:
    with pytest.raises(ActionFailed) as info:
        ssh(params, ctx)
    return info.value


def SecretMask(*values: str) -> Masker:
    return Masker({str(i): v for i, v in enumerate(values)})


@pytest.fixture
def ctx(make_ctx: Any, sshd: SshServer) -> Any:
    trust(sshd)
    return make_ctx(
        runbook_text=runbook_text(sshd.inventory(groups={"h2": ["web"], "h3": ["web"]}))
    )


def test_command_on_several_aliases(ctx: Any, make_ctx: Any, sshd: SshServer) -> None:
    out = ssh(
        {"command": "echo $SSH_CONNECTION; echo to-stderr >&2", "hosts": ["h1"], "groups": ["web"]},
        ctx,
    )
    assert list(out["hosts"]) == ["h1", "h2", "h3"]
    assert out["failed"] == [] and out["ok_count"] == 3
    for alias, (addr, port) in zip(sshd.aliases, sshd.endpoints, strict=True):
        host = out["hosts"][alias]
        assert host["stdout"].split()[2:] == [addr, str(port)], alias  # the server side it reached
        assert host["stderr"] == "to-stderr\n"
        assert host["exit_code"] == 0 and host["ok"] is True and host["error"] is None
    assert make_ctx.lines[-1] == "ssh: 3/3 hosts done, 0 failed"


def test_failing_host_over_max_fail_percent(ctx: Any, sshd: SshServer) -> None:
    command = 'case "$SSH_CONNECTION" in *" 127.0.0.2 "*) echo broken >&2; exit 3;; esac; echo fine'
    err = failure({"command": command, "groups": ["web"], "hosts": ["h1"]}, ctx)
    assert err.message.startswith("1 of 3 hosts failed (33%, more than max_fail_percent 0%)")
    assert "h2: exit status 3" in err.message
    assert "h1:" not in err.message and "h3:" not in err.message  # only the failed host
    port = sshd.endpoints[1][1]
    assert f"h2 ({sshd.keys.user}@[127.0.0.2]:{port}): exit status 3\n" in err.details
    assert "  command: case " in err.details
    assert "  stderr:\n    broken" in err.details
    assert err.outputs["failed"] == ["h2"]
    assert err.outputs["hosts"]["h1"]["stdout"] == "fine\n"
    assert err.outputs["hosts"]["h2"]["exit_code"] == 3
    assert err.retryable


def test_failing_host_within_max_fail_percent(ctx: Any) -> None:
    command = 'case "$SSH_CONNECTION" in *" 127.0.0.2 "*) exit 3;; esac; echo fine'
    out = ssh({"command": command, "hosts": ["h1", "h2", "h3"], "max_fail_percent": 34}, ctx)
    assert out["failed"] == ["h2"] and out["ok_count"] == 2
    assert out["hosts"]["h2"] == {
        "stdout": "",
        "stderr": "",
        "exit_code": 3,
        "ok": False,
        "error": "exit status 3",
    }
    # 33% is over 33: the same command fails there
    err = failure({"command": command, "hosts": ["h1", "h2", "h3"], "max_fail_percent": 33}, ctx)
    assert "1 of 3 hosts failed" in err.message


def test_unreachable_host_is_a_clear_error(make_ctx: Any, sshd: SshServer) -> None:
    trust(sshd)
    dead = free_port()
    inventory = sshd.inventory() + f"  dead: {{address: 127.0.0.1, port: {dead}, user: x}}\n"
    ctx = make_ctx(runbook_text=runbook_text(inventory))
    err = failure({"command": "true", "hosts": ["h1", "dead"]}, ctx)
    assert f"dead: connection to [127.0.0.1]:{dead} refused (is sshd running there?)" in err.message
    assert err.outputs["hosts"]["h1"]["ok"] is True
    assert err.outputs["hosts"]["dead"]["exit_code"] is None
    assert "Traceback" not in err.message + err.details
    assert err.retryable


def test_silent_server_hits_connect_timeout(make_ctx: Any, sshd: SshServer) -> None:
    trust(sshd)
    with socket.socket() as listener:  # accepts TCP, never says a word of SSH
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        inventory = sshd.inventory() + f"  mute: {{address: 127.0.0.1, port: {port}}}\n"
        ctx = make_ctx(runbook_text=runbook_text(inventory))
        err = failure({"command": "true", "hosts": ["mute"], "connect_timeout": "300ms"}, ctx)
    assert err.message == (
        f"1 of 1 host failed (100%, more than max_fail_percent 0%): mute: SSH handshake with "
        f"[127.0.0.1]:{port} did not complete within 300ms "
        "(is an SSH server listening there?)"
    )
    assert err.details == f"mute ({getpass.getuser()}@[127.0.0.1]:{port}): command not run"


def test_refused_client_key(make_ctx: Any, sshd: SshServer) -> None:
    trust(sshd)
    ctx = make_ctx(runbook_text=runbook_text(sshd.inventory(key_file=sshd.keys.stranger_key)))
    err = failure({"command": "true", "hosts": ["h1"]}, ctx)
    host, port = sshd.endpoints[0]
    assert (
        f"h1: authentication as {sshd.keys.user} on [{host}]:{port} failed with key file "
        f"{sshd.keys.stranger_key}"
    ) in err.message
    assert not err.retryable
    assert "Accepted publickey" not in sshd.log.read_text()

    ctx = make_ctx(runbook_text=runbook_text(sshd.inventory(key_file="no-such-key")))
    err = failure({"command": "true", "hosts": ["h1"]}, ctx)
    assert f"h1: key file {Path('no-such-key').absolute()} not found" in err.message


def test_unknown_host_key_is_refused_with_how_to_trust(make_ctx: Any, sshd: SshServer) -> None:
    ctx = make_ctx(runbook_text=runbook_text(sshd.inventory()))
    err = failure({"command": "touch /tmp/should-not-run", "hosts": ["h1"]}, ctx)
    host, port = sshd.endpoints[0]
    path = known_hosts()
    assert f"h1: host [{host}]:{port} is not in {path}" in err.message
    assert "(it offered ssh-ed25519 SHA256:" in err.message
    scan = f"ssh-keyscan -p {port} {host} >> {path}"
    assert scan in err.message
    assert "host_key_policy: accept-new" in err.message
    assert not err.retryable
    assert not path.exists()  # nothing recorded without the opt-in
    assert "Accepted publickey" not in sshd.log.read_text()  # we never logged in

    # the line the message gives is the way to trust it
    path.parent.mkdir(mode=0o700)
    subprocess.run(scan, shell=True, check=True, capture_output=True, timeout=30)
    assert ssh({"command": "true", "hosts": ["h1"]}, ctx)["ok_count"] == 1


def test_changed_host_key_refused_even_with_accept_new(
    make_ctx: Any, sshd_factory: SshdFactory
) -> None:
    server = sshd_factory(2, host_key="second")  # the hosts were known with the "main" key
    path = trust(server, key="main")
    before = path.read_bytes()
    ctx = make_ctx(runbook_text=runbook_text(server.inventory()))
    for policy in ("verify", "accept-new"):
        err = failure({"command": "true", "hosts": ["h1", "h2"], "host_key_policy": policy}, ctx)
        assert err.message.startswith("2 of 2 hosts failed")
        assert (
            f"h1: HOST KEY CHANGED for [{server.endpoints[0][0]}]:{server.endpoints[0][1]}"
            in err.message
        )
        assert "man-in-the-middle" in err.message
        assert f"not the key recorded at {path}:1 (ssh-ed25519)" in err.message
        assert "Refused, whatever host_key_policy says" in err.message
        assert not err.retryable
    assert path.read_bytes() == before
    assert "Accepted publickey" not in server.log.read_text()


def test_accept_new_records_unknown_keys(make_ctx: Any, sshd: SshServer) -> None:
    ctx = make_ctx(runbook_text=runbook_text(sshd.inventory()))
    out = ssh(
        {
            "command": "true",
            "groups": [],
            "hosts": ["h1", "h2", "h3"],
            "host_key_policy": "accept-new",
        },
        ctx,
    )
    assert out["ok_count"] == 3
    path = known_hosts()
    assert sorted(path.read_text().splitlines()) == sorted(sshd.known_hosts_text().splitlines())
    assert path.stat().st_mode & 0o777 == 0o600
    make_ctx.resources.close()  # a new run: new connections, verified against what was recorded
    assert ssh({"command": "true", "hosts": ["h1", "h2", "h3"]}, ctx)["ok_count"] == 3


def test_hashed_and_custom_known_hosts(make_ctx: Any, sshd: SshServer, tmp_path: Path) -> None:
    custom = tmp_path / "kh"
    custom.write_text("# ours\n" + sshd.known_hosts_text())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(custom)], check=True, capture_output=True)
    assert "|1|" in custom.read_text() and "127.0.0.1" not in custom.read_text()
    ctx = make_ctx(runbook_text=runbook_text(sshd.inventory()))
    out = ssh({"command": "true", "hosts": ["h1", "h3"], "known_hosts": str(custom)}, ctx)
    assert out["ok_count"] == 2
    assert not known_hosts().exists()


def test_one_connection_per_host_across_steps(
    make_ctx: Any, sshd: SshServer, tmp_path: Path
) -> None:
    trust(sshd)
    text = runbook_text(sshd.inventory())
    for step in ("a", "b"):
        ctx = make_ctx(runbook_text=text, step_id=step)
        assert ssh({"command": "echo $PPID", "hosts": ["h1", "h2", "h3"]}, ctx)["ok_count"] == 3
    assert sshd.connections() == 3  # two steps, three hosts, three TCP connections
    assert sshd.log.read_text().count("Accepted publickey") == 3
    assert sshd.log.read_text().count("Starting session: command") == 6

    # a later step with stricter trust does not ride on the old connection
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    err = failure(
        {"command": "true", "hosts": ["h1"], "known_hosts": str(empty)}, make_ctx(runbook_text=text)
    )
    assert "h1: host [127.0.0.1]:" in err.message and "is not in" in err.message

    make_ctx.resources.close()  # the engine closes the pool at the end of the run
    ssh({"command": "true", "hosts": ["h1"]}, make_ctx(runbook_text=text))
    assert sshd.connections() == 4


def _gone(pid: int) -> bool:
    for _ in range(200):
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    return False


def test_command_timeout_stops_the_command(make_ctx: Any, sshd: SshServer) -> None:
    trust(sshd)
    # time enough to connect on a loaded machine; the command would sleep 120 s
    ctx = make_ctx(runbook_text=runbook_text(sshd.inventory()), timeout=5.0)
    nap = f"sleep 120.{secrets.randbelow(10**6):06d}"  # unique: other runs may share the user
    err = failure({"command": f"echo $$; {nap}; echo never", "hosts": ["h1"]}, ctx)
    assert "h1: timed out after 5s (the step's timeout): the command was sent TERM" in err.message
    host = err.outputs["hosts"]["h1"]
    assert host["exit_code"] is None and "never" not in host["stdout"]
    pid = int(host["stdout"].split()[0])
    gone = _gone(pid)
    sleepers = subprocess.run(
        ["pgrep", "-u", sshd.keys.user, "-f", nap], capture_output=True, text=True, check=False
    ).stdout.split()
    for left in [*sleepers, *([] if gone else [str(pid)])]:  # do not leave them behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(left), signal.SIGKILL)
    assert gone, f"remote shell {pid} still runs after the timeout"
    assert sleepers == []


def test_cancel_stops_running_commands(make_ctx: Any, sshd: SshServer) -> None:
    trust(sshd)
    ctx = make_ctx(runbook_text=runbook_text(sshd.inventory()))

    def cancel_when_started() -> None:
        for _ in range(1000):  # both commands are running (the server says so), then cancel
            if sshd.log.read_text().count("Starting session: command") >= 2:
                break
            time.sleep(0.02)
        ctx.cancel.set()

    waiter = threading.Thread(target=cancel_when_started, daemon=True)
    waiter.start()
    err = failure({"command": "sleep 120", "hosts": ["h1", "h2"]}, ctx)
    waiter.join()
    assert "h1: cancelled: the command was sent TERM" in err.message
    assert "h2: cancelled" in err.message


def test_secret_in_command_is_masked(make_ctx: Any, sshd: SshServer) -> None:
    trust(sshd)
    secret = "hunter2-s3cret"
    ctx = make_ctx(runbook_text=runbook_text(sshd.inventory()), masker=SecretMask(secret))
    err = failure(
        {"command": f"echo token={secret}; echo {secret} >&2; exit 4", "hosts": ["h1"]}, ctx
    )
    text = err.message + "\n" + err.details
    assert secret not in text
    assert "command: echo token=***; echo *** >&2; exit 4" in err.details
    assert "    token=***" in err.details
    assert "h1: exit status 4" in err.message


def test_both_streams_drained_and_bounded(ctx: Any) -> None:
    # 3 MB of stderr before any stdout: more than a channel window; only the tail is kept
    command = "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 300000 /dev/zero | tr '\\0' o"
    out = ssh({"command": command, "hosts": ["h1"]}, ctx)["hosts"]["h1"]
    assert out["ok"] is True
    assert out["stderr"].startswith(f"[... {3000000 - 256 * 1024} bytes cut ...]\n")
    assert out["stdout"].endswith("o" * 1000) and "bytes cut" in out["stdout"]


def test_unknown_alias_and_group(ctx: Any) -> None:
    err = failure({"command": "true", "hosts": ["h1", "nope"], "groups": ["db"]}, ctx)
    assert err.message == (
        "unknown host alias 'nope'; no host is in group 'db' (inventory: h1, h2, h3)"
    )
    assert not err.retryable


def test_capture_and_patterns() -> None:
    cap = Capture(limit=4)
    for chunk in (b"ab", b"cdef", b"gh\xc3"):
        cap.add(chunk)
    assert cap.total == 9 and cap.text() == "[... 5 bytes cut ...]\nfgh\ufffd"
    assert matches(("[127.0.0.1]:2222",), "[127.0.0.1]:2222")
    assert not matches(("[127.0.0.1]:2222",), "1")  # brackets are not a character class
    assert matches(("*.example.com", "!bad.example.com"), "web.EXAMPLE.com")
    assert not matches(("*.example.com", "!bad.example.com"), "bad.example.com")


RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: ssh-e2e}
hosts:
  app1: {address: 127.0.0.1, port: 2222, user: deploy, key_file: keys/id_ed25519, groups: [app]}
  app2: {address: 127.0.0.2, groups: [app]}
secrets:
  token: {env: TOKEN}
phases:
  - id: deploy
    steps:
      - id: restart
        action: ssh
        with:
          command: "systemctl restart app --token {{ secrets.token | quote }}"
          groups: [app]
          forks: 2
          max_fail_percent: 50
          connect_timeout: 5s
          known_hosts: ./known_hosts
          host_key_policy: accept-new
        rollback: none
      - id: check
        action: ssh
        with: {command: "curl -sf localhost/health", hosts: [app1]}
        rollback: none
"""


@pytest.fixture
def e2e_file() -> Iterator[Path]:
    path = Path("ssh.yaml")
    path.write_text(RUNBOOK)
    yield path


def test_validate_runbook_with_ssh_steps(runbook: Any, e2e_file: Path) -> None:
    r = runbook("validate", "--strict", str(e2e_file))
    assert r.code == 0, r.output
    assert "ssh.yaml: valid" in r.out


def test_validate_rejects_bad_ssh_settings(runbook: Any, e2e_file: Path) -> None:
    text = RUNBOOK.replace("forks: 2", "forks: 0").replace("accept-new", "trust-all")
    text = text.replace("hosts: [app1]}", "hosts: [app1], password: x}")
    e2e_file.write_text(text)
    r = runbook("validate", str(e2e_file))
    assert r.code == 2
    assert "ssh.yaml:17:18: phases[0].steps[0].with.forks:" in r.err
    assert "ssh.yaml:21:28: phases[0].steps[0].with.host_key_policy:" in r.err
    assert "phases[0].steps[1].with.password: unknown key 'password'" in r.err
    assert "Traceback" not in r.output
