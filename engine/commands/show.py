"""``runbook show FILE``: the runbook in canonical form (the git ``textconv`` for runbooks)."""

from __future__ import annotations

import json
from typing import Any

import click
import yaml

from ..console.terminal import Console
from ..errors import Exit, InvalidInput, ValidationFailed
from ..format.loader import load
from ..masking import mask_url_passwords
from ..review.canonical import build_side, document

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _CanonicalDumper(_Dumper):  # type: ignore[misc]
    """Multi-line strings as literal blocks (a changed line of a command is one changed line),
    no anchors or aliases (each instance reads whole), no line folding."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: Any, value: str) -> Any:
    if "\n" in value and not any(c in value for c in "\r\t") and value == value.rstrip(" "):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_CanonicalDumper.add_representer(str, _str)


def dump_yaml(doc: Any) -> str:
    text: str = yaml.dump(
        doc,
        Dumper=_CanonicalDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
    return text


def show(file: str, fmt: str, raw_on_error: bool, console: Console) -> int:
    try:
        loaded = load(file)
    except (ValidationFailed, InvalidInput) as exc:
        problems = exc.problems if isinstance(exc, ValidationFailed) else []
        for p in problems:
            console.err(console.style(str(p), "red", err=True))
        if not problems:
            console.err(f"runbook: {exc.message}")
        if raw_on_error:
            try:
                with open(file, encoding="utf-8", errors="replace") as fh:
                    console.out(fh.read().rstrip("\n"))
            except OSError:
                return int(Exit.INVALID)
            return int(Exit.OK)
        console.err(f"{file}: invalid: nothing to show")
        return int(Exit.INVALID)
    doc = document(build_side(loaded))
    if fmt == "json":
        console.out(mask_url_passwords(json.dumps(doc, indent=2, ensure_ascii=False, default=str)))
    else:
        console.stdout.write(mask_url_passwords(dump_yaml(doc)))
    return int(Exit.OK)


@click.command(name="show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="yaml: the canonical text; json: the same document as JSON.",
)
@click.option(
    "--raw-on-error",
    is_flag=True,
    help="When FILE is invalid, list its problems on stderr, print the file as it is and exit 0 "
    "(for git's textconv, which aborts `git diff` on a failing command).",
)
def command(file: str, fmt: str, raw_on_error: bool) -> int:
    """Print FILE normalised: one canonical text per meaning.

    Defaults are applied (timeout, retries, on_failure, idempotent), waves are expanded into
    their instances `STEP[WAVE]` with the wave's vars, every step's `needs` is made explicit
    (the nearest steps that must be done before it, as the DAG orders them), keys come in a
    fixed order and comments are gone.  Two files that mean the same print the same text,
    so reformatting, comments and key order never show in `git diff` once this is the
    runbooks' textconv (see docs/review.md).  Secrets are listed by name only.

    Exit 0, or 2 when FILE is not a valid runbook (its problems are listed, located).

    \b
    Examples:
      runbook show runbooks/migrate.yaml
      runbook show --format json runbooks/migrate.yaml | jq '.phases[].steps[].id'
      git config diff.runbook.textconv "runbook show"
    """
    return show(file, fmt, raw_on_error, Console())
