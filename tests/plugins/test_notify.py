"""``notify`` against a real SMTP server (aiosmtpd), a real HTTP server, the outbox table of a
real state database, and the ``.eml`` files of an ``outbox:`` folder.

Each message is a row of the outbox table (``make_ctx.states()``): running the action again
with the same table is what a resumed or repeated run does.
"""

from __future__ import annotations

import email
import email.policy
import os
import sqlite3
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.actions import OutboxRow
from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.notify.action import NotifyAction
from runbook_engine.plugins.notify.recipients import message_id
from tests.servers.http import HttpServer, free_port
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.servers

StartSmtp = Callable[..., SmtpServer]
RUNBOOK = "action-test"  # the name of make_ctx's runbook
TEMPLATES = {
    "pt-BR": {
        "subject": "Migração da sua conta",
        "body": "Olá {{ recipient.name }}, sua conta migra em {{ vars.date }}.",
    },
    "pt": {"subject": "Migração da conta", "body": "Olá {{ recipient.name }} (pt)."},
    "es": {
        "subject": "Migración de su cuenta",
        "body": "Hola {{ recipient.name }}, su cuenta migra el {{ vars.date }}.",
    },
    "en": {
        "subject": "Your account migration",
        "body": "Hello {{ recipient.name }}, your account moves on {{ vars.date }}.",
    },
}
PEOPLE = [
    {"address": "ana@example.com.br", "name": "Ana", "locale": "pt-BR"},
    {"address": "joao@example.pt", "name": "João", "locale": "pt-PT"},
    {"address": "maria@example.mx", "name": "María", "locale": "es-MX"},
    {"address": "bob@example.com", "name": "Bob", "locale": "en"},
    {"address": "pierre@example.fr", "name": "Pierre", "locale": "fr"},
]
EXPECTED = {  # address -> (subject, body) after locale fallback
    "ana@example.com.br": ("Migração da sua conta", "Olá Ana, sua conta migra em 2026-12-01."),
    "joao@example.pt": ("Migração da conta", "Olá João (pt)."),
    "maria@example.mx": ("Migración de su cuenta", "Hola María, su cuenta migra el 2026-12-01."),
    "bob@example.com": ("Your account migration", "Hello Bob, your account moves on 2026-12-01."),
    "pierre@example.fr": (
        "Your account migration",
        "Hello Pierre, your account moves on 2026-12-01.",
    ),
}
CONTEXT = {"vars": {"date": "2026-12-01"}}


def mid(key: str, step: str = "s") -> str:
    """The Message-ID of recipient ``key`` in make_ctx's run, step and attempt."""
    return message_id(RUNBOOK, "run-test", step, "1", key)


def seed(make_ctx: Any, states: dict[str, str]) -> None:
    """Rows of step ``s`` in the outbox as a crash may have left them: recipient -> state."""
    port = make_ctx.store.outbox_for("run-test", "s", "1")
    for key, state in states.items():
        row = OutboxRow(key, "email", mid(key), "x@y.z", key[3:], "", None, "s", "b", "{}")
        port.write([row], state=state, at="2026-12-01T00:00:00.000Z")


def run(params: dict[str, Any], make_ctx: Any, **kw: Any) -> Any:
    kw.setdefault("template_context", CONTEXT)
    return NotifyAction().run(params, make_ctx(**kw))


