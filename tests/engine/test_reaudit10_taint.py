"""Issue 10 re-audit, item 2: the `| raw` lint lost outside data through `{% with %}`, a
namespace attribute and a name bound to `steps` itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import runbook_yaml, sh

X = "steps.q.outputs.stdout"


@pytest.mark.parametrize(
    "command",
    [
        "{% with y = " + X + " %}echo {{ y | raw }}{% endwith %}",
        "{% set ns = namespace(v='') %}{% set ns.v = " + X + " %}echo {{ ns.v | raw }}",
        "{% set s = steps %}echo {{ s.q.outputs.stdout | raw }}",
        "{% set s = steps.q %}echo {{ s.outputs.stdout | raw }}",
        "echo {{ (steps | dictsort | first)[1].outputs.stdout | raw }}",
    ],
)
def test_raw_lint_follows_with_namespace_and_aliases_of_outside_roots(
    runbook: Any, command: str
) -> None:
    Path("r.yaml").write_text(
        runbook_yaml(
            phases=[{"id": "p", "steps": [sh("q", "printf 'ok; touch X'"), sh("a", command)]}]
        )
    )
    r = runbook("validate", "r.yaml")
    assert r.code == 0 and "| raw` writes outside data into a command as it is" in r.err, r.err
    strict = runbook("validate", "--strict", "r.yaml")
    assert strict.code == 2 and "| raw` writes outside data" in strict.err, strict.err
    assert not Path(".runbook").exists()


def test_raw_lint_stays_quiet_on_the_runbooks_own_values(runbook: Any) -> None:
    command = "{% with y = vars.t %}echo {{ y | raw }} {{ steps.q.status | raw }}{% endwith %}"
    Path("r.yaml").write_text(
        runbook_yaml(
            vars={"t": "x"},
            phases=[{"id": "p", "steps": [sh("q", "true"), sh("a", command)]}],
        )
    )
    r = runbook("validate", "--strict", "r.yaml")
    assert r.code == 0 and "warning" not in r.err, r.err
