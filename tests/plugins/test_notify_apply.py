"""``notify``, ``check`` and ``http`` through ``runbook apply``: the engine's durable records,
its template context, a real SIGKILL in the middle of a send, and secrets kept off disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RUNBOOK_BIN
from tests.engine.helpers import journal
from tests.servers.http import HttpServer
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.servers

PASSWORD = "canary-smtp-pw-5f3e9d"
PEOPLE = [
    {"address": "ana@example.com.br", "name": "Ana", "locale": "pt-BR"},
    {"address": "maria@example.mx", "name": "María", "locale": "es"},
    {"address": "bob@example.com", "name": "Bob", "locale": "en"},
]
TEMPLATES = {
    "pt-BR": {"subject": "Migração em {{ vars.date }}", "body": "Olá {{ recipient.name }}"},
    "es": {"subject": "Migración el {{ vars.date }}", "body": "Hola {{ recipient.name }}"},
    "en": {"subject": "Migration on {{ vars.date }}", "body": "Hello {{ recipient.name }}"},
}


def write_runbook(path: Path, smtp: dict[str, Any], steps_before: list[Any] | None = None) -> None:
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "tell-customers"},
        "vars": {"date": "2026-12-01", "metrics_url": "http://127.0.0.1:1/metrics"},
        "secrets": {"smtp_password": {"env": "TEST_SMTP_PASSWORD"}},
        "phases": [
            {
                "id": "comms",
                "steps": [
                    *(steps_before or []),
                    {
                        "id": "tell",
                        "action": "notify",
                        "rollback": "none",
                        "with": {
                            "channel": "email",
                            "smtp": smtp,
                            "from": "ops@example.org",
                            "to": PEOPLE,
                            "templates": TEMPLATES,
                        },
                    },
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def step(doc: dict[str, Any], sid: str) -> dict[str, Any]:
    (found,) = [s for s in doc["steps"] if s["id"] == sid]
    return found


def test_apply_gates_then_notifies_once_with_the_password_kept_secret(
    runbook: Any,
    smtp_server: Any,
    http_server: HttpServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server: SmtpServer = smtp_server(auth=("ops", PASSWORD))
    monkeypatch.setenv("TEST_SMTP_PASSWORD", PASSWORD)
    http_server.metric_values = [0.01, 0.015]
    gate = {
        "id": "gate",
        "action": "check",
        "with": {
            "url": "{{ vars.metrics_url }}",
            "json_path": "metrics.error_rate",
            "condition": "value < 0.02 and values | length <= 2",
            "count": 2,
            "interval": "0s",
        },
    }
    smtp = {
        "host": "127.0.0.1",
        "port": server.port,
        "security": "starttls",
        "username": "ops",
        "password": "{{ secrets.smtp_password }}",
        "ca_file": str(server.cert_file),
    }
    write_runbook(Path("rb.yaml"), smtp, [gate])
    metrics = f"metrics_url={http_server.url}/metrics"
    r = runbook("apply", "rb.yaml", "--yes", "--var", metrics)
    assert r.code == 0, r.output
    subjects = {m.rcpt_tos[0]: m.message["Subject"] for m in server.messages}
    assert subjects == {
        "ana@example.com.br": "Migração em 2026-12-01",
        "maria@example.mx": "Migración el 2026-12-01",
        "bob@example.com": "Migration on 2026-12-01",
    }
    doc = json.loads(runbook("status", "rb.yaml", "--format", "json").out)
    gate = step(doc, "gate")["outputs"]
    assert (gate["values"], gate["passed"], gate["failed"]) == ([0.01, 0.015], 2, 0)
    assert (gate["inconclusive"], gate["outcome"]) == (0, "passed")
    assert step(doc, "tell")["outputs"]["sent"] == 3

    r = runbook("apply", "rb.yaml", "--yes", "--var", metrics)
    assert r.code == 0 and len(server.messages) == 3  # nothing to do: nobody told twice
    # --replace stays inside the run (SPEC §11): a message is once per (run, step, attempt,
    # recipient), so the step runs again and sends nothing twice
    run_id = doc["run"]["id"]
    r = runbook("apply", "rb.yaml", "--yes", "--var", metrics, "--replace", "tell")
    assert r.code == 0, r.output
    doc = json.loads(runbook("status", "rb.yaml", "--format", "json").out)
    assert doc["run"]["id"] == run_id
    outputs = step(doc, "tell")["outputs"]
    assert (outputs["sent"], outputs["skipped_already_sent"]) == (0, 3)
    assert len(server.messages) == 3

    measured = [
        r for r in journal(".runbook", "tell-customers") if r.get("kind") == "check.measured"
    ]
    assert len(measured) == 2
    for f in Path(".").rglob("*"):
        if f.is_file():
            assert PASSWORD not in f.read_text(errors="replace"), f
    assert PASSWORD not in r.output


@pytest.mark.slow
def test_sigkill_during_a_send_leaves_that_recipient_uncertain_and_nobody_twice(
    smtp_server: Any, tmp_path: Path
) -> None:
    # sent in the order of their keys (to:ana…, to:bob…, to:maria…): bob is the second
    server: SmtpServer = smtp_server(hold_for={"bob@example.com"})
    work = Path.cwd()
    write_runbook(work / "rb.yaml", {"host": "127.0.0.1", "port": server.port})
    env = {**os.environ, "TEST_SMTP_PASSWORD": "unused"}
    cmd = [RUNBOOK_BIN, "apply", "rb.yaml", "--yes"]
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert server.holding.wait(60), "the send to bob never began"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    server.release.set()
    assert [m.rcpt_tos for m in server.messages] == [["ana@example.com.br"], ["bob@example.com"]]

    again = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    status = subprocess.run(
        [RUNBOOK_BIN, "status", "rb.yaml", "--format", "json"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    outputs = step(json.loads(status.stdout), "tell")["outputs"]
    assert (outputs["sent"], outputs["skipped_already_sent"], outputs["uncertain"]) == (1, 1, 1)
    assert outputs["uncertain_recipients"] == ["bob@example.com"]
    received = sorted(m.rcpt_tos[0] for m in server.messages)
    assert received == ["ana@example.com.br", "bob@example.com", "maria@example.mx"]


def test_one_bad_customer_row_fails_alone_and_progress_tells_the_truth(runbook: Any) -> None:
    """The audit of issue 10, item 9: a `recipients_query` row `evil@example.com\\r\\nBcc: …`
    failed the whole step before anything was sent, and the progress line said `5/5 sent`
    while 2 were refused."""
    import sqlite3

    with sqlite3.connect("crm.db") as db:
        db.execute("CREATE TABLE c (address TEXT, name TEXT)")
        db.executemany(
            "INSERT INTO c VALUES (?, ?)",
            [
                ("ana@example.com", "Ana"),
                ("evil@example.com\r\nBcc: all@example.com", "Eve"),
                ("bob@example.com", "Bob"),
                ("carol@example.com", "Carol\r\nBcc: all@example.com"),
                ("dan@example.com", "Dan"),
            ],
        )
    Path("n.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "runbook/v1",
                "kind": "Runbook",
                "metadata": {"name": "ntest"},
                "phases": [
                    {
                        "id": "p",
                        "steps": [
                            {
                                "id": "tell",
                                "action": "notify",
                                "with": {
                                    "channel": "outbox",
                                    "outbox": "out",
                                    "dsn": "sqlite:///crm.db",
                                    "recipients_query": "SELECT address, name FROM c",
                                    "message": "Hello {{ recipient.name }}",
                                },
                                "rollback": "none",
                            }
                        ],
                    }
                ],
            }
        )
    )
    r = runbook("apply", "n.yaml", "--yes")
    assert r.code == 1, r.output
    assert len(list(Path("out").iterdir())) == 3  # the three good ones were sent
    assert "notify: 3 of 5 queued (2 refused)" in r.out and "5/5" not in r.out
    step = json.loads(runbook("status", "n.yaml", "--format", "json").out)["steps"][0]
    assert step["status"] == "failed" and step["outputs"]["sent"] == 3
    error = step["error"]
    assert error.startswith("notify: 2 of 5 recipient(s) refused: ")
    assert "evil@example.com\\r\\nBcc: all@example.com (a line break in the address)" in error
    assert "carol@example.com (" in error and "\r" not in error and "\n" not in error
