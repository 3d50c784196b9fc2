"""`notify` to a cohort's members on the PostgreSQL state backend (SPEC §7 "Messages per
entity", §8, §11; issue 14): each member is told once per wave attempt, the ledger's message
rows and told marks commit with the outbox rows in one fenced transaction, `customers` from
another role shows a member's messages with their delivery state (read from
`runbook.outbox`), a SIGKILL between queue and send never emails anyone twice, keys 1 and '1'
are two members told once each, and a NUL byte in a member's data fails that member alone.
Real servers only: PostgreSQL (``tests/servers/postgres.py``) and SMTP (aiosmtpd)."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine import test_state_postgres
from tests.engine.test_state_postgres import Team, run
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.servers
team = test_state_postgres.team  # the fixture: one database, two operators' roles

NAME = "tell"
ROWS = 30  # ids 1..30; every 10th has no e-mail (excluded: no-contact)
PILOT = 8


def _legacy(cwd: Path, rows: list[tuple[Any, ...]] | None = None) -> None:
    """legacy.db's customers (id untyped: 1 and '1' are two keys), with a name each."""
    if rows is None:
        rows = [
            (i, None if i % 10 == 0 else f"c{i}@example.com", f"Customer {i}", "en", "retail")
            for i in range(1, ROWS + 1)
        ]
    with sqlite3.connect(cwd / "legacy.db") as db:
        db.execute("CREATE TABLE customers (id, email TEXT, name TEXT, locale TEXT, segment TEXT)")
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", rows)


def _announce(channel: str, port: int | None = None) -> dict[str, Any]:
    body = "Hello {{ recipient.name }}, your move ({{ recipient.segment }}) is on {{ wave.id }}."
    step: dict[str, Any] = {
        "id": "announce",
        "action": "notify",
        "marks": "notified",
        "rollback": "none",
        "with": {
            "channel": channel,
            "from": "ops@example.org",
            "to": {"cohort": "customers"},
            "templates": {"en": {"subject": "Your move, {{ recipient.name }}", "body": body}},
        },
    }
    if port is not None:
        step["with"]["smtp"] = {"host": "127.0.0.1", "port": port}
    return step


