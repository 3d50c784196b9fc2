"""Opening a runbook for a command that changes its state: everything that can be refused is
refused (exit 2) before the lock is taken and before anything is written."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..console.reporters import Reporter, make_reporter
from ..errors import InvalidInput
from ..format import variables
from ..format.loader import Loaded, load
from ..format.model import Runbook
from ..format.templates import iter_strings, parse
from ..graph.dag import Dag
from ..masking import Masker
from ..state import backend
from ..state.holder import DEFAULT_SECONDS
from ..state.store import Store
from . import secrets as secrets_mod
from .runner import Session


@dataclass
class Prepared:
    """A checked runbook with its variables and secrets: nothing written yet."""

    file: str
    loaded: Loaded
    variables: dict[str, Any]
    secrets: dict[str, str]
    masker: Masker

    @property
    def runbook(self) -> Runbook:
        return self.loaded.runbook

    @cached_property
    def dag(self) -> Dag:
        """The networkx DAG that orders the run (built once, on first use)."""
        return Dag(self.loaded.order)


def used_secrets(rb: Runbook) -> set[str]:
    """Secret names any template of the runbook refers to."""
    from ..format.checks import calls

    names: set[str] = set()
    for call, _phase, _kind in calls(rb):
        for _path, text in iter_strings(call.params):
            if "secrets" not in text:
                continue
            try:
                parsed = parse(text)
            except Exception:  # noqa: BLE001 - validate already refused bad templates
                continue
            names.update(r.parts[0] for r in parsed.refs if r.root == "secrets" and r.parts)
    return names & set(rb.secrets)


def prepare(
    file: str,
    assignments: Iterable[str] = (),
    var_files: Iterable[str] = (),
    *,
    resolve_secrets: bool = True,
    pinned: Callable[[Runbook], dict[str, Any] | None] | None = None,
    require_all: bool = True,
) -> Prepared:
    """``pinned`` gives the vars of the run in progress, used when no --var and no --var-file
    is given (SPEC §11: a resume without --var uses the run's vars); given ones are the
    whole set, over the runbook's defaults, as for a new run (a difference from the run's is
    then the run's change check's to report). ``require_all=False``: a var with no value is
    left out instead of refused (a command that runs nothing with them, ``approve``)."""
    loaded = load(file)
    rb = loaded.runbook
    assignments, var_files = tuple(assignments), tuple(var_files)
    given = bool(assignments or var_files)  # vars given are all the vars: defaults for the rest
    values = variables.resolve(
        rb,
        assignments,
        var_files,
        pinned=pinned(rb) if pinned is not None and not given else None,
        require_all=require_all,
    )
    secret_values: dict[str, str] = {}
    if resolve_secrets:
        needed = used_secrets(rb)
        sub = {n: rb.secrets[n] for n in needed}
        secret_values = secrets_mod.resolve(_with_secrets(rb, sub))
    return Prepared(file, loaded, values, secret_values, Masker(secret_values))


def _with_secrets(rb: Runbook, subset: dict[str, Any]) -> Runbook:
    import dataclasses

    return dataclasses.replace(rb, secrets=subset)


def stop_leftovers(store: Store, say: Callable[[str], None]) -> None:
    """The commands a lost holder left running for steps it had not finished: stopped
    before anything else happens (``processes.py``; found by the state's and the step's
    marker in their environment, so nothing else is ever touched)."""
    from ..processes import leftovers, stop
    from ..state.status import Status

    busy = [
        name
        for sid, st in store.state.steps.items()
        if st.status in (Status.RUNNING, Status.ROLLING_BACK)
        for name in (sid, f"{sid}#rollback")
    ]
    found = leftovers(store.dir, busy)
    if not found:
        return
    stop(found)
    shown = "; ".join(f"{p.step} (pid {p.pid}: {p.command[:80]})" for p in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    say(f"stopped {len(found)} process(es) the lost run left running: {shown}{more}")


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, insist on --yes (SPEC §6)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidInput(f"{question}: no terminal to ask on; pass --yes to go ahead")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise InvalidInput("not confirmed: nothing was done")


@contextmanager
def open_session(
    prepared: Prepared,
    state_dir: str,
    fmt: str = "text",
    title: str = "",
    lease_seconds: float = DEFAULT_SECONDS,
) -> Iterator[Session]:
    """The runbook's state under this process's lease (``state/backend.leased``: the
    directory's ``state/lease``, or PostgreSQL's ``state/pglease``): taken (or taken over
    from a holder that is gone or expired, with a notice) before anything is read for the
    run, renewed by its own thread, checked inside every write, released at the end."""
    rb = prepared.runbook
    with backend.leased(state_dir, rb.name, prepared.masker, lease_seconds) as (store, lease):
        reporter: Reporter = make_reporter(
            fmt, prepared.masker, len(rb.instances), title or rb.name
        )
        # a failed renewal, and its recovery, are said as they happen (from the renewal thread)
        lease.on_renewal(reporter.lease)
        try:
            for note in (lease.notice, store.notice):
                if note:
                    reporter.notice(note)
            # every step the journal says is running belongs to a run that is over (this
            # one started nothing yet): taken over, or cleared by `unlock --force`, or taken
            # and released since by a command that runs no steps (`cohort`); the commands it
            # left running are stopped whichever way its lease ended
            stop_leftovers(store, reporter.notice)
            yield Session(
                file=prepared.file,
                runbook=rb,
                dag=prepared.dag,
                store=store,
                variables=prepared.variables,
                secrets=prepared.secrets,
                masker=prepared.masker,
                reporter=reporter,
                workdir=Path.cwd(),
                lease=lease,
            )
        finally:
            reporter.close()
