"""The outbox on the PostgreSQL state backend (SPEC §8, §10-§11; issue 14): `notify` steps to
explicit recipients (addresses, a webhook, a contingency) write `runbook.outbox`; the email
channel sends once per recipient to a real SMTP server; `runbook outbox` counts, exports and
relays from other processes and roles; a SIGKILL between queue and send never sends twice nor
reports sent what was not; two relays on one database never claim one row (a notify to a
cohort's members: ``test_tell_postgres.py``). Real servers only (``tests/servers``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.engine import test_state_postgres
from tests.engine.helpers import RUNBOOK, runbook_yaml, sh
from tests.engine.test_state_postgres import Team, run
from tests.servers.http import HttpServer
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.servers
team = test_state_postgres.team  # the fixture: one database, two operators' roles

PEOPLE = ["ana@example.org", "bo@example.org", "cy@example.org", "di@example.org"]
SECRET = "canary-pg-outbox-7d1c"


def _email(sid: str, port: int, to: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "action": "notify",
        "rollback": "none",
        "with": {
            "channel": "email",
            "smtp": {"host": "127.0.0.1", "port": port},
            "from": "ops@example.org",
            "to": to,
            "subject": "Your move",
            "message": "Hello {{ recipient.address }}, token {{ secrets.token }}.",
            **extra,
        },
    }


def _queue(sid: str, to: list[str]) -> dict[str, Any]:
    return {
        "id": sid,
        "action": "notify",
        "rollback": "none",
        "with": {
            "channel": "outbox",
            "from": "ops@example.org",
            "to": to,
            "subject": "Queued {{ recipient.address }}",
            "message": "Hello {{ recipient.address }}.",
        },
    }


def _write(cwd: Path, steps: list[dict[str, Any]], **top: Any) -> None:
    top.setdefault("secrets", {"token": {"env": "PG_OUTBOX_TOKEN"}})
    (cwd / "r.yaml").write_text(runbook_yaml("mail", phases=[{"id": "p", "steps": steps}], **top))


def _env(team: Team, role: str, **extra: str) -> dict[str, str]:
    env = team.env(role)
    env.pop("RUNBOOK_FAULT", None)
    return {**env, "PG_OUTBOX_TOKEN": SECRET, **extra}


def _ids(server: SmtpServer) -> Counter[str]:
    with server.lock:
        got = list(server.messages)
    return Counter(str(m.message["Message-ID"]) for m in got)


def _rows(team: Team, where: str = "true") -> list[tuple[Any, ...]]:
    return team.sql(
        "SELECT step, address, channel, state, message_id FROM runbook.outbox"
        f" WHERE runbook = 'mail' AND {where} ORDER BY id"
    )


def _received(server: SmtpServer) -> list[str]:
    with server.lock:
        return sorted(r for m in server.messages for r in m.rcpt_tos)


# -- sent once, seen from another process --------------------------------------------------


def test_a_notify_step_on_postgresql_sends_one_email_per_recipient_and_outbox_shows_them(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    _write(tmp_path, [sh("a", "true"), {**_email("tell", server.port, PEOPLE), "needs": ["a"]}])
    first = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _received(server) == sorted(PEOPLE)
    assert set(_ids(server).values()) == {1}
    rows = _rows(team)
    assert sorted(r[1] for r in rows) == sorted(PEOPLE)
    assert {(r[0], r[2], r[3]) for r in rows} == {("tell", "email", "sent")}
    assert Counter(r[4] for r in rows) == _ids(server)  # the Message-IDs sent are the stored ones
    for msg in (m.message for m in server.messages):
        assert SECRET in str(msg.get_content())  # the recipient gets the secret...
    stored = team.sql("SELECT subject || body || name FROM runbook.outbox")
    assert stored and all(SECRET not in t for (t,) in stored)  # ...the state never does
    assert all(SECRET not in rec for (_, rec) in team.sql("SELECT seq, rec FROM runbook.journal"))

    # another operator, another process: the outbox as the database holds it
    seen = run(tmp_path, _env(team, bo), "outbox", "r.yaml", "--format", "json")
    assert seen.returncode == 0, seen.stdout + seen.stderr
    doc = json.loads(seen.stdout)
    assert doc["runbook"] == "mail" and doc["total"] == 4
    assert doc["counts"] == [{"channel": "email", "state": "sent", "count": 4}]
    text = run(tmp_path, _env(team, bo), "outbox", "r.yaml")
    assert text.returncode == 0, text.stdout + text.stderr
    head, line = text.stdout.splitlines()
    assert head.split() == ["channel", "queued", "sending", "sent", "uncertain", "failed", "total"]
    assert line.split() == ["email", "0", "0", "4", "0", "0", "4"]
    assert not (tmp_path / ".runbook").exists()

    # a second apply (the other role) sends nobody again
    again = run(tmp_path, _env(team, bo), "apply", "r.yaml", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(server.messages) == 4 and len(_rows(team)) == 4


def test_outbox_channel_on_postgresql_is_relayed_once_from_another_role_and_exported(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    _write(tmp_path, [_queue("queue", PEOPLE)])
    r = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {row[3] for row in _rows(team)} == {"queued"} and len(_rows(team)) == 4
    assert not server.messages  # queued, not sent: the relay delivers
    status = run(tmp_path, _env(team, bo), "status", "r.yaml", "--format", "json")
    (step,) = json.loads(status.stdout)["steps"]
    assert (step["outputs"]["sent"], step["outputs"]["skipped_already_sent"]) == (4, 0)

    exported = run(tmp_path, _env(team, bo), "outbox", "r.yaml", "--export", "out")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "wrote 4 message(s) to out" in exported.stdout
    assert len(list((tmp_path / "out" / "queue").glob("*.eml"))) == 4
    assert {row[3] for row in _rows(team)} == {"queued"}  # an export changes nothing

    url = f"smtp://127.0.0.1:{server.port}"
    relayed = run(tmp_path, _env(team, bo), "outbox", "r.yaml", "--relay", url)
    assert relayed.returncode == 0, relayed.stdout + relayed.stderr
    assert relayed.stdout.splitlines()[0] == f"relay to {url}: 4 sent"
    assert _received(server) == sorted(PEOPLE) and set(_ids(server).values()) == {1}
    assert {row[3] for row in _rows(team)} == {"sent"}
    assert Counter(row[4] for row in _rows(team)) == _ids(server)
    assert len(team.sql("SELECT DISTINCT claimed_by FROM runbook.outbox")) == 1
    twice = run(tmp_path, _env(team, ana), "outbox", "r.yaml", "--relay", url)
    assert twice.returncode == 0 and twice.stdout.startswith(f"relay to {url}: 0 sent")
    assert len(server.messages) == 4


def _pid_of(claimant: str) -> str:
    return claimant.split(" ")[1]


def test_a_webhook_and_a_contingency_notify_on_postgresql_are_sent_once(
    team: Team, tmp_path: Path, http_server: HttpServer
) -> None:
    ana, _ = list(team.roles)
    hook = {
        "id": "hook",
        "action": "notify",
        "rollback": "none",
        "with": {"channel": "webhook", "url": http_server.url + "/hook", "message": "moved"},
    }
    alarm = {
        "id": "alarm",
        "action": "notify",
        "with": {
            "channel": "webhook",
            "url": http_server.url + "/alarm",
            "message": "{{ failed_step.id }} failed",
        },
    }
    _write(
        tmp_path,
        [hook, sh("boom", "exit 3", needs=["hook"], risks=["loss"])],
        risks=[{"id": "loss", "likelihood": "low", "impact": "high", "contingencies": ["alarm"]}],
        contingencies=[alarm],
    )
    r = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "contingencies fired in this run: alarm" in r.stdout
    paths = Counter(req.path for req in http_server.requests)
    assert paths == Counter({"/hook": 1, "/alarm": 1})
    alarm_body = next(q for q in http_server.requests if q.path == "/alarm").json
    assert "boom failed" in json.dumps(alarm_body)
    rows = team.sql(
        "SELECT step, channel, state FROM runbook.outbox WHERE runbook = 'mail' ORDER BY id"
    )
    assert [(c, s) for _, c, s in rows] == [("webhook", "sent"), ("webhook", "sent")]
    assert rows[0][0] == "hook" and rows[1][0] != "hook"
    again = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")  # boom retried only
    assert again.returncode == 1, again.stdout + again.stderr
    assert Counter(req.path for req in http_server.requests)["/hook"] == 1


# -- crashes --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "told", "uncertain"),
    [
        # inside the second write, before COMMIT: ana was sent, her `sent` rolled back with
        # bo's `sending`: ana is uncertain (received once), bo was never begun
        ("outbox:2", ["ana@example.org"], "ana@example.org"),
        # right after the second COMMIT (ana sent; bo `sending`), before bo's send
        ("outbox-committed:2", ["ana@example.org"], "bo@example.org"),
    ],
)
def test_sigkill_between_queue_and_send_on_postgresql_never_sends_twice(
    team: Team,
    tmp_path: Path,
    smtp_server: Any,
    fault: str,
    told: list[str],
    uncertain: str,
) -> None:
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    _write(tmp_path, [_email("tell", server.port, PEOPLE)])
    killed = run(tmp_path, _env(team, ana, RUNBOOK_FAULT=fault), "apply", "r.yaml", "--yes")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert _received(server) == told
    states = {row[1]: row[3] for row in _rows(team)}
    assert states == {uncertain: "sending", **{t: "sent" for t in told if t != uncertain}}

    resumed = run(tmp_path, _env(team, bo), "apply", "r.yaml", "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    received = _received(server)
    assert set(_ids(server).values()) == {1}  # nobody twice
    assert received == sorted(p for p in PEOPLE if p != uncertain or p in told)
    states = {row[1]: row[3] for row in _rows(team)}
    assert states == {p: ("uncertain" if p == uncertain else "sent") for p in PEOPLE}
    reason = team.sql("SELECT reason FROM runbook.outbox WHERE address = %s", (uncertain,))
    assert reason == [("the send was cut by a crash or a stop",)]
    status = run(tmp_path, _env(team, bo), "status", "r.yaml", "--format", "json")
    (step,) = json.loads(status.stdout)["steps"]
    outputs = step["outputs"]
    assert outputs["uncertain"] == 1 and outputs["uncertain_recipients"] == [uncertain]
    assert outputs["sent"] == len(PEOPLE) - 1 - len([t for t in told if t != uncertain])


@pytest.mark.slow
def test_a_relay_killed_mid_send_on_postgresql_leaves_one_uncertain_never_sent_twice(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    many = [f"m{i:02d}@example.org" for i in range(12)]
    _write(tmp_path, [_queue("queue", many)])
    assert run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes").returncode == 0
    held = _rows(team)[4][1]  # the relay's fifth message
    server.hold_for.add(held)
    url = f"smtp://127.0.0.1:{server.port}"
    proc = subprocess.Popen(
        [RUNBOOK, "outbox", "r.yaml", "--relay", url], cwd=tmp_path, env=_env(team, bo),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert server.holding.wait(60), "the relay never reached the held message"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    server.release.set()
    assert len(server.messages) == 5  # the held one was received: the relay never knew
    assert [r[1] for r in _rows(team, "state = 'sending'")] == [held]

    done = run(tmp_path, _env(team, ana), "outbox", "r.yaml", "--relay", url)
    assert done.returncode == 1, done.stdout + done.stderr  # one message left uncertain
    assert "7 sent" in done.stdout
    assert "1 message(s) found `sending` by a relay that is gone" in done.stdout
    assert "not delivered: 1 uncertain" in done.stderr
    assert set(_ids(server).values()) == {1} and len(_ids(server)) == 12  # nobody twice
    ((state, why),) = team.sql(
        "SELECT state, reason FROM runbook.outbox WHERE address = %s", (held,)
    )
    assert state == "uncertain" and f"the relay (pid {proc.pid} on " in why
    again = run(tmp_path, _env(team, bo), "outbox", "r.yaml", "--relay", url)
    assert again.returncode == 1 and len(server.messages) == 12  # not resent unprompted


QUEUED = [f"c{i:04d}@example.org" for i in range(2_500)]  # 3 batches of 1,000, the last half


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "left"),
    [
        ("outbox:2", 1_000),  # killed inside the second batch: only the first committed
        ("outbox-committed:2", 2_000),  # right after the second COMMIT
        ("outbox-committed:3", 2_500),  # the whole step queued, its success not recorded
    ],
)
def test_sigkill_inside_a_batch_on_postgresql_leaves_whole_batches_and_queues_each_once(
    team: Team, tmp_path: Path, fault: str, left: int
) -> None:
    ana, bo = list(team.roles)
    _write(tmp_path, [_queue("queue", QUEUED)])
    killed = run(tmp_path, _env(team, ana, RUNBOOK_FAULT=fault), "apply", "r.yaml", "--yes")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert team.sql("SELECT count(*) FROM runbook.outbox") == [(left,)]
    resumed = run(tmp_path, _env(team, bo), "apply", "r.yaml", "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    got = team.sql(
        "SELECT count(*), count(DISTINCT recipient), count(DISTINCT message_id),"
        " count(DISTINCT address) FROM runbook.outbox WHERE runbook = 'mail' AND state = 'queued'"
    )
    assert got == [(2_500, 2_500, 2_500, 2_500)]  # every recipient once
    status = run(tmp_path, _env(team, bo), "status", "r.yaml", "--format", "json")
    (step,) = json.loads(status.stdout)["steps"]
    assert step["status"] == "succeeded"
    assert (step["outputs"]["sent"], step["outputs"]["skipped_already_sent"]) == (
        2_500 - left,
        left,
    )


@pytest.mark.slow
def test_a_holder_fenced_between_two_sends_records_nothing_more_and_sends_nobody_twice(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    """`unlock --force` while the SMTP server holds its reply to bo: the holder's next outbox
    write (bo `sent`, cy `sending`) is fenced, so it exits 4 having recorded neither and never
    sent cy; the resume makes bo uncertain (he got it) and sends the others once."""
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server(hold_for={PEOPLE[1]})
    _write(tmp_path, [_email("tell", server.port, PEOPLE)])
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "3s"], cwd=tmp_path,
        env=_env(team, ana), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.holding.wait(60), "the send to bo never began"
        unlocked = run(tmp_path, _env(team, bo), "unlock", "r.yaml", "--force")
        assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
        before = team.journal("mail")
    finally:
        server.release.set()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, out + err
    assert "lost the lease of the state to" in err
    assert _received(server) == sorted(PEOPLE[:2])
    assert {row[1]: row[3] for row in _rows(team)} == {PEOPLE[0]: "sent", PEOPLE[1]: "sending"}
    assert team.journal("mail") == before  # nothing written after the unlock

    resumed = run(tmp_path, _env(team, bo), "apply", "r.yaml", "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _received(server) == sorted(PEOPLE) and set(_ids(server).values()) == {1}
    states = {row[1]: row[3] for row in _rows(team)}
    assert states == {p: ("uncertain" if p == PEOPLE[1] else "sent") for p in PEOPLE}


# -- two relays -------------------------------------------------------------------------------------


def test_two_relay_processes_on_one_database_never_claim_the_same_row(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    many = [f"r{i:03d}@example.org" for i in range(60)]
    _write(tmp_path, [_queue("queue", many)])
    assert run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes").returncode == 0
    first = _rows(team)[0][1]
    server.hold_for.add(first)  # relay A holds the first message while B delivers
    url = f"smtp://127.0.0.1:{server.port}"
    cmd = [RUNBOOK, "outbox", "r.yaml", "--relay", url]
    a = subprocess.Popen(cmd, cwd=tmp_path, env=_env(team, ana), stdout=subprocess.PIPE, text=True)
    try:
        assert server.holding.wait(60), "relay A never reached the first message"
        b = run(tmp_path, _env(team, bo), "outbox", "r.yaml", "--relay", url)
    finally:
        server.release.set()
        out_a, _ = a.communicate(timeout=120)
    # B left A's message to A (`sending`, its claimant alive): not delivered by B, exit 1
    assert b.returncode == 1, b.stdout + b.stderr
    assert b.stdout.startswith(f"relay to {url}: 59 sent"), b.stdout
    assert "not delivered: 1 sending" in b.stderr
    assert a.returncode == 0, out_a
    assert out_a.startswith(f"relay to {url}: 1 sent"), out_a
    assert set(_ids(server).values()) == {1} and len(_ids(server)) == 60
    claims = team.sql(
        "SELECT claimed_by, count(*) FROM runbook.outbox WHERE state = 'sent'"
        " GROUP BY claimed_by ORDER BY count(*)"
    )
    assert [n for _, n in claims] == [1, 59]
    assert _pid_of(claims[0][0]) == str(a.pid) and _pid_of(claims[1][0]) != str(a.pid)


def test_two_relay_queues_racing_on_one_database_claim_disjoint_rows(
    team: Team, tmp_path: Path
) -> None:
    """Two connections claim in a tight loop at once (no send): SKIP LOCKED and the state
    check keep every claim to one queue."""
    from runbook_engine.state import pg
    from runbook_engine.state.delivery import RelayQueue

    ana, _ = list(team.roles)
    many = [f"q{i:03d}@example.org" for i in range(400)]
    _write(tmp_path, [_queue("queue", many)])
    assert run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes").returncode == 0
    got: dict[str, list[int]] = {"one": [], "two": []}
    start = threading.Barrier(2)

    def claim(who: str) -> None:
        db = pg.open_db(team.admin, "mail", write=False)
        assert db is not None
        try:
            queue = RelayQueue(db, who=f"tester {who} -")
            start.wait()
            done = None
            while (c := queue.next(done)) is not None:
                got[who].append(c.id)
                done = (c.id, "sent", None)
            queue.finish(done)
        finally:
            db.close()

    threads = [threading.Thread(target=claim, args=(w,)) for w in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    one, two = set(got["one"]), set(got["two"])
    assert not one & two  # never the same row
    assert one and two, (len(one), len(two))  # both claimed, at once
    assert len(one) + len(two) == 400 == len(got["one"]) + len(got["two"])
    assert team.sql("SELECT state, count(*) FROM runbook.outbox GROUP BY state") == [("sent", 400)]
    by = dict(team.sql("SELECT claimed_by, count(*) FROM runbook.outbox GROUP BY claimed_by"))
    assert by == {
        k: v for k, v in {"tester one -": len(one), "tester two -": len(two)}.items() if v
    }


# -- state init ---------------------------------------------------------------------------------


def test_state_init_migrates_a_version_2_schema_to_4_keeping_its_runbooks(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    ana, _ = list(team.roles)
    server: SmtpServer = smtp_server()
    (tmp_path / "old.yaml").write_text(
        runbook_yaml("old", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    )
    assert run(tmp_path, _env(team, ana), "apply", "old.yaml", "--yes").returncode == 0
    # as version 2 left it: neither the ledger's tables (version 3) nor the outbox (4)
    team.sql(
        "DROP TABLE runbook.outbox, runbook.cohort, runbook.entity, runbook.transition,"
        " runbook.message"
    )
    team.sql("UPDATE runbook.meta SET value = '2' WHERE key = 'version'")
    _write(tmp_path, [_email("tell", server.port, PEOPLE[:2])])
    old = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    assert old.returncode == 2, old.stdout + old.stderr
    assert "the state schema is at version 2, this program needs 4: migrate it with" in old.stderr
    assert not server.messages

    migrated = run(tmp_path, dict(os.environ), "state", "init", team.admin)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated the state schema runbook from version 2 to 4" in migrated.stdout
    assert (
        "grant the operators' roles SELECT, INSERT, UPDATE on the tables it added: "
        "runbook.cohort, runbook.entity, runbook.transition, runbook.message, runbook.outbox"
        in migrated.stdout
    )
    assert team.sql("SELECT value FROM runbook.meta WHERE key = 'version'") == [("4",)]
    # a table made by the migration has no grants yet: exit 2 before anything, naming them
    # (the ledger's tables of version 3 first, then the outbox of version 4)
    for table in ("cohort", "outbox"):
        denied = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
        assert denied.returncode == 2, denied.stdout + denied.stderr
        assert (
            "the role may not use the runbook state (no SELECT, INSERT, UPDATE on the table "
            f"runbook.{table})" in denied.stderr
        )
        assert "Traceback" not in denied.stdout + denied.stderr
        assert not server.messages
        assert team.sql("SELECT runbook FROM runbook.state") == [("old",)]
        assert team.sql("SELECT count(*) FROM runbook.journal WHERE runbook = 'mail'") == [(0,)]
        if table == "cohort":
            for t in ("cohort", "entity", "transition", "message"):
                team.sql(f"GRANT SELECT, INSERT, UPDATE ON runbook.{t} TO {team.db}_operators")

    team.sql(f"GRANT SELECT, INSERT, UPDATE ON runbook.outbox TO {team.db}_operators")
    applied = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _received(server) == sorted(PEOPLE[:2])
    audit = run(tmp_path, _env(team, ana), "audit", "old.yaml")
    assert audit.returncode == 0 and "chain holds" in audit.stdout, audit.stdout
