"""The command line: parses, dispatches, and maps errors to SPEC's exit codes. Nothing else.

Each command lives in ``commands/<verb>.py`` and is imported only when it runs (start-up time
matters for ``validate`` in a pre-commit hook).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from . import __version__
from .errors import Exit, RunbookError

# name -> (module, one-line help). The help is here so that `runbook --help` imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("validate", "Check runbooks: schema, actions, templates, references, cycles."),
    "plan": ("plan", "Show what apply would do now, in order, with the risk register."),
    "apply": ("apply", "Run or resume a runbook: parallel, checkpointed, resumable."),
    "status": ("status", "Show each step's status, attempts, duration and last error."),
    "approve": ("approve", "Record an approval for a waiting approval step."),
    "resolve": ("resolve", "Decide the status of a step left unknown by a crash."),
    "rollback": ("rollback", "Undo succeeded steps in reverse dependency order."),
    "lock": ("lock", "Show who holds the state's lease, its age, and whether it is lost."),
    "unlock": ("unlock", "Clear the state's lease (--force), naming its holder; it is fenced."),
    "diff": ("diff", "Semantic diff of two runbook versions, risky changes first."),
    "graph": ("graph", "Print the step DAG as mermaid, dot or json."),
    "customers": ("customers", "Where each customer is: counts by wave x state, journeys."),
    "outbox": ("outbox", "Messages by channel and state; export them, relay them over SMTP."),
    "audit": ("audit", "Recompute the journal's hash chain; print its head (exit 1: broken)."),
    "report": ("report", "After a run: timeline, failures, gates, waves, risks (md, html, json)."),
    "show": ("show", "Print the runbook normalised: the canonical text (git textconv)."),
    "schema": ("schema", "Print the runbook JSON Schema (or an action's)."),
    "cohort": ("cohort", "Draw cohorts into waves, admit late entities, re-draw waves."),
    "state": ("state", "The state store: `state init URL` creates or migrates PostgreSQL's."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(f"runbook_engine.commands.{spec[0]}")
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, helptext) for name, (_, helptext) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--state",
    "--state-dir",
    "state",
    envvar=["RUNBOOK_STATE", "RUNBOOK_STATE_DIR"],
    default=".runbook",
    show_default=True,
    metavar="DIR|URL",
    help="Where run state lives: a directory (DIR/NAME/ per runbook) or a PostgreSQL URL, "
    "postgresql://USER@HOST:PORT/DB (env RUNBOOK_STATE; --state-dir and RUNBOOK_STATE_DIR "
    "are aliases).",
)
@click.version_option(__version__, prog_name="runbook")
@click.pass_context
def cli(ctx: click.Context, state: str) -> None:
    """Declarative migration runbooks: validate, plan, apply, roll back, diff, report.

    A runbook is a YAML file of phases, steps, waves, risks, contingencies and rollbacks.
    Start with `runbook validate FILE` and `runbook plan FILE`.

    \b
    Exit codes:
      0    done
      1    the run failed (for diff: there are changes)
      2    bad usage or an invalid runbook
      3    paused for an approval or an operator's decision
      4    locked by another run (or this run lost its lease)
      130  interrupted (Ctrl-C/SIGTERM), checkpointed and resumable
    """
    ctx.ensure_object(dict)["state_dir"] = _state(state)


def _state(value: str) -> str:
    """A folder or a PostgreSQL URL (``state/location.py``); any other URL, or a DSN with a
    password, is exit 2 (never a folder named after it), its password masked."""
    from .state.location import parse

    parse(value, "--state")
    return value


def _log_dir(state_dir: str | None) -> str:
    """Crash logs go under the state directory (``DIR/.logs``: no runbook name starts with a dot) when there is one, else under
    the user's own ``$XDG_STATE_HOME/runbook/logs`` (``~/.local/state/...``): never a shared
    folder such as /tmp (SPEC §9)."""
    from .files import owned_private_dir, private_dir

    if state_dir and "://" not in state_dir and os.path.isdir(state_dir):
        return str(private_dir(os.path.join(state_dir, ".logs")))
    home = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return str(owned_private_dir(os.path.join(home, "runbook", "logs")))


def _masked_argv(argv: list[str]) -> str:
    """The command line for a log: passwords in URLs and the values of ``--var`` masked."""
    from .masking import MASK, mask_url_passwords

    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            name, sep, _ = arg.partition("=")
            arg, hide_next = (f"{name}={MASK}" if sep else MASK), False
        elif arg == "--var":
            hide_next = True
        elif arg.startswith("--var="):
            name, sep, _ = arg[len("--var=") :].partition("=")
            arg = f"--var={name}={MASK}" if sep else "--var=" + MASK
        out.append(mask_url_passwords(arg))
    return " ".join(out)


def _log_crash(exc: BaseException, state_dir: str | None, argv: list[str]) -> str:
    """The traceback in a new private file (0600, created exclusively, never through a
    symbolic link, with a name nobody can guess in advance); returns its path."""
    from .files import open_private, unique_name
    from .masking import mask_everywhere

    path = os.path.join(_log_dir(state_dir), unique_name("crash", ".log"))
    text = f"runbook {__version__}: runbook {_masked_argv(argv)}\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)
    )
    fd = open_private(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        # the run's secrets (every masker of this process) and passwords in URLs and DSNs
        fh.write(mask_everywhere(text))
    return path


def _without_state_password(text: str, obj: dict[str, Any]) -> str:
    """``text`` with every password of the state URL (``--state postgresql://u:PW@…``, its
    ``password=`` and ``sslpassword=``), as given and percent-decoded, masked."""
    from .masking import mask_dsn

    state = obj.get("state_dir")
    if not isinstance(state, str) or "://" not in state:
        return text
    return mask_dsn(text, state)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) SPEC's exit code."""
    code = run(argv)
    sys.exit(code)


def run(argv: list[str] | None = None) -> int:
    obj: dict[str, Any] = {}
    try:
        result: Any = cli.main(args=argv, prog_name="runbook", standalone_mode=False, obj=obj)
    except RunbookError as exc:
        # the password of a PostgreSQL state URL never reaches the terminal
        click.echo(f"runbook: {_without_state_password(str(exc), obj)}", err=True)
        return int(exc.exit_code)
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(Exit.INVALID)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("runbook: interrupted", err=True)
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        return int(Exit.OK)
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into a line
        from .masking import mask_everywhere

        try:
            args = sys.argv[1:] if argv is None else argv
            where = f"traceback in {_log_crash(exc, obj.get('state_dir'), args)}"
        except OSError as log_exc:
            where = f"no traceback log: {log_exc}"
        click.echo(
            mask_everywhere(f"runbook: internal error: {type(exc).__name__}: {exc} ({where})"),
            err=True,
        )
        return int(Exit.FAILED)
    return int(result or 0)
