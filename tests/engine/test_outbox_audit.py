"""Issue 13 audit: a bad relay option is bad usage before any message is claimed; empty
options are refused; a journey shows a queued message as queued, not sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.engine.test_outbox import PEOPLE, _cohort_runbook, rows, runbook_file, tell
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.servers


@pytest.mark.parametrize("ca", ["missing.pem", "empty.pem", "garbage.pem"])
def test_a_bad_ca_file_is_exit_2_before_anything_is_claimed(
    runbook: Any, smtp_server: Any, ca: str
) -> None:
    server: SmtpServer = smtp_server(auth=("ops", "pw"))
    Path("empty.pem").write_text("")
    Path("garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    runbook_file(tell(to=PEOPLE[:5]))
    assert runbook("apply", "r.yaml", "--yes").code == 0
    before = rows("SELECT id, state FROM outbox ORDER BY id")
    assert [s for _, s in before] == ["queued"] * 5
    r = runbook(
        "outbox", "r.yaml", "--relay", f"smtp://ops:pw@127.0.0.1:{server.port}", "--ca-file", ca
    )
    assert r.code == 2, r.output
    assert f"--ca-file {ca}: cannot be read as PEM CA certificates" in r.err
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert rows("SELECT id, state FROM outbox ORDER BY id") == before  # nothing claimed
    assert server.messages == []
    # and a good one still delivers them all
    r = runbook(
        "outbox", "r.yaml", "--relay", f"smtp://ops:pw@127.0.0.1:{server.port}",
        "--ca-file", str(server.cert_file),
    )  # fmt: skip
    assert r.code == 0, r.output
    assert len(server.messages) == 5


@pytest.mark.parametrize("option", ["--export", "--relay", "--ca-file"])
def test_an_empty_outbox_option_is_exit_2(runbook: Any, option: str) -> None:
    runbook_file(tell(to=PEOPLE[:2]))
    assert runbook("apply", "r.yaml", "--yes").code == 0
    extra = ["--relay", "smtp://127.0.0.1:1"] if option == "--ca-file" else []
    r = runbook("outbox", "r.yaml", *extra, option, "")
    assert r.code == 2, r.output
    assert f"{option} is empty" in r.err
    assert [s for (s,) in rows("SELECT state FROM outbox")] == ["queued"] * 2


def test_a_journey_shows_a_queued_message_as_queued_until_the_relay_sends_it(
    runbook: Any, smtp_server: Any
) -> None:
    server: SmtpServer = smtp_server()
    _cohort_runbook()
    assert runbook("apply", "m.yaml", "--yes").code == 0
    r = runbook("customers", "m.yaml", "7")
    assert r.code == 0, r.err
    assert "message sent" not in r.out and "message queued: outbox <" in r.out
    # the ledger's notified mark stays (SPEC §11: `marks: notified` = queued for delivery)
    assert "-> notified" in r.out
    assert runbook("outbox", "m.yaml", "--relay", f"smtp://127.0.0.1:{server.port}").code == 0
    r = runbook("customers", "m.yaml", "7", "--format", "json")
    (msg,) = json.loads(r.out)["entities"][0]["messages"]
    assert (msg["state"], msg["delivery"]) == ("sent", "sent")
    assert "message sent: outbox <" in runbook("customers", "m.yaml", "7").out


def test_control_characters_never_reach_an_eml_header_raw(runbook: Any) -> None:
    to = ["p1@example.org", "p2@example.org", "p3\x07@example.org"]
    runbook_file(tell(to=to, subject="Your move \x07{{ recipient.address }}"))
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output  # the address with a control character: refused
    assert "p3\\x07@example.org (the To address contains a control character" in r.out
    assert sorted(rows("SELECT address, state FROM outbox")) == [
        ("p1@example.org", "queued"),
        ("p2@example.org", "queued"),
    ]
    r = runbook("outbox", "r.yaml", "--export", "mail")
    assert r.code == 0, r.output
    files = sorted(Path("mail").rglob("*.eml"))
    assert len(files) == 2
    for f in files:
        head = f.read_bytes().split(b"\r\n\r\n", 1)[0]
        assert not any((b < 0x20 and b not in (0x0D, 0x0A)) or b == 0x7F for b in head), head
        assert b"Subject: =?utf-8?q?Your_move_=07p" in head  # RFC 2047: kept, never raw


def test_a_display_name_with_control_characters_is_an_rfc_2047_word() -> None:
    from runbook_engine.actions import OutboxRow
    from runbook_engine.plugins.notify.channels import email_bytes

    row = OutboxRow(
        "to:b", "outbox", "<1@t>", "Ops \x07 <ops@example.org>", "b@example.org",
        "Bob \x1b[2J", None, "Hi", "Body", "{}",
    )  # fmt: skip
    head = email_bytes(row, "2026-12-02T07:00:00.000Z").split(b"\r\n\r\n", 1)[0]
    assert not any((b < 0x20 and b not in (0x0D, 0x0A)) or b == 0x7F for b in head), head
    assert b"To: =?utf-8?q?Bob_=1B=5B2J?= <b@example.org>" in head
    assert b"From: =?utf-8?q?Ops_=07?= <ops@example.org>" in head
