"""The two sides of a diff: a file, ``REV:PATH`` read from git, or ``/dev/null`` (none).

Both sides are checked in full (an invalid side is exit 2 with its problems located in its own
file, named as given).  Big pairs are loaded side by side in two processes: loading is the
whole cost of a diff, and machines have more than one core.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput, Problem, ValidationFailed
from ..format.loader import load_text
from ..format.yamlsource import MAX_BYTES, decode, read_file
from .canonical import Side, build_side

PARALLEL_BYTES = 256 * 1024  # below this, a second process costs more than it saves

Built = Side | list[Problem]


@dataclass(frozen=True)
class Source:
    display: str  # as the user (or git) named it, for messages
    text: str | None  # None: no runbook on this side (an added or deleted file)


def read_source(arg: str, display: str | None = None) -> Source:
    """A plain file that exists wins; else ``REV:PATH`` through ``git show``."""
    name = display or arg
    if arg == os.devnull:
        return Source(name, None)
    if os.path.exists(arg):
        if os.path.isdir(arg):
            raise InvalidInput(f"{name}: is a directory, not a runbook file")
        return Source(name, read_file(arg, name))
    _, sep, path = arg.rpartition(":")
    if sep and path:
        return Source(name, git_show(arg, name))
    raise InvalidInput(
        f"{name}: no such file (to read a runbook from git, write REV:PATH, e.g. main:{arg})"
    )


def git_show(spec: str, name: str) -> str:
    """``git show REV:PATH`` (PATH from the repository's top, or ``./``-relative).  The
    argument is never read as an option (``--end-of-options``), and ``--`` ends the revisions:
    nothing after it is taken for a path either (SPEC §9)."""
    if spec.startswith("-"):
        raise InvalidInput(f"{name}: cannot read from git: a revision cannot start with '-'")
    proc = _git(name, "show", "--no-textconv", "--end-of-options", spec, "--")
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[0].removeprefix("fatal: ") if lines else f"git exited {proc.returncode}"
        if why.startswith("bad revision"):  # say which half is wrong, as git does without --
            rev, _, path = spec.partition(":")
            tree = _git(
                name, "rev-parse", "--verify", "--quiet", "--end-of-options", rev + "^{tree}"
            )
            if tree.returncode != 0:
                why = f"invalid object name {rev!r}"
            else:
                why = f"path {path!r} does not exist in {rev!r}"
        raise InvalidInput(f"{name}: cannot read from git: {why}")
    if proc.stdout.startswith(f"tree {spec}\n".encode()):
        raise InvalidInput(f"{name}: is a directory in git, not a runbook file")
    if len(proc.stdout) > MAX_BYTES:
        raise InvalidInput(f"{name}: over {MAX_BYTES // 1048576} MiB: refused")
    return decode(proc.stdout, name)


def _git(name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], capture_output=True, timeout=120, check=False)
    except FileNotFoundError:
        raise InvalidInput(f"{name}: cannot read from git: git is not installed") from None
    except subprocess.TimeoutExpired:
        raise InvalidInput(
            f"{name}: cannot read from git: `git {args[0]}` took over 120 s"
        ) from None


def empty_side(name: str) -> Side:
    return Side(
        file=name,
        metadata={},
        vars={},
        secrets={},
        hosts={},
        defaults={},
        risks={},
        contingencies={},
        phases={},
        phase_steps={},
        steps={},
        changes={},
        instances={},
        preds={},
    )


def build(src: Source) -> Built:
    """The side in canonical form, or the problems that make it invalid."""
    if src.text is None:
        return empty_side(src.display)
    try:
        return build_side(load_text(src.text, src.display), src.display)
    except ValidationFailed as exc:
        return exc.problems
    except InvalidInput as exc:
        return [Problem(src.display, 1, 1, "", exc.message)]


def _child(conn: Any, src: Source) -> None:
    try:
        result: tuple[str, Built | None] = ("ok", build(src))
    except Exception:  # noqa: BLE001 - the parent builds it again and reports it properly
        result = ("error", None)
    conn.send(result)
    conn.close()


def _parallel(old: Source, new: Source) -> tuple[Built, Built] | None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, old), daemon=True)
    proc.start()
    send.close()
    try:
        mine = build(new)
        status, theirs = receive.recv()
    except EOFError:
        status, theirs = "error", None
    except BaseException:
        proc.kill()
        raise
    finally:
        receive.close()
        proc.join()
    if status != "ok" or theirs is None:
        return None
    return theirs, mine


def build_pair(old: Source, new: Source) -> tuple[Built, Built]:
    size = len(old.text or "") + len(new.text or "")
    if size > PARALLEL_BYTES and hasattr(os, "fork"):
        pair = _parallel(old, new)
        if pair is not None:
            return pair
    return build(old), build(new)