def _write(cwd: Path, step: dict[str, Any], waves: list[dict[str, Any]] | None = None) -> None:
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": NAME},
        "vars": {"legacy_db": "sqlite:///legacy.db"},
        "cohorts": {
            "customers": {
                "source": {
                    "dsn": "{{ vars.legacy_db }}",
                    "query": "SELECT id, email, name, locale, segment FROM customers",
                },
                "key": "id",
                "attributes": ["email", "name", "locale", "segment"],
                "exclude": [{"reason": "no-contact", "where": "email IS NULL"}],
                "waves": waves or [{"id": "pilot", "size": PILOT}, {"id": "all", "size": "rest"}],
                "seed": 7,
            }
        },
        "phases": [{"id": "rollout", "waves": {"cohort": "customers"}, "steps": [step]}],
    }
    (cwd / "r.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _env(team: Team, role: str, **extra: str) -> dict[str, str]:
    env = team.env(role)
    env.pop("RUNBOOK_FAULT", None)
    return {**env, **extra}


def _received(server: SmtpServer) -> Counter[str]:
    """Recipient address -> messages received."""
    with server.lock:
        return Counter(r for m in server.messages for r in m.rcpt_tos)


def _ids(server: SmtpServer) -> dict[str, list[str]]:
    """Recipient address -> the Message-IDs received for it."""
    out: dict[str, list[str]] = {}
    with server.lock:
        got = list(server.messages)
    for m in got:
        for r in m.rcpt_tos:
            out.setdefault(r, []).append(str(m.message["Message-ID"]))
    return out


def _outbox(team: Team) -> list[tuple[Any, ...]]:
    """(entity, its JSON type, address, state, message_id, id) of the runbook's outbox rows."""
    return team.sql(
        "SELECT entity, jsonb_typeof(entity), address, state, message_id, id FROM runbook.outbox"
        " WHERE runbook = %s ORDER BY id",
        (NAME,),
    )


def _messages(team: Team) -> list[tuple[Any, ...]]:
    """(key, step, attempt, channel, message_id, state, outbox) of the ledger's message rows."""
    return team.sql(
        "SELECT key, step, attempt, channel, message_id, state, outbox FROM runbook.message"
        " WHERE runbook = %s ORDER BY seq",
        (NAME,),
    )


def _counts(team: Team) -> dict[tuple[str | None, str], int]:
    rows = team.sql(
        "SELECT wave, state, count(*) FROM runbook.entity WHERE runbook = %s GROUP BY wave, state",
        (NAME,),
    )
    return {(w, s): int(n) for w, s, n in rows}


def _eligible() -> list[int]:
    return [i for i in range(1, ROWS + 1) if i % 10]


# -- told once, seen from another role --------------------------------------------------------


def test_a_pilot_wave_told_by_email_on_postgresql_each_member_once_and_customers_shows_it(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    _legacy(tmp_path)
    _write(tmp_path, _announce("email", server.port))
    applied = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "30 customers: 0 verified, 27 notified, 3 excluded (no-contact)" in applied.stdout
    # every member exactly one e-mail, nobody else any
    eligible = _eligible()
    assert _received(server) == Counter({f"c{i}@example.com": 1 for i in eligible})
    assert not (tmp_path / ".runbook").exists()

    # the outbox rows name each member by its key as the ledger does (JSONB, a number)
    rows = _outbox(team)
    assert sorted(r[0] for r in rows) == eligible
    assert {(r[1], r[3]) for r in rows} == {("number", "sent")}
    ids = _ids(server)
    assert {r[2]: [r[4]] for r in rows} == ids  # the stored Message-IDs are the ones sent
    # the ledger's message rows: one `sent` per member, pointing at that member's outbox row
    by_id = {r[5]: r for r in rows}
    told = _messages(team)
    assert len(told) == len(eligible)
    for key, step, attempt, channel, mid, state, outbox in told:
        assert step in ("announce[pilot]", "announce[all]")
        assert (attempt, channel, state) == (1, "email", "sent")
        assert by_id[outbox][0] == key and by_id[outbox][4] == mid
    assert _counts(team) == {
        ("pilot", "notified"): PILOT,
        ("all", "notified"): len(eligible) - PILOT,
        (None, "excluded"): 3,
    }

    # `customers` from the other role: counts, then one member's journey with its message
    counts = run(tmp_path, _env(team, bo), "customers", "r.yaml", "--format", "json")
    assert counts.returncode == 0, counts.stdout + counts.stderr
    got = {(c["wave"], c["state"]): c["count"] for c in json.loads(counts.stdout)["counts"]}
    assert got == {
        ("pilot", "notified"): PILOT,
        ("all", "notified"): len(eligible) - PILOT,
        (None, "excluded"): 3,
    }
    key = team.sql(
        "SELECT key FROM runbook.entity WHERE runbook = %s AND wave = 'pilot' ORDER BY key LIMIT 1",
        (NAME,),
    )[0][0]
    one = run(tmp_path, _env(team, bo), "customers", "r.yaml", str(key), "--format", "json")
    assert one.returncode == 0, one.stdout + one.stderr
    (entity,) = json.loads(one.stdout)["entities"]
    assert entity["key"] == key and entity["state"] == "notified"
    assert [t["state"] for t in entity["transitions"]] == ["notified"]
    (message,) = entity["messages"]
    assert message["message_id"] == ids[f"c{key}@example.com"][0]
    assert (message["channel"], message["step"], message["attempt"]) == (
        "email",
        "announce[pilot]",
        1,
    )
    assert (message["state"], message["delivery"], message["recorded"]) == ("sent", "sent", "sent")
    text = run(tmp_path, _env(team, bo), "customers", "r.yaml", str(key))
    assert text.returncode == 0, text.stdout + text.stderr
    assert message["message_id"] in text.stdout

    # a second apply (the other role) tells nobody again
    again = run(tmp_path, _env(team, bo), "apply", "r.yaml", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert sum(_received(server).values()) == len(eligible)
    assert len(_outbox(team)) == len(eligible) and len(_messages(team)) == len(eligible)


def test_a_cohort_queued_in_the_outbox_on_postgresql_shows_queued_then_sent_after_the_relay(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    _legacy(tmp_path)
    _write(tmp_path, _announce("outbox"))
    applied = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert not server.messages  # queued: the relay delivers
    eligible = _eligible()
    assert sorted(r[0] for r in _outbox(team)) == eligible
    assert {r[3] for r in _outbox(team)} == {"queued"}
    assert len(_messages(team)) == len(eligible)  # told: queued for delivery, in the ledger

    def journey(key: int) -> dict[str, Any]:
        r = run(tmp_path, _env(team, bo), "customers", "r.yaml", str(key), "--format", "json")
        assert r.returncode == 0, r.stdout + r.stderr
        (entity,) = json.loads(r.stdout)["entities"]
        return dict(entity["messages"][0])

    assert journey(1)["state"] == "queued" and journey(1)["recorded"] == "sent"
    url = f"smtp://127.0.0.1:{server.port}"
    relayed = run(tmp_path, _env(team, bo), "outbox", "r.yaml", "--relay", url)
    assert relayed.returncode == 0, relayed.stdout + relayed.stderr
    assert relayed.stdout.splitlines()[0] == f"relay to {url}: {len(eligible)} sent"
    assert _received(server) == Counter({f"c{i}@example.com": 1 for i in eligible})
    seen = journey(1)
    assert seen["state"] == "sent" and seen["message_id"] == _ids(server)["c1@example.com"][0]


# -- a crash between queue and send ------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_between_queue_and_send_to_a_cohort_on_postgresql_never_emails_twice(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    """Killed right after the second outbox commit: the first member sent and told, the
    second `sending` (never sent). The other role resumes: the second is `uncertain` (not
    sent again, said in the run's outcome and in the outbox), the others once each."""
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    _legacy(tmp_path)
    _write(tmp_path, _announce("email", server.port), waves=[{"id": "pilot", "size": "rest"}])
    env = _env(team, ana, RUNBOOK_FAULT="outbox-committed:2")
    killed = run(tmp_path, env, "apply", "r.yaml", "--yes")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    rows = _outbox(team)
    assert [r[3] for r in rows] == ["sent", "sending"]
    first, cut = rows[0][0], rows[1][0]
    assert _received(server) == Counter({f"c{first}@example.com": 1})
    assert [(m[0], m[5], m[6]) for m in _messages(team)] == [(first, "sent", rows[0][5])]

    resumed = run(tmp_path, _env(team, bo), "apply", "r.yaml", "--yes")
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # not clean: one uncertain
    assert f"1 member(s) not told (uncertain sends) (first: {cut})" in resumed.stdout
    eligible = _eligible()
    received = _received(server)
    assert set(received.values()) == {1}  # nobody twice
    assert set(received) == {f"c{i}@example.com" for i in eligible if i != cut}
    states = {r[0]: r[3] for r in _outbox(team)}
    assert states == {i: ("uncertain" if i == cut else "sent") for i in eligible}
    told = [m[0] for m in _messages(team) if m[5] == "sent"]
    assert sorted(told) == sorted(i for i in eligible if i != cut)  # once each, by constraint
    status = run(tmp_path, _env(team, bo), "status", "r.yaml", "--format", "json")
    (step,) = json.loads(status.stdout)["steps"]
    assert step["outputs"]["uncertain"] == 1
    assert step["outputs"]["uncertain_recipients"] == [f"c{cut}@example.com"]
    assert len(eligible) - 1 == _counts(team)[("pilot", "notified")]


# -- keys of two types ---------------------------------------------------------------------------------


def test_keys_1_and_text_1_are_each_told_once_on_postgresql(
    team: Team, tmp_path: Path, smtp_server: Any
) -> None:
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    _legacy(
        tmp_path,
        [
            (1, "int@example.com", "Int", "en", "retail"),
            ("1", "text@example.com", "Text", "en", "retail"),
        ],
    )
    _write(tmp_path, _announce("email", server.port), waves=[{"id": "pilot", "size": "rest"}])
    applied = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _received(server) == Counter({"int@example.com": 1, "text@example.com": 1})
    rows = _outbox(team)
    by_type = {r[1]: r for r in rows}
    assert set(by_type) == {"number", "string"} and len(rows) == 2
    assert by_type["number"][0] == 1 and by_type["number"][2] == "int@example.com"
    assert by_type["string"][0] == "1" and by_type["string"][2] == "text@example.com"
    assert by_type["number"][4] != by_type["string"][4]
    told = {(type(m[0]).__name__, m[6]) for m in _messages(team)}
    assert told == {("int", by_type["number"][5]), ("str", by_type["string"][5])}
    got = run(tmp_path, _env(team, bo), "customers", "r.yaml", "1", "--format", "json")
    assert got.returncode == 0, got.stdout + got.stderr
    entities = {type(e["key"]).__name__: e for e in json.loads(got.stdout)["entities"]}
    assert set(entities) == {"int", "str"}
    ids = _ids(server)
    for kind, address in (("int", "int@example.com"), ("str", "text@example.com")):
        (message,) = entities[kind]["messages"]
        assert message["message_id"] == ids[address][0] and message["state"] == "sent"
    again = run(tmp_path, _env(team, bo), "apply", "r.yaml", "--yes")
    assert again.returncode == 0 and sum(_received(server).values()) == 2


# -- a NUL byte in a member's data ---------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["email", "outbox"])
def test_a_nul_byte_in_a_members_data_fails_that_member_alone_on_postgresql(
    team: Team, tmp_path: Path, smtp_server: Any, channel: str
) -> None:
    """PostgreSQL stores no NUL in TEXT (SQLite does): a name with one, or a body rendered
    from an attribute with one, fails that member's message (failed, with the reason); the
    others are told, and the state and the run go on."""
    ana, bo = list(team.roles)
    server: SmtpServer = smtp_server()
    _legacy(
        tmp_path,
        [
            (1, "a@example.com", "Ann", "en", "retail"),
            (2, "b@example.com", "B\x00b", "en", "retail"),  # in the name (a header, the body)
            (3, "c@example.com", "Cy", "en", "re\x00tail"),  # only in the rendered body
            (4, "d@example.com", "Di", "en", "retail"),
        ],
    )
    port = server.port if channel == "email" else None
    _write(tmp_path, _announce(channel, port), waves=[{"id": "pilot", "size": "rest"}])
    applied = run(tmp_path, _env(team, ana), "apply", "r.yaml", "--yes")
    # the step succeeded for the others; the run is not clean: two members failed
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert "Traceback" not in applied.stdout + applied.stderr
    assert "cannot write the state" not in applied.stdout + applied.stderr
    assert "4 customers: 0 verified, 2 notified, 2 failed" in applied.stdout
    failed = dict(
        team.sql(
            "SELECT key, reason FROM runbook.entity WHERE runbook = %s AND state = 'failed'",
            (NAME,),
        )
    )
    assert failed == {
        2: "the message's name contains a NUL byte (\\x00): refused",
        3: "the message's body contains a NUL byte (\\x00): refused",
    }
    assert {r[0]: r[3] for r in _outbox(team)} == {
        1: "sent" if channel == "email" else "queued",
        4: "sent" if channel == "email" else "queued",
    }
    assert sorted(m[0] for m in _messages(team)) == [1, 4]
    if channel == "email":
        assert _received(server) == Counter({"a@example.com": 1, "d@example.com": 1})
    status = run(tmp_path, _env(team, bo), "status", "r.yaml", "--format", "json")
    (step,) = json.loads(status.stdout)["steps"]
    assert step["status"] == "succeeded" and step["outputs"]["refused"] == 2
    journey = run(tmp_path, _env(team, bo), "customers", "r.yaml", "2", "--format", "json")
    assert journey.returncode == 0, journey.stdout + journey.stderr
    (entity,) = json.loads(journey.stdout)["entities"]
    assert entity["state"] == "failed" and "NUL byte" in entity["reason"]
    assert entity["messages"] == []
    csv = run(tmp_path, _env(team, bo), "customers", "r.yaml", "--format", "csv")
    assert csv.returncode == 0, csv.stdout + csv.stderr
    lines = csv.stdout.splitlines()
    assert len(lines) == 5  # the header, and each member
    assert "B\\x00b" in next(line for line in lines if line.startswith("2,"))  # shown escaped
