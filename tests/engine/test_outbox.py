"""``runbook outbox``: counts, ``--export`` and ``--relay`` against a real SMTP server (aiosmtpd)
that counts Message-IDs, a relay killed mid-send, and ``wait_delivered`` (SPEC §10-§11)."""

from __future__ import annotations

import json
import signal
import sqlite3
import stat
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine.helpers import RUNBOOK, Output, sh, write
from tests.servers.smtp import SmtpServer, free_port

pytestmark = pytest.mark.servers

STATE = Path(".runbook/t/state.db")
PEOPLE = [f"p{i}@example.org" for i in range(1, 31)]


def tell(sid: str = "tell", to: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": sid,
        "action": "notify",
        "rollback": "none",
        "with": {
            "to": PEOPLE if to is None else to,
            "from": "ops@example.org",
            "subject": "Your move",
            "message": "Hello {{ recipient.address }}, you move on {{ vars.day }}.",
            **extra,
        },
    }
    return step


def runbook_file(*steps: dict[str, Any], **top: Any) -> None:
    write("r.yaml", vars={"day": "2026-12-15"}, phases=[{"id": "p", "steps": list(steps)}], **top)


def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{STATE}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def ids(server: SmtpServer) -> Counter[str]:
    """How often the server received each Message-ID."""
    with server.lock:
        got = list(server.messages)
    return Counter(str(m.message["Message-ID"]) for m in got)


def relay_cmd(server: SmtpServer, *extra: str) -> list[str]:
    return [RUNBOOK, "outbox", "r.yaml", "--relay", f"smtp://127.0.0.1:{server.port}", *extra]


# counts -------------------------------------------------------------------------------------


def test_counts_by_channel_and_state(runbook: Any, smtp_server: Any) -> None:
    server = smtp_server(reject={"p2@example.org"})
    smtp = {"host": "127.0.0.1", "port": server.port}
    runbook_file(tell(), tell("mail", to=PEOPLE[:3], channel="email", smtp=smtp))
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output  # p2 refused by the server
    r = runbook("outbox", "r.yaml")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "channel  queued  sending  sent  uncertain  failed  total",
        "outbox       30        0     0          0       0     30",
        "email         0        0     2          0       1      3",
        "all          30        0     2          0       1     33",
    ]
    doc = json.loads(runbook("outbox", "r.yaml", "--format", "json").out)
    assert doc["runbook"] == "t" and doc["total"] == 33
    assert sorted((c["channel"], c["state"], c["count"]) for c in doc["counts"]) == [
        ("email", "failed", 1),
        ("email", "sent", 2),
        ("outbox", "queued", 30),
    ]
    (why,) = rows("SELECT reason FROM outbox WHERE state = 'failed'")
    assert why == ("550 5.1.1 <p2@example.org>: mailbox unavailable",)


def test_before_any_apply_the_outbox_is_empty_and_nothing_is_created(runbook: Any) -> None:
    runbook_file(tell())
    r = runbook("outbox", "r.yaml")
    assert (r.code, r.out) == (0, "no messages in the outbox\n")
    assert json.loads(runbook("outbox", "r.yaml", "--format", "json").out)["counts"] == []
    assert not Path(".runbook").exists()
    r = runbook("outbox", "r.yaml", "--relay", f"smtp://127.0.0.1:{free_port()}")
    assert r.code == 0 and not Path(".runbook").exists()  # nothing to deliver


def test_bad_usage_is_exit_2_with_the_password_masked(runbook: Any) -> None:
    runbook_file(tell())
    assert runbook("apply", "r.yaml", "--yes").code == 0
    before = STATE.read_bytes()
    for url, why in [
        ("http://h:25", "expected smtp://[user[:password]@]host[:port] or smtps://"),
        ("smtp://:s3cret-pw@h:25", "a password needs a user name"),
        ("smtp://u:s3cret-pw@h:25/path", "an SMTP URL has no path, query or fragment"),
        ("smtp://u:s3cret-pw@h:notaport", "not an SMTP URL"),
    ]:
        r = runbook("outbox", "r.yaml", "--relay", url)
        assert r.code == 2, r.output
        assert why in r.err and "s3cret-pw" not in r.output, r.err
        assert "Traceback" not in r.output
    r = runbook("outbox", "r.yaml", "--resend-uncertain")
    assert r.code == 2 and "--resend-uncertain and --ca-file go with --relay URL" in r.err
    r = runbook("outbox", "r.yaml", "--format", "xml")
    assert r.code == 2
    assert STATE.read_bytes() == before


