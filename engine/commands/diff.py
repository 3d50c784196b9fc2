"""``runbook diff OLD NEW``: the semantic diff of two runbooks, riskier changes first."""

from __future__ import annotations

import difflib
import json
import os

import click

from ..console.terminal import Console
from ..errors import Exit, Problem, ValidationFailed
from ..format.yamlsource import read_file
from ..masking import mask_url_passwords
from ..review.compare import Diff, compare
from ..review.load import Source, build_pair, read_source
from ..review.markdown import markdown
from ..review.rules import RULES, flag
from ..review.text import as_json, text


def compute(old: Source, new: Source) -> Diff:
    """Load, compare and flag; ``ValidationFailed`` lists OLD's problems, then NEW's."""
    a, b = build_pair(old, new)
    if isinstance(a, list) or isinstance(b, list):
        problems: list[Problem] = [*(a if isinstance(a, list) else [])]
        problems += b if isinstance(b, list) else []
        raise ValidationFailed(problems)  # sorted: each side's problems together, by line
    d = compare(a, b)
    flag(d)
    return d


def render(d: Diff, fmt: str, console: Console, header: str = "") -> str:
    """The diff as text; a password inside a URL value is masked (secrets are names only)."""
    if fmt == "json":
        out = json.dumps(as_json(d), indent=2, ensure_ascii=False, default=str)
    elif fmt == "markdown":
        out = markdown(d).rstrip("\n")
    else:
        out = text(d, console.style, header)
    return mask_url_passwords(out)


def _invalid(exc: ValidationFailed, console: Console) -> None:
    for p in exc.problems:
        console.err(console.style(str(p), "red", err=True))
    console.err(f"runbook diff: invalid input ({len(exc.problems)} problem(s)): nothing compared")


def diff(old: str, new: str, fmt: str, console: Console) -> int:
    sources = read_source(old), read_source(new)
    try:
        d = compute(*sources)
    except ValidationFailed as exc:
        _invalid(exc, console)
        return int(Exit.INVALID)
    console.out(render(d, fmt, console))
    return int(Exit.FAILED if d.changed else Exit.OK)


def external(args: tuple[str, ...], fmt: str, console: Console) -> int:
    """git's external diff driver: always exit 0 once something was printed."""
    if len(args) == 1:
        console.out(f"* Unmerged path {args[0]}")
        return int(Exit.OK)
    if len(args) not in (7, 9):
        raise click.UsageError(
            "--git-external takes git's 7 arguments: "
            "PATH OLD-FILE OLD-HEX OLD-MODE NEW-FILE NEW-HEX NEW-MODE "
            f"(got {len(args)})"
        )
    path, old_file, _, _, new_file = args[:5]
    new_path = args[7] if len(args) == 9 else path
    sides: list[Source] = []
    for file, name in ((old_file, f"a/{path}"), (new_file, f"b/{new_path}")):
        sides.append(Source(name, None if file == os.devnull else read_file(file, name)))
    note = ""
    if sides[0].text is None:
        note = " (new file)"
    elif sides[1].text is None:
        note = " (deleted file)"
    header = f"diff --runbook a/{path} b/{new_path}{note}"
    try:
        d = compute(sides[0], sides[1])
    except ValidationFailed as exc:
        console.out(header)
        console.out("runbook: not a valid runbook on both sides; showing a plain text diff")
        for p in exc.problems:
            console.out(f"  {p}")
        before = (sides[0].text or "").splitlines(keepends=True)
        after = (sides[1].text or "").splitlines(keepends=True)
        for line in difflib.unified_diff(before, after, sides[0].display, sides[1].display):
            console.stdout.write(line if line.endswith("\n") else line + "\n")
        return int(Exit.OK)
    console.out(render(d, fmt, console, header))
    return int(Exit.OK)


_RULES_HELP = "\n".join(f"  {rule:<27}{doc}" for rule, (doc, _) in RULES.items())


@click.command(
    name="diff",
    epilog="\b\nRules that flag a change as riskier (ids in the output):\n" + _RULES_HELP,
)
@click.argument("sides", nargs=-1, required=True, metavar="OLD NEW")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
    help="text for a terminal (coloured on a tty unless NO_COLOR); markdown for a "
    "pull-request comment (always under 65,000 characters); json for tools.",
)
@click.option(
    "--git-external",
    is_flag=True,
    help="Act as git's external diff driver: take git's 7 arguments "
    "(PATH OLD-FILE OLD-HEX OLD-MODE NEW-FILE NEW-HEX NEW-MODE) and exit 0.",
)
def command(sides: tuple[str, ...], fmt: str, git_external: bool) -> int:
    """Compare two versions of a runbook by meaning, riskier changes first.

    Both sides are parsed, checked and expanded (defaults applied, waves instantiated), then
    compared: phases, waves (added, removed, resized), steps (added, removed, renamed when the
    definition is unchanged, moved between phases), every changed field as old -> new,
    dependencies and execution order, rollbacks, on_failure, retries, timeouts, risks,
    contingencies, vars (values shown), secrets (names only), hosts.  Reformatting, comments
    and key order are not changes.

    Changes that make the migration riskier are listed first, each with a rule id (below).

    OLD and NEW are files, `/dev/null` (no runbook), or `REV:PATH` read with `git show`
    (PATH from the repository's top, or `./PATH` from the current directory).  A file that
    exists wins over REV:PATH.

    Exit 0 when nothing changed, 1 when something did, 2 on invalid input (each side's
    problems located in its own file, named as given).

    \b
    Examples:
      runbook diff old.yaml new.yaml
      runbook diff main:runbooks/migrate.yaml runbooks/migrate.yaml
      runbook diff --format markdown origin/main:runbooks/x.yaml runbooks/x.yaml > comment.md
      git config diff.runbook.command "runbook diff --git-external"   # see docs/review.md
    """
    console = Console()
    if git_external:
        return external(sides, fmt, console)
    if len(sides) != 2:
        raise click.UsageError(f"diff takes two runbooks, OLD and NEW (got {len(sides)})")
    return diff(sides[0], sides[1], fmt, console)