def parse(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body(msg: EmailMessage) -> str:
    return str(msg.get_content()).strip()


def smtp_params(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "smtp": {"host": server.host, "port": server.port},
        "from": "ops@example.org",
        **extra,
    }


# outbox ---------------------------------------------------------------------------------------


def test_outbox_queues_one_message_per_recipient_in_its_locale(
    make_ctx: Any, tmp_path: Path
) -> None:
    params = {"to": PEOPLE, "templates": TEMPLATES, "from": "ops@example.org"}
    out = run(params, make_ctx)
    assert out == {
        "channel": "outbox",
        "sent": 5,
        "skipped_already_sent": 0,
        "uncertain": 0,
        "uncertain_recipients": [],
        "failed": 0,
        "failed_recipients": [],
    }
    assert make_ctx.states() == {f"to:{a}": "queued" for a in EXPECTED}
    rows = make_ctx.sql(
        "SELECT address, subject, body, message_id, locale, sender, channel FROM outbox"
    )
    by_to = {r[0]: r for r in rows}
    for address, (subject, text) in EXPECTED.items():
        assert by_to[address][1:4] == (subject, text, mid(f"to:{address}"))
        assert by_to[address][5:] == ("ops@example.org", "outbox")
    assert by_to["ana@example.com.br"][4] == "pt-BR" and by_to["pierre@example.fr"][4] == "en"
    assert not list(tmp_path.rglob("*.eml"))  # no folder given: the table is the outbox


def test_an_outbox_folder_gets_each_batch_as_eml_files(make_ctx: Any, tmp_path: Path) -> None:
    folder = tmp_path / "mail" / "out"
    params = {"to": PEOPLE, "templates": TEMPLATES, "from": "ops@example.org"}
    out = run({**params, "outbox": str(folder)}, make_ctx)
    assert (out["sent"], out["outbox"]) == (5, str(folder))
    files = sorted(folder.iterdir())
    assert len(files) == 5 and all(f.suffix == ".eml" for f in files)  # no temp file left
    by_to = {parse(f)["To"].addresses[0].addr_spec: (f, parse(f)) for f in files}
    assert set(by_to) == set(EXPECTED)
    for address, (path, msg) in by_to.items():
        assert (msg["Subject"], body(msg)) == EXPECTED[address]
        assert msg["From"] == "ops@example.org"
        assert msg["Message-ID"] == mid(f"to:{address}")
        assert path.name == mid(f"to:{address}")[1:].split("@")[0] + ".eml"
        assert msg["X-Runbook-Step"] == "s" and msg["Date"]
    assert by_to["ana@example.com.br"][1]["Content-Language"] == "pt-BR"
    assert by_to["joao@example.pt"][1]["Content-Language"] == "pt"
    assert by_to["pierre@example.fr"][1]["Content-Language"] == "en"
    assert str(by_to["ana@example.com.br"][1]["To"]) == "Ana <ana@example.com.br>"
    assert make_ctx.states() == {f"to:{a}": "queued" for a in EXPECTED}


def test_outbox_never_queues_twice_with_the_same_table(make_ctx: Any, tmp_path: Path) -> None:
    params = {"to": PEOPLE, "templates": TEMPLATES, "outbox": str(tmp_path / "mail")}
    run(params, make_ctx)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "mail").iterdir()}
    out = run(params, make_ctx)
    assert (out["sent"], out["skipped_already_sent"]) == (0, 5)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "mail").iterdir()}
    assert after == before
    assert make_ctx.sql("SELECT count(*) FROM outbox") == [(5,)]


def test_a_file_lost_after_its_batch_committed_is_written_again(
    make_ctx: Any, tmp_path: Path
) -> None:
    """A crash between a batch's commit and its files: the table decides, the file is
    written again from it on the next run, and nothing is queued twice."""
    folder = tmp_path / "mail"
    params = {"to": PEOPLE, "templates": TEMPLATES, "outbox": str(folder)}
    run(params, make_ctx)
    lost = folder / (mid("to:maria@example.mx")[1:].split("@")[0] + ".eml")
    want = lost.read_bytes()
    lost.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    out = run(params, make_ctx)
    assert (out["sent"], out["skipped_already_sent"], out["uncertain"]) == (0, 5, 0)
    assert lost.read_bytes() == want  # the same bytes: dated when it was queued
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p != lost} == kept
    assert set(make_ctx.states().values()) == {"queued"}


