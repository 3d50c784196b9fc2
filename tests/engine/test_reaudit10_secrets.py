"""Issue 10 re-audit, item 3: `(secrets if true else none).values() | join | reverse` and
`{% set s = secrets %}{{ s.values() | join | reverse }}` wrote a secret reversed, past the
masker.  `secrets` is now only `secrets.NAME` / `secrets['NAME']`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import runbook_yaml, sh

SECRET = "Tok3nZebra9"
USES = [
    "echo {{ (secrets if true else none).values() | join | reverse }}",
    "{% set s = secrets %}echo {{ s.values() | join | reverse }}",
    "{% with s = secrets %}echo {{ s.items() | list | join | reverse }}{% endwith %}",
    "{% set n = namespace(s=secrets) %}echo {{ n.s.values() | join | reverse }}",
    "{% for s in [secrets] %}echo {{ s | join | reverse }}{% endfor %}",
    "echo {{ secrets | list | join }}",
    "echo {{ secrets.values() | join | reverse }}",
    "echo {{ secrets.items() | list | join | reverse }}",
]
# a secret inside a mapping's view (`d.values()`): refused where the sandbox sees it
RUN_TIME_ONLY = ["{% set d = {'k': secrets.tok} %}echo {{ d.values() | join | reverse }}"]


def _doc(command: str) -> str:
    return runbook_yaml(
        secrets={"tok": {"env": "SEC3_TOK"}},
        phases=[{"id": "p", "steps": [sh("use", command + " > out.txt")]}],
    )


@pytest.mark.parametrize("command", USES)
def test_the_secrets_mapping_is_only_secrets_dot_name_exit_2_at_validate(
    runbook: Any, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEC3_TOK", SECRET)
    Path("r.yaml").write_text(_doc(command))
    r = runbook("validate", "r.yaml")
    assert r.code == 2, r.output
    assert "with.command" in r.err and "problem(s)" in r.err, r.err
    assert "`secrets` can only be used as `secrets.NAME`" in r.err or "secret" in r.err
    a = runbook("apply", "r.yaml", "--yes")
    assert a.code == 2, a.output
    assert SECRET[::-1] not in a.output and not Path("out.txt").exists()


@pytest.mark.parametrize("command", USES + RUN_TIME_ONLY)
def test_the_secrets_mapping_refuses_other_uses_at_run_time_and_never_leaks(
    runbook: Any, command: str
) -> None:
    """The sandbox itself refuses, whatever `validate` saw: the view the runner hands to
    templates, rendered by the engine's own renderer."""
    from engine.format.sandbox import SecretMisuse, secrets_view
    from engine.format.templates import render

    seen: list[str] = []
    view = secrets_view({"tok": SECRET}, seen.append)
    with pytest.raises(Exception) as caught:
        render(command, {"secrets": view})
    assert isinstance(caught.value, SecretMisuse) or "secret" in str(caught.value)
    assert SECRET[::-1] not in str(caught.value) and SECRET not in str(caught.value)
