"""Issue 10 re-audit, item 1: outside data ran as code when a wrapper stood before `sh -c`
(`env`, `timeout 5`, `find … -exec`, `runuser -u root --`…), after `sh -c --`, as the code of
`python -c`/`perl -e`/awk, or piped into a shell (`printf … | sh`).  Every command runs
through a real /bin/sh; PWNED on disk would mean the value ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import runbook_yaml, sh, status_json

X = "{{ steps.src.outputs.stdout }}"
TOUCH = "printf %s 'touch PWNED'"


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("env sh -c X", "in the script of `sh -c`"),
        ("exec sh -c X", "in the script of `sh -c`"),
        ("nohup sh -c X >/dev/null", "in the script of `sh -c`"),
        ("timeout 5 sh -c X", "in the script of `sh -c`"),
        ("echo x | xargs sh -c X", "in the script of `sh -c`"),
        ("find . -maxdepth 0 -exec sh -c X \\;", "in the script of `sh -c`"),
        ("runuser -u root -- sh -c X", "in the script of `sh -c`"),
        ("sudo -u root sh -c X", "in the script of `sh -c`"),
        ("nice -n 5 ionice -c3 stdbuf -oL setsid sh -c X", "in the script of `sh -c`"),
        ("chroot / busybox sh -c X", "in the script of `sh -c`"),
        ("su root -c X", "in the script of `sh -c`"),
        ("sh -c -- X", "in the script of `sh -c`"),
        ("sh -e -c X", "in the script of `sh -c`"),
        ("'sh' -c X", "in the script of `sh -c`"),
        ("sh -c $(printf %s X)", "in the script of `sh -c`"),
        ("python3 -c X", "in the code an interpreter runs"),
        ("perl -e X", "in the code an interpreter runs"),
        ("ruby -e X", "in the code an interpreter runs"),
        ("node -e X", "in the code an interpreter runs"),
        ("php -r X", "in the code an interpreter runs"),
        ("awk X </dev/null", "in the code an interpreter runs"),
        ("env -S X", "in the code an interpreter runs"),
        ("trap X EXIT; true", "after `eval`"),
        ("printf '%s\\n' X | sh", "reads its code from stdin"),
        ("printf '%s\\n' X | bash -s 2>/dev/null", "reads its code from stdin"),
        ("bash <<< X", "reads its code from stdin"),
        ("bash <(printf %s X)", "reads its code from stdin"),
    ],
)
def test_wrapped_interpreter_code_and_piped_shell_values_are_exit_2_at_their_position(
    runbook: Any, command: str, says: str
) -> None:
    cmd = command.replace("X", X)
    Path("r.yaml").write_text(
        runbook_yaml(phases=[{"id": "p", "steps": [sh("src", TOUCH), sh("use", cmd)]}])
    )
    r = runbook("validate", "r.yaml")
    assert r.code == 2 and says in r.err, r.err
    assert "phases[0].steps[1].with.command" in r.err and "problem(s)" in r.err, r.err
    assert not Path("PWNED").exists() and not Path(".runbook").exists()


@pytest.mark.parametrize(
    "prefix", ["env sh -c", "timeout 5 sh -c", "sh -c --", "python3 -c", "printf %s"]
)
def test_wrapped_interpreter_code_shown_only_by_rendering_fails_the_step_and_never_runs(
    runbook: Any, prefix: str
) -> None:
    """The wrapper comes from a raw variable: only the rendered command shows the place."""
    payload = "open('PWNED','w')" if prefix.startswith("python") else "touch PWNED"
    post = "| sh" if prefix == "printf %s" else ""
    Path("r.yaml").write_text(
        runbook_yaml(
            vars={"pre": prefix, "post": post},
            phases=[
                {
                    "id": "p",
                    "steps": [
                        sh("src", f'printf %s "{payload}"'),
                        sh("use", "{{ vars.pre | raw }} " + X + " {{ vars.post | raw }}"),
                    ],
                }
            ],
        )
    )
    assert runbook("validate", "--strict", "r.yaml").code == 0
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    use = next(s for s in status_json(runbook, "r.yaml")["steps"] if s["id"] == "use")
    assert use["status"] == "failed"
    assert use["error"].startswith("template error in with.command: a value lands in the")
    assert not Path("PWNED").exists()


def test_values_as_arguments_of_wrapped_interpreters_still_run(runbook: Any) -> None:
    cmd = (
        'env sh -c \'printf "[%s]" "$1"\' sh X > a.txt; '
        "printf %s X | sh -c 'cat' sh >> a.txt; "
        "awk -v v=X 'BEGIN{printf \"(%s)\", v}' >> a.txt; "
        "python3 -c 'import sys; print(sys.argv[1], end=\"\")' X >> a.txt"
    ).replace("X", X)
    Path("r.yaml").write_text(
        runbook_yaml(phases=[{"id": "p", "steps": [sh("src", TOUCH), sh("use", cmd)]}])
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert Path("a.txt").read_text() == "[touch PWNED]touch PWNED(touch PWNED)touch PWNED"
    assert not Path("PWNED").exists()