def test_a_temporary_file_of_a_killed_writer_is_removed_on_the_next_run(
    make_ctx: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "mail"
    params = {"to": PEOPLE, "templates": TEMPLATES, "outbox": str(folder)}
    run(params, make_ctx)
    lost = folder / (mid("to:bob@example.com")[1:].split("@")[0] + ".eml")
    lost.unlink()
    dead = folder / f".{lost.name}.999999999.tmp"  # killed between its write and its rename
    alive = folder / f".other.eml.{os.getppid()}.tmp"  # another writer, still running
    dead.write_bytes(b"half a mess")
    alive.write_bytes(b"being written")
    run(params, make_ctx)
    assert lost.exists() and not dead.exists() and alive.exists()


def test_a_header_with_a_line_break_fails_that_recipient_only(
    make_ctx: Any, tmp_path: Path
) -> None:
    people = [*PEOPLE[:2], {"address": "eve@example.org", "name": "Eve\r\nBcc: x@evil.example"}]
    with pytest.raises(ActionFailed) as exc:
        run({"to": people, "templates": TEMPLATES, "outbox": str(tmp_path / "m")}, make_ctx)
    assert exc.value.message == (
        "notify: 1 of 3 recipient(s) refused: eve@example.org (the To header would contain a "
        "line break (CR or LF): refused)"
    )
    assert exc.value.retryable is False
    assert make_ctx.states() == {"to:ana@example.com.br": "queued", "to:joao@example.pt": "queued"}
    assert len(list((tmp_path / "m").iterdir())) == 2


def test_recipients_from_a_query_with_extra_columns(make_ctx: Any, tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE c (email TEXT, name TEXT, lang TEXT, plan TEXT)")
        conn.executemany(
            "INSERT INTO c VALUES (?, ?, ?, ?)",
            [("ana@example.com.br", "Ana", "pt-BR", "gold"), ("li@example.cn", None, None, "free")],
        )
    params = {
        "recipients_query": "SELECT email AS address, name, lang AS locale, plan FROM c",
        "dsn": f"sqlite:///{db}",
        "templates": {
            "pt": {"subject": "Plano", "body": "{{ recipient.name }}: plano {{ recipient.plan }}"},
            "en": {"subject": "Plan", "body": "{{ recipient.name or 'customer' }}: {{ plan }}"},
        },
        "outbox": str(tmp_path / "mail"),
    }
    with pytest.raises(ActionFailed) as exc:  # `plan` alone is not a name: recipient.plan is
        run(params, make_ctx)
    assert exc.value.message.startswith("notify: templates.en.body for li@example.cn:")
    assert not (tmp_path / "mail").exists()  # rendered first: nothing half-sent
    params["templates"]["en"]["body"] = "{{ recipient.name or 'customer' }}: {{ recipient.plan }}"
    assert run(params, make_ctx)["sent"] == 2
    bodies = sorted(body(parse(p)) for p in (tmp_path / "mail").iterdir())
    assert bodies == ["Ana: plano gold", "customer: free"]


def test_missing_template_fails_before_sending_and_a_bad_address_fails_alone(
    make_ctx: Any, tmp_path: Path
) -> None:
    only_es = {"es": TEMPLATES["es"]}
    with pytest.raises(ActionFailed) as exc:
        run({"to": PEOPLE[3:4], "templates": only_es, "outbox": str(tmp_path / "m")}, make_ctx)
    assert exc.value.message == (
        "notify: no template for bob@example.com (tried en; templates: es); "
        "set `default_locale` to one of the templates"
    )
    assert not (tmp_path / "m").exists() and make_ctx.states() == {}
    # addresses that are not ones fail alone, with their reason; the good one is queued
    with pytest.raises(ActionFailed) as bad:
        run({"to": ["ok@x.org", "nobody", "a b@c"], "message": "hi"}, make_ctx)
    assert bad.value.message == (
        "notify: 2 of 3 recipient(s) refused: nobody (not an e-mail address), "
        "a b@c (not an e-mail address)"
    )
    assert bad.value.outputs["sent"] == 1 and bad.value.outputs["failed"] == 2
    assert make_ctx.states() == {"to:ok@x.org": "queued"}


# SMTP -------------------------------------------------------------------------------------------


def test_smtp_sends_each_locale_over_one_connection(smtp_server: StartSmtp, make_ctx: Any) -> None:
    server = smtp_server()
    out = run(smtp_params(server, to=PEOPLE, templates=TEMPLATES), make_ctx)
    assert (out["sent"], out["failed"], out["uncertain"]) == (5, 0, 0)
    assert server.connections == 1
    for address, (subject, text) in EXPECTED.items():
        (msg,) = server.to(address)
        assert (msg["Subject"], body(msg)) == (subject, text)
        assert msg["Message-ID"] == mid(f"to:{address}")
    assert server.messages[0].mail_from == "ops@example.org"
    assert make_ctx.states() == {f"to:{a}": "sent" for a in EXPECTED}


def test_smtp_never_sends_twice_with_the_same_table(smtp_server: StartSmtp, make_ctx: Any) -> None:
    server = smtp_server()
    params = smtp_params(server, to=PEOPLE, templates=TEMPLATES)
    run(params, make_ctx)
    out = run(params, make_ctx)
    assert (out["sent"], out["skipped_already_sent"]) == (0, 5)
    assert len(server.messages) == 5 and server.connections == 1  # not even connected again


def test_crash_between_send_and_record_is_uncertain_and_not_resent(
    smtp_server: StartSmtp, make_ctx: Any
) -> None:
    server = smtp_server()
    seed(make_ctx, {"to:bob@example.com": "sending", "to:ana@example.com.br": "sent"})
    params = smtp_params(server, to=PEOPLE, templates=TEMPLATES)
    out = run(params, make_ctx)
    assert (out["sent"], out["skipped_already_sent"], out["uncertain"]) == (3, 1, 1)
    assert out["uncertain_recipients"] == ["bob@example.com"]
    assert server.to("bob@example.com") == [] and server.to("ana@example.com.br") == []
    assert ("notify.uncertain", {"count": 1, "recipients": ["bob@example.com"]}) in make_ctx.events
    assert make_ctx.states()["to:bob@example.com"] == "uncertain"
    assert make_ctx.sql("SELECT reason FROM outbox WHERE recipient = 'to:bob@example.com'") == [
        ("the send was cut by a crash or a stop",)
    ]
    again = run(params, make_ctx)
    assert (again["sent"], again["uncertain"]) == (0, 1) and server.to("bob@example.com") == []

    out = run({**params, "resend_uncertain": True}, make_ctx)
    assert (out["sent"], out["skipped_already_sent"], out["uncertain"]) == (1, 4, 0)
    (msg,) = server.to("bob@example.com")
    assert msg["Message-ID"] == mid("to:bob@example.com")
    assert make_ctx.states()["to:bob@example.com"] == "sent"


def test_connection_dropped_mid_message_leaves_that_recipient_uncertain(
    smtp_server: StartSmtp, make_ctx: Any
) -> None:
    server = smtp_server(drop_for={"maria@example.mx"})
    params = smtp_params(server, to=PEOPLE, templates=TEMPLATES)
    out = run(params, make_ctx)
    assert (out["sent"], out["uncertain"]) == (4, 1)
    assert out["uncertain_recipients"] == ["maria@example.mx"]
    assert server.to("maria@example.mx") == [] and len(server.messages) == 4
    assert server.connections == 2  # reconnected for the recipients after her
    assert make_ctx.states()["to:maria@example.mx"] == "uncertain"
    server.drop_for.clear()
    again = run(params, make_ctx)
    assert (again["sent"], again["skipped_already_sent"], again["uncertain"]) == (0, 4, 1)
    assert server.to("maria@example.mx") == []


def test_a_rejected_recipient_fails_the_step_after_the_others(
    smtp_server: StartSmtp, make_ctx: Any
) -> None:
    server = smtp_server(reject={"joao@example.pt"})
    params = smtp_params(server, to=PEOPLE, templates=TEMPLATES)
    with pytest.raises(ActionFailed) as exc:
        run(params, make_ctx)
    err = exc.value
    assert err.message == (
        "notify: 1 of 5 recipient(s) refused: "
        "joao@example.pt (550 5.1.1 <joao@example.pt>: mailbox unavailable)"
    )
    assert err.retryable is False  # a 5xx refusal will not pass by retrying
    assert (err.outputs["sent"], err.outputs["failed"]) == (4, 1)
    assert err.outputs["failed_recipients"] == ["joao@example.pt"]
    assert len(server.messages) == 4 and server.to("joao@example.pt") == []
    assert make_ctx.states()["to:joao@example.pt"] == "failed"
    assert make_ctx.sql("SELECT reason FROM outbox WHERE address = 'joao@example.pt'") == [
        ("550 5.1.1 <joao@example.pt>: mailbox unavailable",)
    ]
    server.reject.clear()  # the mailbox is fixed: the next run sends to joão only
    out = run(params, make_ctx)
    assert (out["sent"], out["skipped_already_sent"]) == (1, 4)
    assert server.to("joao@example.pt")[0]["Subject"] == "Migração da conta"


def test_starttls_and_auth_keep_the_password_out_of_everything(
    smtp_server: StartSmtp, make_ctx: Any
) -> None:
    password = "pw-Very-Secret-1"
    server = smtp_server(auth=("ops", password))
    smtp = {
        "host": server.host,
        "port": server.port,
        "security": "starttls",
        "username": "ops",
        "password": password,
        "ca_file": str(server.cert_file),
    }
    params = {"channel": "email", "smtp": smtp, "to": PEOPLE, "templates": TEMPLATES}
    out = run(params, make_ctx)
    assert out["sent"] == 5 and server.logins == ["ops"]
    seen = [m.data.decode() for m in server.messages]
    seen += [repr(out), repr(make_ctx.events), repr(make_ctx.lines)]
    seen += [repr(make_ctx.sql("SELECT * FROM outbox"))]
    assert all(password not in text for text in seen)

    with pytest.raises(ActionFailed) as exc:
        wrong = {**params, "smtp": {**smtp, "password": "wrong-" + password}}
        run(wrong, make_ctx, step_id="s2")
    assert exc.value.message.startswith(
        f"notify: SMTP server 127.0.0.1:{server.port}: authentication as ops refused: 535"
    )
    assert password not in exc.value.message + exc.value.details
    assert exc.value.retryable is False


def test_an_untrusted_certificate_is_refused(smtp_server: StartSmtp, make_ctx: Any) -> None:
    server = smtp_server(auth=("ops", "pw"))
    smtp = {"host": server.host, "port": server.port, "username": "ops", "password": "pw"}
    with pytest.raises(ActionFailed, match=r"TLS certificate not trusted.*smtp\.ca_file"):
        run({"channel": "email", "smtp": smtp, "to": ["a@x.org"], "message": "m"}, make_ctx)
    assert server.messages == [] and make_ctx.states() == {}


def test_implicit_tls(smtp_server: StartSmtp, make_ctx: Any) -> None:
    server = smtp_server(implicit_tls=True)
    smtp = {"host": server.host, "port": server.port, "security": "tls"}
    smtp["ca_file"] = str(server.cert_file)
    run({"channel": "email", "smtp": smtp, "to": ["a@x.org"], "message": "over tls"}, make_ctx)
    assert body(server.to("a@x.org")[0]) == "over tls"


def test_a_password_without_tls_is_refused(make_ctx: Any) -> None:
    smtp = {"host": "127.0.0.1", "security": "none", "username": "u", "password": "p"}
    with pytest.raises(ActionFailed, match="refusing to send a password without TLS"):
        run({"channel": "email", "smtp": smtp, "to": ["a@x.org"], "message": "m"}, make_ctx)


def test_an_unreachable_smtp_server(make_ctx: Any) -> None:
    port = free_port()
    smtp = {"host": "127.0.0.1", "port": port}
    with pytest.raises(ActionFailed) as exc:
        run({"channel": "email", "smtp": smtp, "to": ["a@x.org"], "message": "m"}, make_ctx)
    assert exc.value.message == (
        f"notify: cannot reach SMTP server 127.0.0.1:{port}: connection refused"
    )
    assert make_ctx.states() == {}  # nothing was begun


# webhook ----------------------------------------------------------------------------------------


def test_webhook_posts_json_per_recipient_once(http_server: HttpServer, make_ctx: Any) -> None:
    params = {
        "channel": "webhook",
        "url": f"{http_server.url}/hook",
        "headers": {"Authorization": "Bearer t0k"},
        "to": PEOPLE[:3],
        "templates": TEMPLATES,
    }
    out = run(params, make_ctx)
    assert out["sent"] == 3
    posts = http_server.requests_to("/hook")
    got = {p.json["recipient"]["address"]: p for p in posts}
    assert set(got) == {"ana@example.com.br", "joao@example.pt", "maria@example.mx"}
    ana = got["ana@example.com.br"]
    assert ana.json["text"] == EXPECTED["ana@example.com.br"][1]
    assert ana.json["subject"] == "Migração da sua conta" and ana.json["locale"] == "pt-BR"
    assert ana.json["runbook"] == RUNBOOK and ana.json["step"] == "s"
    ana_id = mid("to:ana@example.com.br")
    assert ana.json["message_id"] == ana_id
    assert ana.headers["Idempotency-Key"] == ana_id[1:].split("@")[0]
    assert ana.headers["Authorization"] == "Bearer t0k"
    assert run(params, make_ctx)["skipped_already_sent"] == 3
    assert len(http_server.requests_to("/hook")) == 3


def test_webhook_without_recipients_posts_one_message(
    http_server: HttpServer, make_ctx: Any
) -> None:
    params = {
        "channel": "webhook",
        "url": f"{http_server.url}/page",
        "message": "data-loss risk fired on {{ failed_step.id }}",
    }
    ctx_vars = {"failed_step": {"id": "copy[pilot]"}}
    out = run(params, make_ctx, template_context=ctx_vars)
    assert out["sent"] == 1 and make_ctx.states() == {"webhook": "sent"}
    (post,) = http_server.requests_to("/page")
    assert post.json["text"] == "data-loss risk fired on copy[pilot]"
    assert "recipient" not in post.json


def test_webhook_errors_refused_and_uncertain(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/hook", 500, text="queue full", times=1)
    http_server.respond("/drop", drop=True)
    params = {"channel": "webhook", "url": f"{http_server.url}/hook", "message": "m"}
    with pytest.raises(ActionFailed, match=r"refused: webhook \(webhook returned 500"):
        run(params, make_ctx)
    assert make_ctx.states() == {"webhook": "failed"}
    assert run(params, make_ctx)["sent"] == 1  # tried again: the 500 was not a delivery
    dropped = run({**params, "url": f"{http_server.url}/drop"}, make_ctx, step_id="s2")
    assert (dropped["sent"], dropped["uncertain"]) == (0, 1)


def test_webhook_refused_connection_fails_the_step(make_ctx: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(ActionFailed, match=r"notify: webhook .*/hook: connection refused"):
        run({"channel": "webhook", "url": url, "message": "m"}, make_ctx)
    assert make_ctx.states() == {"webhook": "failed"}


def test_validate_locates_missing_keys_per_channel(runbook: Any, tmp_path: Path) -> None:
    f = tmp_path / "rb.yaml"
    f.write_text(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: n}\nphases:\n  - id: p\n"
        "    steps:\n"
        "      - {id: a, action: notify, rollback: none, with: {channel: email, to: [a@b.c], "
        "message: hi}}\n"
        "      - {id: b, action: notify, rollback: none, with: {message: hi}}\n"
        "      - {id: c, action: notify, rollback: none, with: {to: [a@b.c], templates: "
        "{pt-BR: {subject: 'Olá', body: '{{ recipient.name }} {{ recipient.locale }}'}}}}\n"
    )
    r = runbook("validate", str(f))
    assert r.code == 2
    assert "rb.yaml:7:55: phases[0].steps[0].with: missing required key 'smtp'" in r.output
    assert "rb.yaml:8:55: phases[0].steps[1].with: missing 'to' or 'recipients_query'" in r.output
    assert "steps[2]" not in r.output  # `recipient` is a name in notify's templates


def test_headers_and_body_round_trip_through_a_mail_parser(make_ctx: Any, tmp_path: Path) -> None:
    subject = "Atualização importante: " + "migração da sua conta número 42 — " * 4
    text = "Linha com = sinal e acentuação.\n" + "palavra " * 40 + "\n\n.ponto no início\nfim"
    params = {
        "to": [{"address": "ze@example.com.br", "name": 'Zé "da" Silva, Jr.', "locale": "pt"}],
        "subject": subject,
        "message": text,
        "from": "Operações <ops@example.org>",
        "outbox": str(tmp_path / "m"),
    }
    run(params, make_ctx)
    (path,) = (tmp_path / "m").iterdir()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    raw = path.read_bytes()
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 78
    msg = parse(path)
    assert msg["Subject"] == " ".join(subject.split())
    assert msg["To"].addresses[0].display_name == 'Zé "da" Silva, Jr.'
    assert msg["From"].addresses[0].display_name == "Operações"
    assert msg["From"].addresses[0].addr_spec == "ops@example.org"
    assert msg.get_content().replace("\r\n", "\n") == text + "\n"  # CRLF on disk