# export -------------------------------------------------------------------------------------


def test_export_writes_the_files_the_outbox_folder_got(runbook: Any) -> None:
    runbook_file(
        tell(
            outbox="folder/out",
            templates={"en": {"subject": "Hi", "body": "Olá {{ recipient.address }}"}},
        ),
        tell("plain", to=PEOPLE[:2]),
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0
    folder = {p.name: p.read_bytes() for p in Path("folder/out").iterdir()}
    assert len(folder) == 30 and all(n.endswith(".eml") for n in folder)
    r = runbook("outbox", "r.yaml", "--export", "exported")
    assert r.code == 0, r.err
    assert r.out.startswith("wrote 32 message(s) to exported\n")
    got = {p.name: p.read_bytes() for p in Path("exported/tell").iterdir()}
    assert got == folder  # the same names, the same bytes
    assert len(list(Path("exported/plain").iterdir())) == 2
    for path in [Path("exported"), Path("exported/tell"), Path("exported/plain")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in Path("exported").rglob("*.eml"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    again = runbook("outbox", "r.yaml", "--export", "exported", "--format", "json")
    assert json.loads(again.out)["export"] == {"dir": "exported", "files": 32}
    assert {p.name: p.read_bytes() for p in Path("exported/tell").iterdir()} == folder
    assert rows("SELECT DISTINCT state FROM outbox") == [("queued",)]  # an export sends nothing


# relay --------------------------------------------------------------------------------------


def test_relay_delivers_each_message_once_and_a_second_relay_sends_nothing(
    runbook: Any, smtp_server: Any
) -> None:
    server: SmtpServer = smtp_server()
    runbook_file(tell())
    assert runbook("apply", "r.yaml", "--yes").code == 0
    queued = dict(rows("SELECT address, message_id FROM outbox"))
    r = runbook("outbox", "r.yaml", "--relay", f"smtp://127.0.0.1:{server.port}")
    assert r.code == 0, r.output
    assert r.out.splitlines()[0] == f"relay to smtp://127.0.0.1:{server.port}: 30 sent"
    assert ids(server) == Counter(queued.values())  # each Message-ID once
    for address, mid in queued.items():
        (msg,) = server.to(address)
        assert msg["Message-ID"] == mid and msg["From"] == "ops@example.org"
        assert str(msg.get_content()).strip() == f"Hello {address}, you move on 2026-12-15."
    assert rows("SELECT DISTINCT state, claimed_by IS NOT NULL FROM outbox") == [("sent", 1)]
    r = runbook("outbox", "r.yaml", "--relay", f"smtp://127.0.0.1:{server.port}")
    assert r.code == 0 and r.out.startswith(f"relay to smtp://127.0.0.1:{server.port}: 0 sent")
    assert len(server.messages) == 30


@pytest.mark.slow
def test_a_relay_killed_mid_send_leaves_one_uncertain_never_sent_twice_unless_asked(
    runbook: Any, smtp_server: Any
) -> None:
    server: SmtpServer = smtp_server()
    runbook_file(tell())
    assert runbook("apply", "r.yaml", "--yes").code == 0
    held = rows("SELECT address FROM outbox ORDER BY id")[9][0]  # the relay's 10th message
    server.hold_for.add(held)
    proc = subprocess.Popen(relay_cmd(server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert server.holding.wait(60), "the relay never reached the held message"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    server.release.set()
    assert len(server.messages) == 10  # the held one was received: the relay never knew
    assert rows("SELECT address FROM outbox WHERE state = 'sending'") == [(held,)]

    done = subprocess.run(relay_cmd(server), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr  # one message left uncertain
    assert "29 sent" not in done.stdout and "20 sent" in done.stdout
    assert "1 message(s) found `sending` by a relay that is gone" in done.stdout
    assert "not delivered: 1 uncertain" in done.stderr
    assert set(ids(server).values()) == {1} and len(ids(server)) == 30  # nobody twice
    ((state, why),) = rows("SELECT state, reason FROM outbox WHERE address = ?", held)
    assert state == "uncertain" and f"the relay (pid {proc.pid} on " in why

    again = subprocess.run(relay_cmd(server), capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and len(server.messages) == 30  # not resent unprompted

    asked = subprocess.run(
        relay_cmd(server, "--resend-uncertain"), capture_output=True, text=True, timeout=120
    )
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "1 uncertain message(s) queued again (--resend-uncertain)" in asked.stdout
    counts = ids(server)
    (mid,) = rows("SELECT message_id FROM outbox WHERE address = ?", held)[0]
    assert counts[mid] == 2 and sum(counts.values()) == 31  # only the one asked for
    assert rows("SELECT DISTINCT state FROM outbox") == [("sent",)]


def test_a_refused_message_is_failed_with_the_reason_and_exit_1(
    runbook: Any, smtp_server: Any
) -> None:
    server: SmtpServer = smtp_server(reject={PEOPLE[0]})
    runbook_file(tell(to=PEOPLE[:3]))
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("outbox", "r.yaml", "--relay", f"smtp://127.0.0.1:{server.port}")
    assert r.code == 1, r.output
    assert "2 sent, 1 failed" in r.out
    assert f"failed: {PEOPLE[0]}: 550 5.1.1 <{PEOPLE[0]}>: mailbox unavailable" in r.out
    assert "not delivered: 1 failed" in r.err
    assert rows("SELECT state FROM outbox WHERE address = ?", PEOPLE[0]) == [("failed",)]


def test_an_unreachable_server_leaves_every_message_queued(runbook: Any) -> None:
    runbook_file(tell(to=PEOPLE[:3]))
    assert runbook("apply", "r.yaml", "--yes").code == 0
    port = free_port()
    r = runbook("outbox", "r.yaml", "--relay", f"smtp://127.0.0.1:{port}")
    assert r.code == 1, r.output
    assert f"stopped: cannot reach SMTP server 127.0.0.1:{port}: connection refused" in r.out
    assert "not delivered: 3 queued" in r.err
    assert rows("SELECT DISTINCT state FROM outbox") == [("queued",)]


def test_starttls_and_a_password_from_the_environment_never_printed(
    runbook: Any, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "relay-pw-9f8e7d"
    server: SmtpServer = smtp_server(auth=("ops", password))
    runbook_file(tell(to=PEOPLE[:2]))
    assert runbook("apply", "r.yaml", "--yes").code == 0
    url = f"smtp://ops@127.0.0.1:{server.port}"
    r = runbook("outbox", "r.yaml", "--relay", url, "--ca-file", str(server.cert_file))
    assert r.code == 1 and "authentication as ops refused" in r.out  # no password given
    monkeypatch.setenv("RUNBOOK_SMTP_PASSWORD", password)
    r = runbook("outbox", "r.yaml", "--relay", url)
    assert r.code == 1 and "TLS certificate not trusted" in r.out and "--ca-file" in r.out
    r = runbook("outbox", "r.yaml", "--relay", url, "--ca-file", str(server.cert_file))
    assert r.code == 0, r.output
    assert server.logins == ["ops"] and len(server.messages) == 2
    monkeypatch.delenv("RUNBOOK_SMTP_PASSWORD")
    shown = runbook(
        "outbox", "r.yaml", "--relay", f"smtp://ops:{password}@127.0.0.1:{server.port}",
        "--ca-file", str(server.cert_file), "--format", "json",
    )  # fmt: skip
    assert shown.code == 0 and password not in shown.output
    assert password not in STATE.read_bytes().decode(errors="replace")


def test_a_password_is_never_sent_without_tls(runbook: Any, smtp_server: Any) -> None:
    server: SmtpServer = smtp_server()  # no STARTTLS offered
    runbook_file(tell(to=PEOPLE[:1]))
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("outbox", "r.yaml", "--relay", f"smtp://ops:pw-xyz@127.0.0.1:{server.port}")
    assert r.code == 1
    assert "does not offer STARTTLS: refusing to send a password without TLS" in r.out
    assert server.messages == [] and "pw-xyz" not in r.output


# journeys and wait_delivered -----------------------------------------------------------------


def _cohort_runbook(timeout: str | None = None, **announce: Any) -> None:
    """60 members in one wave, told by one notify step (``announce``: more of its ``with``)."""
    from tests.engine import cohort_run as cr

    cr.legacy(rows=60, no_contact_every=1000)
    cr.target()
    steps = cr.steps()[:1]
    steps[0]["with"].update(announce)
    if timeout:
        steps[0]["timeout"] = timeout
    cr.write(
        name="t",
        cohort=cr.cohort(waves=[{"id": "all", "size": "rest"}], stratify_by=[]),
        phases=[{"id": "rollout", "waves": {"cohort": "customers"}, "steps": steps}],
    )


def test_a_journey_shows_each_message_with_its_delivery_state(
    runbook: Any, smtp_server: Any
) -> None:
    server: SmtpServer = smtp_server()
    _cohort_runbook()
    assert runbook("apply", "m.yaml", "--yes").code == 0
    r = runbook("customers", "m.yaml", "7")
    assert r.code == 0, r.err
    # queued until the relay sends it (Issue 13 audit: never shown `sent` before that)
    assert "message sent" not in r.out
    (line,) = [ln for ln in r.out.splitlines() if "message queued" in ln]
    assert line.endswith("by announce[all] (attempt 1)")
    doc = json.loads(runbook("customers", "m.yaml", "7", "--format", "json").out)
    (msg,) = doc["entities"][0]["messages"]
    assert (msg["channel"], msg["state"], msg["delivery"]) == ("outbox", "queued", "queued")
    assert msg["recorded"] == "sent"  # the ledger's: handed to the outbox (marks: notified)
    assert runbook("outbox", "m.yaml", "--relay", f"smtp://127.0.0.1:{server.port}").code == 0
    doc = json.loads(runbook("customers", "m.yaml", "7", "--format", "json").out)
    (msg,) = doc["entities"][0]["messages"]
    assert msg["delivery"] == "sent" and ids(server)[msg["message_id"]] == 1
    assert msg["state"] == "sent"
    (line,) = [ln for ln in runbook("customers", "m.yaml", "7").out.splitlines() if "message" in ln]
    assert "message sent: outbox" in line


@pytest.mark.slow
def test_wait_delivered_waits_for_the_relay_and_times_out_without_one(
    runbook: Any, smtp_server: Any
) -> None:
    server: SmtpServer = smtp_server()
    _cohort_runbook(wait_delivered=True, timeout="2s")
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 1, r.output
    assert "timed out waiting for the relay: 0 of 60 message(s) delivered" in r.output
    assert "runbook outbox FILE --relay smtp://HOST:PORT" in r.output
    from tests.engine import cohort_run as cr

    assert cr.counts("t")[("all", "pending")] == 60  # queued is not delivered: not notified
    assert rows("SELECT count(*), min(state) FROM outbox") == [(60, "queued")]

    # the next apply waits (time enough for a relay started on a loaded machine) ...
    doc = yaml.safe_load(Path("m.yaml").read_text())
    doc["phases"][0]["steps"][0]["timeout"] = "300s"
    Path("m.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    apply = subprocess.Popen(
        [RUNBOOK, "apply", "m.yaml", "--yes", "--accept-changes"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = Output(apply)
    output.wait_for("waiting for the relay: 60 message(s) to send")
    # ... until the relay delivered them
    relay = subprocess.run(
        [RUNBOOK, "outbox", "m.yaml", "--relay", f"smtp://127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert relay.returncode == 0, relay.stdout + relay.stderr
    out, _ = output.finish(timeout=120)
    assert apply.returncode == 0, out
    assert cr.counts("t")[("all", "notified")] == 60 and len(ids(server)) == 60
    assert set(ids(server).values()) == {1}


def test_a_notify_step_and_a_relay_at_once_on_one_state(runbook: Any, smtp_server: Any) -> None:
    """The relay takes no lock: it delivers while an apply queues (SQLite serialises the two
    writers; each transaction is short)."""
    server: SmtpServer = smtp_server()
    many = [f"m{i}@example.org" for i in range(3000)]
    runbook_file(tell(to=many[:10]), sh("gap", "sleep 0.3"), tell("more", to=many))
    apply = subprocess.Popen([RUNBOOK, "apply", "r.yaml", "--yes"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not STATE.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    relays = 0
    while apply.poll() is None and time.monotonic() < deadline:
        subprocess.run([RUNBOOK, "outbox", "r.yaml", "--relay", f"smtp://127.0.0.1:{server.port}"],
                       capture_output=True, timeout=120)  # fmt: skip
        relays += 1
    assert apply.wait(timeout=120) == 0
    last = subprocess.run(
        [RUNBOOK, "outbox", "r.yaml", "--relay", f"smtp://127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert last.returncode == 0, last.stdout + last.stderr
    assert relays >= 1
    assert len(ids(server)) == 3010 and set(ids(server).values()) == {1}


def test_a_state_of_schema_2_is_migrated_and_its_journal_records_still_decide(
    runbook: Any,
) -> None:
    """An upgrade in the middle of a run: the per-recipient records an earlier version kept in
    the journal still say who was told; nobody is told twice."""
    runbook_file(sh("a", "true"))
    assert runbook("apply", "r.yaml", "--yes").code == 0
    con = sqlite3.connect(STATE, isolation_level=None)
    con.execute("DROP TABLE outbox")
    con.execute("ALTER TABLE message DROP COLUMN outbox")
    con.execute("ALTER TABLE journal DROP COLUMN hash")  # schema 4 (issue 14)
    con.execute("DROP TABLE lease")  # schema 5 (issue 14)
    con.execute("UPDATE meta SET value = '2' WHERE key = 'version'")
    at = "2026-12-01T00:00:00.000Z"
    old = [
        {"t": "run", "run": "r2", "status": "running", "at": at},
        {"t": "step", "id": "tell", "status": "running", "attempt": 1, "run": "r2", "at": at},
        {"t": "record", "step": "tell", "items": {f"to:{PEOPLE[0]}": "sent"}, "at": at},
        {"t": "record", "step": "tell", "items": {f"to:{PEOPLE[1]}": "sending"}, "at": at},
    ]
    con.executemany(
        "INSERT INTO journal (at, kind, rec) VALUES (?, ?, ?)",
        [(at, r["t"], json.dumps(r)) for r in old],
    )
    con.close()
    runbook_file(sh("a", "true"), tell(to=PEOPLE[:3]))
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert rows("SELECT value FROM meta WHERE key = 'version'") == [("5",)]
    doc = json.loads(runbook("status", "r.yaml", "--format", "json").out)
    (step,) = [s for s in doc["steps"] if s["id"] == "tell"]
    out = step["outputs"]
    assert (out["sent"], out["skipped_already_sent"], out["uncertain"]) == (1, 1, 1)
    assert out["uncertain_recipients"] == [PEOPLE[1]]
    assert rows("SELECT address, state FROM outbox") == [(PEOPLE[2], "queued")]


def test_a_secret_in_a_message_never_reaches_the_state_or_the_files(
    runbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_TEST_TOKEN", "tok-5e3c2a1b")
    step = tell(to=PEOPLE[:1], outbox="mail")
    step["with"]["message"] = "your code: {{ secrets.code }}"
    runbook_file(step, secrets={"code": {"env": "OUTBOX_TEST_TOKEN"}})
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert rows("SELECT body FROM outbox") == [("your code: ***",)]
    assert runbook("outbox", "r.yaml", "--export", "out").code == 0
    for path in [STATE, *Path("mail").iterdir(), *Path("out").rglob("*.eml")]:
        assert b"tok-5e3c2a1b" not in path.read_bytes(), path


def test_a_nul_byte_in_a_members_data_fails_that_member_alone_on_a_directory_too(
    tmp_path: Path, smtp_server: Any
) -> None:
    """As on PostgreSQL (test_tell_postgres.py), where text holds no NUL: the member whose
    name or rendered body holds one fails with the reason, before anything of it is written;
    the others are sent once."""
    import os

    from tests.engine.test_tell_postgres import NAME, _announce, _legacy, _write

    server: SmtpServer = smtp_server()
    _legacy(
        tmp_path,
        [
            (1, "a@example.com", "Ann", "en", "retail"),
            (2, "b@example.com", "B\x00b", "en", "retail"),
            (3, "c@example.com", "Cy", "en", "re\x00tail"),
        ],
    )
    _write(tmp_path, _announce("email", server.port), waves=[{"id": "pilot", "size": "rest"}])
    env = {k: v for k, v in os.environ.items() if k not in ("RUNBOOK_STATE", "RUNBOOK_FAULT")}
    r = subprocess.run(
        [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # not clean: two members failed
    assert "3 customers: 0 verified, 1 notified, 2 failed" in r.stdout
    with server.lock:
        assert [m.rcpt_tos for m in server.messages] == [["a@example.com"]]
    con = sqlite3.connect(tmp_path / ".runbook" / NAME / "state.db")
    try:
        failed = dict(con.execute("SELECT key, reason FROM entity WHERE state = 'failed'"))
        sent = con.execute("SELECT entity, state FROM outbox").fetchall()
    finally:
        con.close()
    assert failed == {
        2: "the message's name contains a NUL byte (\\x00): refused",
        3: "the message's body contains a NUL byte (\\x00): refused",
    }
    assert sent == [(1, "sent")]
