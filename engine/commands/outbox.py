"""``runbook outbox FILE [--export DIR] [--relay URL]``"""

from __future__ import annotations

import signal
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..console.terminal import Console
from ..errors import Exit, InvalidInput
from ..masking import mask_url_passwords
from ..plugins.notify.channels import ChannelDown, Smtp
from ..plugins.notify.export import ExportError, export_all
from ..plugins.notify.relay import BadUrl, Relayed, relay, smtp_config
from ..report import outbox as view
from ..state import delivery
from ..state.db import Database
from .common import load_or_report
from .options import state_dir


@click.command(name="outbox")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--export",
    "export_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write every message of the outbox channel as DIR/STEP/<Message-ID>.eml (files 0600, "
    "folders 0700): what an `outbox:` folder gets.",
)
@click.option(
    "--relay",
    "relay_url",
    metavar="URL",
    help="Deliver the queued messages over SMTP: smtp://[user[:password]@]host[:port] "
    "(STARTTLS when the server offers it) or smtps://... (TLS from the start). The password "
    "may come from RUNBOOK_SMTP_PASSWORD instead; it is never printed.",
)
@click.option(
    "--resend-uncertain",
    is_flag=True,
    help="With --relay: send again the messages left uncertain by a relay stopped mid-send "
    "(the server may then get them twice).",
)
@click.option(
    "--ca-file",
    metavar="PEM",
    type=click.Path(dir_okay=False),
    help="With --relay: the CA (or self-signed certificate) of the server's TLS certificate; "
    "default: the system's CAs.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: for a terminal; json: one object (counts, export, relay).",
)
@click.pass_context
def command(
    ctx: click.Context,
    file: str,
    export_dir: str | None,
    relay_url: str | None,
    resend_uncertain: bool,
    ca_file: str | None,
    fmt: str,
) -> int:
    """The messages of a runbook's outbox: counts by channel and state; export; relay.

    `notify` with `channel: outbox` queues its messages in the state's outbox
    table; email and webhook messages are recorded there as they are sent.
    States: queued, sending, sent, uncertain (a relay stopped mid-send),
    failed (refused by the server, with the reason).

    --relay delivers the queued messages, one at a time, each with its stable
    Message-ID: claimed (`sending`), sent, marked `sent`. It can be stopped
    (Ctrl-C) and started again at any time without sending a Message-ID
    twice; a message cut mid-send is `uncertain` and is sent again only with
    --resend-uncertain. Exit 1 when messages are left unsent, uncertain or
    failed; 130 when interrupted.

    Reads and writes the state without taking the run's lock: safe beside a
    running `apply` (which queues, while the relay delivers; a step with
    `wait_delivered: true` waits for the relay).

    \b
    Examples:
      runbook outbox migrate.yaml
      runbook outbox migrate.yaml --export mail/
      RUNBOOK_SMTP_PASSWORD=... runbook outbox migrate.yaml --relay smtp://ops@mail.example.com:587
    """
    for option, given in (("--export", export_dir), ("--relay", relay_url), ("--ca-file", ca_file)):
        if given is not None and not given.strip():
            raise InvalidInput(f"{option} is empty: give it a value, or leave it out")
    if not relay_url and (resend_uncertain or ca_file):
        raise InvalidInput("--resend-uncertain and --ca-file go with --relay URL")
    console = Console()
    rb = load_or_report(file, console).runbook
    smtp = _smtp(relay_url, ca_file) if relay_url else None
    state = state_dir(ctx)
    export: dict[str, Any] | None = None
    relayed: dict[str, Any] | None = None
    code = Exit.OK
    counts: list[tuple[str, str, int]] = []
    with delivery.opened(state, rb.name, write=False) as db:
        present = db is not None
        if db is not None and export_dir:
            export = _export(db, Path(export_dir))
            if fmt == "text":
                console.out(f"wrote {export['files']:,} message(s) to {export_dir}")
    if present and smtp is not None:
        assert relay_url is not None
        relayed, code = _relay(state, rb.name, smtp, resend_uncertain)
        if fmt == "text":
            for line in view.relay_lines(relayed, mask_url_passwords(relay_url)):
                console.out(line)
    if present:
        with delivery.opened(state, rb.name, write=False) as db:
            counts = delivery.counts(db) if db is not None else []
    if fmt == "json":
        console.out(view.as_json(rb.name, counts, export, relayed))
    else:
        for line in view.table(counts):
            console.out(line)
        left = view.left_line(relayed["left"]) if relayed else None
        if left:
            console.err(left)
    return int(code)


def _smtp(url: str, ca_file: str | None) -> Smtp:
    from ..masking import mask_url_passwords

    shown = mask_url_passwords(url)
    if ca_file is not None:
        # loaded now, before a message is claimed: a bad file is bad usage, never a message
        # claimed and left `uncertain` though it was never sent
        import ssl

        try:
            ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidInput(
                f"--ca-file {ca_file}: cannot be read as PEM CA certificates ({why}); nothing "
                "was relayed"
            ) from None
    try:
        config = smtp_config(url, ca_file)
        return Smtp(config, lambda: 120.0, ca_hint="give it with --ca-file")
    except (BadUrl, ChannelDown) as exc:
        why = exc.reason if isinstance(exc, ChannelDown) else str(exc)
        raise InvalidInput(f"--relay {shown}: {why}") from None


def _export(db: Database, folder: Path) -> dict[str, Any]:
    try:
        files = export_all(delivery.messages(db), folder)
    except ExportError as exc:
        raise InvalidInput(f"--export {folder}: {exc.reason}") from None
    return {"dir": str(folder), "files": files}


def _relay(state: str, name: str, smtp: Smtp, resend: bool) -> tuple[dict[str, Any], Exit]:
    """Relay until the queue is empty, the server stops us, or Ctrl-C; 130 when interrupted,
    1 when messages are left unsent, uncertain or failed."""
    cancel = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        cancel.set()

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with delivery.opened(state, name, write=True) as db:
            done, left = Relayed(), {}
            if db is not None:  # else removed since it was read: nothing to relay
                queue = delivery.RelayQueue(db)
                done = relay(queue, smtp, resend_uncertain=resend, cancel=cancel)
                left = queue.left()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    doc = {**asdict(done), "left": left}
    if done.stopped == "interrupted":
        return doc, Exit.INTERRUPTED
    return doc, Exit.FAILED if any(left.values()) else Exit.OK
