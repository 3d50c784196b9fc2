"""``runbook cohort freeze|admit|redraw FILE``: the operator's hold on a cohort's draw."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from ..console.terminal import Console
from ..errors import InvalidInput
from .options import state_dir, var_options

if TYPE_CHECKING:
    from ..format.model import Runbook


@click.group(name="cohort")
def command() -> None:
    """Draw a runbook's cohorts into waves, admit late entities, re-draw waves.

    The first `apply` draws and freezes every cohort its phases use; these commands do it
    ahead of time and keep the draw in step with the source. Nothing here moves anyone.

    \b
    Examples:
      runbook cohort freeze migrate.yaml
      runbook cohort admit migrate.yaml --include 4711
      runbook cohort redraw migrate.yaml --from early
    """


def _cohorts(rb: Any, name: str | None) -> list[Any]:
    if name is not None:
        if name not in rb.cohorts:
            raise InvalidInput(
                f"--cohort {name}: no such cohort in {rb.file} (cohorts: "
                f"{', '.join(rb.cohorts) or 'none'})"
            )
        return [rb.cohorts[name]]
    if not rb.cohorts:
        raise InvalidInput(f"{rb.file} declares no `cohorts`")
    return list(rb.cohorts.values())


def _one(rb: Any, name: str | None) -> Any:
    found = _cohorts(rb, name)
    if len(found) > 1:
        raise InvalidInput(
            f"{rb.file} has several cohorts ({', '.join(c.name for c in found)}): name one "
            "with --cohort"
        )
    return found[0]


@contextmanager
def _store(ctx: click.Context, prepared: Any) -> Iterator[Any]:
    from ..state.backend import leased

    rb = prepared.runbook
    from ..run.session import stop_leftovers

    console = Console()
    with leased(state_dir(ctx), rb.name, prepared.masker) as (store, lease):
        # a lost holder's lease taken over is said, naming it (SPEC §8), and the commands
        # it left running are stopped, as an apply does; the steps stay running in the
        # journal, so the next apply handles them as after a crash
        for note in (lease.notice, store.notice):
            if note:
                console.err(f"runbook: {note}")
        stop_leftovers(store, lambda text: console.err(f"runbook: {text}"))
        yield store


def _run_id(store: Any) -> str | None:
    run = store.state.run
    return run.id if run is not None and not run.finished else None


def _started(store: Any, cohort: str) -> list[str]:
    return [w for (c, w), a in store.state.attempts.items() if c == cohort and a.status]


_cohort_option = click.option("--cohort", "name", metavar="NAME", help="Only this cohort.")


@command.command(name="freeze")
@click.argument("file", type=click.Path(dir_okay=False))
@_cohort_option
@var_options
@click.pass_context
def freeze(
    ctx: click.Context,
    file: str,
    name: str | None,
    assignments: tuple[str, ...],
    var_files: tuple[str, ...],
) -> int:
    """Draw and freeze the cohorts not drawn yet; report late and vanished entities.

    Runs each cohort's source query once (read-only), applies `exclude`, draws the waves
    (deterministic from the seed and the keys) and writes the ledger in one transaction.
    A cohort already frozen is not drawn again: its source is compared with the ledger,
    and entities that appeared since (`late`) or left it before being moved (`vanished`)
    are marked and reported. Exit 0; 2 for a source that fails or sizes that cannot be
    met (nothing written).

    \b
    Example:
      runbook cohort freeze migrate.yaml --var legacy_db=sqlite:///prod-copy.db
    """
    from ..run import cohorts as rc
    from ..run.session import prepare
    from ..state import ledger

    console = Console()
    prepared = prepare(file, assignments, var_files, pinned=_pinned(ctx))
    rb = prepared.runbook
    chosen = _cohorts(rb, name)
    with _store(ctx, prepared) as store:
        rc.check_frozen(rb, store, chosen)
        frozen_before = {c.name for c in chosen if ledger.frozen(store.db, c.name)}
        drawn = rc.draw_missing(rb, store, chosen, prepared.variables, prepared.secrets)
        rc.freeze_drawn(store, drawn, _run_id(store), console.out)
        for c in chosen:
            if c.name not in frozen_before:
                continue
            got = _check(store, rb, c, rc.source_dsn(rb, c, prepared.variables, prepared.secrets))
            console.out(
                f"cohort {c.name}: frozen already; {got.late} late"
                + (f" ({_keys(got.late_keys, got.late)})" if got.late else "")
                + f", {got.vanished} vanished"
                + (f" ({_keys(got.vanished_keys, got.vanished)})" if got.vanished else "")
                + (" — `runbook cohort admit` puts late ones in a wave" if got.late else "")
            )
    return 0


def _check(store: Any, rb: Any, cohort: Any, dsn: str) -> Any:
    """Compare a frozen cohort with its source: late and vanished marked, one transaction."""
    from ..cohort import freeze as fz
    from ..state.store import now

    at, run = now(), _run_id(store)
    rec: dict[str, Any] = {"t": "cohort", "cohort": cohort.name, "event": "reconciled", "run": run}
    found: dict[str, Any] = {}

    def effect(db: Any) -> None:
        started = [w for (c, w), a in store.state.attempts.items() if c == cohort.name]
        got = fz.reconcile(db, cohort, dsn, at, run, None, rb.source, started)
        found["r"] = got
        rec.update(
            late=got.late,
            vanished=got.vanished,
            late_keys=[str(k) for k in got.late_keys],
            vanished_keys=[str(k) for k in got.vanished_keys],
        )

    store.commit(rec, effect=effect)
    return found["r"]


def _keys(keys: list[Any], total: int) -> str:
    text = ", ".join(str(k) for k in keys)
    return text + (f" and {total - len(keys)} more" if total > len(keys) else "")


@command.command(name="admit")
@click.argument("file", type=click.Path(dir_okay=False))
@_cohort_option
@click.option(
    "--include",
    "include",
    multiple=True,
    metavar="KEY",
    help="Bring this excluded entity back too (repeatable).",
)
@var_options
@click.pass_context
def admit(
    ctx: click.Context,
    file: str,
    name: str | None,
    include: tuple[str, ...],
    assignments: tuple[str, ...],
    var_files: tuple[str, ...],
) -> int:
    """Put late entities (and --include'd excluded ones) into the next wave not yet started.

    Late entities appeared in the source after the draw (`runbook cohort freeze` or a wave
    start finds them). They become pending members of the first wave no attempt has
    started. When every wave has started, add a wave of `size: 0` at the end of the
    cohort's waves (it does not change the draw) and admit into it.

    \b
    Example:
      runbook cohort admit migrate.yaml --include 4711 --include 4712
    """
    from ..cohort import admin
    from ..run.session import prepare
    from ..state import ledger
    from ..state.store import now

    console = Console()
    prepared = prepare(file, assignments, var_files, resolve_secrets=False, pinned=_pinned(ctx))
    rb = prepared.runbook
    cohort = _one(rb, name)
    with _store(ctx, prepared) as store:
        if ledger.frozen(store.db, cohort.name) is None:
            raise InvalidInput(_not_drawn(file, cohort.name))
        keys = [_typed(store, cohort.name, k) for k in include]
        at = now()
        run = _run_id(store)
        rec: dict[str, Any] = {
            "t": "cohort",
            "cohort": cohort.name,
            "event": "admitted",
            "run": run,
        }
        got: dict[str, Any] = {}

        def effect(db: Any) -> None:
            a = admin.admit(db, cohort, _started(store, cohort.name), keys, run, at)
            got["a"] = a
            rec.update(wave=a.wave, count=len(a.keys), keys=[str(k) for k in a.keys[:10]])

        store.commit(rec, effect=effect)
        a = got["a"]
    console.out(
        f"cohort {cohort.name}: admitted {len(a.keys)} into wave {a.wave}"
        + (f" ({_keys(a.keys[:10], len(a.keys))})" if a.keys else "")
    )
    return 0


def _typed(store: Any, cohort: str, text: str) -> Any:
    """A key as the ledger stores it: ``42`` may be the integer 42."""
    from ..state import dialect

    forms = (text, int(text) if text.lstrip("-").isdigit() else text)
    rows = store.db.query(
        "SELECT key FROM entity WHERE cohort = ? AND (key = ? OR key = ?)",
        (cohort, *dialect.keys(store.db, forms)),
    )
    if not rows:
        raise InvalidInput(f"cohort {cohort!r}: no entity with key {text!r}")
    return rows[0][0]


def _not_drawn(file: str, cohort: str) -> str:
    return (
        f"cohort {cohort!r} has not been drawn yet: run `runbook cohort freeze {file}` (or the "
        f"first `runbook apply {file}`)"
    )


@command.command(name="redraw")
@click.argument("file", type=click.Path(dir_okay=False))
@_cohort_option
@click.option(
    "--from",
    "from_wave",
    required=True,
    metavar="WAVE",
    help="The first wave to draw again; it and every wave after it must not have started.",
)
@var_options
@click.pass_context
def redraw(
    ctx: click.Context,
    file: str,
    name: str | None,
    from_wave: str,
    assignments: tuple[str, ...],
    var_files: tuple[str, ...],
) -> int:
    """Draw the waves not yet started again, by the runbook's current definition.

    An edit to a frozen cohort's draw (sizes, strata, seed, exclude) is refused by `apply`
    until this command re-draws the waves from WAVE on: their members and the late
    entities are drawn again (deterministically) into the edited waves; the waves before
    WAVE keep their members. Journaled, with every member's new wave in its journey.

    \b
    Example:
      runbook cohort redraw migrate.yaml --from early
    """
    from ..cohort import admin
    from ..run.session import prepare
    from ..state import ledger
    from ..state.store import now

    console = Console()
    prepared = prepare(file, assignments, var_files, pinned=_pinned(ctx))
    rb = prepared.runbook
    cohort = _one(rb, name)
    with _store(ctx, prepared) as store:
        frozen = ledger.frozen(store.db, cohort.name)
        if frozen is None:
            raise InvalidInput(_not_drawn(file, cohort.name))
        at = now()
        run = _run_id(store)
        rec: dict[str, Any] = {
            "t": "cohort",
            "cohort": cohort.name,
            "event": "redrawn",
            "run": run,
            "from": from_wave,
        }

        from ..cohort import source
        from ..run.cohorts import source_dsn

        dsn = source_dsn(rb, cohort, prepared.variables, prepared.secrets)
        rows = list(source.rows(cohort, dsn, rb.source))  # read before the transaction

        def effect(db: Any) -> None:
            rec["summary"] = admin.redraw(
                db, cohort, frozen, _started(store, cohort.name), from_wave, run, at, rows
            )

        store.commit(rec, effect=effect)
    got = {"s": rec["summary"]}
    sizes = ", ".join(f"{w['id']} {w['size']}" for w in got["s"]["waves"])
    console.out(f"cohort {cohort.name}: waves from {from_wave} drawn again ({sizes})")
    return 0


def _pinned(ctx: click.Context) -> Callable[[Runbook], dict[str, Any] | None]:
    """Without --var: the vars of the run in progress (SPEC §11: a run stores its vars), as
    ``apply`` takes them, so that the cohort is read from the source the run reads."""
    from ..state.pinned import run_vars

    return lambda rb: run_vars(state_dir(ctx), rb.name, strict=True)
