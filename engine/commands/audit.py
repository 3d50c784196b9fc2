"""``runbook audit FILE``: recompute the journal's hash chain (SPEC §8 "Audit chain")."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

import click

from ..console.terminal import Console
from ..errors import Exit, InvalidInput, StateError
from .options import state_dir

_HASH = re.compile(r"(?:sha256:)?[0-9a-f]{64}")


@click.command(name="audit")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--head",
    "kept",
    metavar="HASH",
    help="A head hash printed by an earlier audit and kept elsewhere: exit 1 unless it is "
    "still in the chain (finds a cut or rewritten tail).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def command(ctx: click.Context, file: str, kept: str | None, fmt: str) -> int:
    """Recompute the hash chain of the runbook's journal and print its head.

    Every journal record carries a sequence number and a hash over the previous record's
    hash, its sequence number and its text as stored. This reads the state without taking
    the lock (safe while a run goes on), recomputes every hash in order and prints the head
    hash: keep it elsewhere (a ticket, a chat), and give it back later with --head to show
    that nothing before it was changed, removed or rewritten since.

    Records written by a program before the chain existed are not covered: the chain starts
    after them, and audit says from which record (exit 0). A record after that point whose
    hash was removed breaks the chain. A journal of an earlier version (journal.jsonl, not
    imported yet) has no chain at all: audit reads it, says so and exits 0, or 2 when it is
    damaged.

    \b
    Exit codes: 0 the chain holds (and --head, if given, is in it); 1 it breaks: the
    sequence number of the first record that breaks it is named (changed, deleted, moved,
    or its hash removed), or the --head hash is not in the chain; 2 no state, an unreadable
    state, or bad usage.

    \b
    Examples:
      runbook audit migrate.yaml
      runbook audit migrate.yaml --format json | jq -r .head.hash > head.txt
      runbook audit migrate.yaml --head "$(cat head.txt)"
    """
    from ..format.loader import load
    from ..state import chain, legacy, pg
    from ..state import db as dbm
    from ..state.location import is_postgres, shown
    from ..state.store import state_path

    if kept is not None and not _HASH.fullmatch(kept.strip()):
        raise InvalidInput(f"--head {kept!r}: expected a hash of 64 hex digits, as audit prints")
    rb = load(file).runbook
    if is_postgres(state_dir(ctx)):
        pgdb = pg.open_db(state_dir(ctx), rb.name, write=False)
        if pgdb is None:
            raise StateError(f"{rb.name} has no state in {shown(state_dir(ctx))}: nothing to audit")
        try:
            found = chain.audit(pgdb, keep_hashes=kept is not None)
        finally:
            pgdb.close()
        return _report(Console(), rb.name, pgdb.path, found, kept, fmt)
    base = state_path(state_dir(ctx), rb.name)
    path = base / dbm.FILE
    console = Console()
    if not path.exists():
        old = base / legacy.FILE
        if old.exists():
            # read whole, as the import will: garbage is damage (exit 2), never "no chain"
            got = legacy.read(str(old), expect_name=rb.name)
            if got.notice:
                console.err(got.notice)
            found = chain.Audit(records=max(len(got.records) - 1, 0))  # not its header
            found.unchained = found.records
            doc = _doc(rb.name, str(old), found)
            doc["note"] = (
                f"{found.records} records of an earlier version (journal.jsonl) carry no "
                "chain and are not covered; the chain starts when the next command that "
                "writes imports them"
            )
            _print(console, doc, fmt)
            return int(Exit.OK)
        raise StateError(f"{rb.name} has no state under {base}: nothing to audit")
    db = dbm.open_reader(path, rb.name)
    try:
        found = chain.audit(db, keep_hashes=kept is not None)
    except sqlite3.DatabaseError as exc:
        raise dbm.damaged(path, exc) from None
    finally:
        db.close()
    return _report(console, rb.name, str(path), found, kept, fmt)


def _report(
    console: Console, name: str, where: object, found: Any, kept: str | None, fmt: str
) -> int:
    doc = _doc(name, str(where), found)
    code = Exit.OK if found.holds else Exit.FAILED
    if kept is not None and found.holds:
        want = kept.strip().removeprefix("sha256:")
        doc["kept_head"] = {"hash": "sha256:" + want, "found": want in found.seen}
        if want not in found.seen:
            code = Exit.FAILED
    _print(console, doc, fmt)
    return int(code)


def _doc(name: str, where: str, found: Any) -> dict[str, Any]:
    return {
        "runbook": name,
        "state": where,
        "records": found.records,
        "holds": found.holds,
        "unchained": found.unchained,
        "chain_from": found.chain_from,
        "head": {"seq": found.last, "hash": "sha256:" + found.head} if found.head else None,
        "broken": (
            {"seq": found.broken.seq, "reason": found.broken.reason, "detail": found.broken.detail}
            if found.broken
            else None
        ),
    }


def _print(console: Console, doc: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        console.out(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    if doc.get("note"):
        console.out(f"{doc['runbook']}: {doc['note']}")
        return
    lines = [f"{doc['runbook']}: {doc['records']} journal records in {doc['state']}"]
    if doc["unchained"]:
        last_old = doc["unchained"]
        lines.append(
            f"records 1-{last_old} were written before the chain existed and are not covered"
            + (f"; the chain starts at record {doc['chain_from']}" if doc["chain_from"] else "")
        )
    broken = doc["broken"]
    if broken is not None:
        lines.append(f"chain BROKEN at record {broken['seq']}: {broken['detail']}")
        if doc["head"]:
            lines.append(f"it holds up to record {doc['head']['seq']}")
    elif doc["head"] is None:
        lines.append("no chained record yet: the chain starts with the next record written")
    else:
        lines.append(
            f"chain holds: records {doc['chain_from']}-{doc['head']['seq']}; head (keep it "
            f"elsewhere): {doc['head']['hash']}"
        )
    kept = doc.get("kept_head")
    if kept is not None:
        lines.append(
            f"kept head {kept['hash']} is in the chain"
            if kept["found"]
            else f"kept head {kept['hash']} is NOT in the chain: records were removed or "
            "rewritten since it was printed"
        )
    console.out("\n".join(lines))
