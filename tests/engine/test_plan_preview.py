"""`plan` shows templates rendered with what is known before a run (issue 10, "Also").

It printed raw Jinja (`run \\`mkdir -p {{ vars.out | quote }}\\``). Now variables (defaults,
--var-file, --var) and wave values are rendered; step outputs, `run`, `failed_step` and
variables without a value are named as ⟨...⟩; secrets are never rendered, in any format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CANARY = "s3cr'et-CANARY-p@ss"

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: preview}
vars:
  out: {type: string, default: "my dir"}
  region: {type: string}
  batch: 500
secrets:
  token: {env: PREVIEW_TOKEN}
risks:
  - {id: r, likelihood: low, impact: low, contingencies: [page]}
contingencies:
  - id: page
    action: shell
    with: {command: "echo {{ failed_step.id }} failed: {{ failed_step.error | quote }}"}
phases:
  - id: prep
    steps:
      - id: make
        action: shell
        with: {command: "mkdir -p {{ vars.out | quote }} && echo {{ vars.region }}"}
        rollback: {action: shell, with: {command: "rm -r {{ vars.out | quote }}"}}
        risks: [r]
      - id: count
        action: sql.query
        with: {dsn: "sqlite:///x.db", query: "SELECT {{ vars.batch }} AS n"}
      - id: call
        action: http
        with:
          method: POST
          url: "https://api.example.org/{{ run.id }}?token={{ secrets.token }}"
          headers: {Authorization: "Bearer {{ secrets.token }}"}
        rollback: none
      - id: use
        action: shell
        with:
          command: >-
            echo {{ steps.count.outputs.value | quote }} {{ steps['call'].status }}
            {{ secrets.token | upper }}
        rollback: none
      - id: mix
        action: shell
        with:
          command: >-
            echo {{ steps.count.outputs.value + vars.batch }}
            {% if vars.batch > 100 %}big{% else %}small{% endif %}
        rollback: none
      - id: later
        action: shell
        with:
          command: "{% if steps.count.outputs.value %}yes{% endif %} {{ vars.batch }}"
        rollback: none
  - id: move
    waves: [{id: pilot, vars: {n: 1}}, {id: all, vars: {n: 100}}]
    steps:
      - id: copy
        action: shell
        with: {command: "copy {{ wave.previous.vars.n if wave.previous else 0 }}-{{ wave.vars.n }} {{ vars.out | quote }}"}
        rollback: none
"""


@pytest.fixture
def plan_file(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREVIEW_TOKEN", CANARY)
    path = Path("preview.yaml")
    path.write_text(RUNBOOK, encoding="utf-8")
    return path


def steps(runbook, *args: str) -> dict[str, dict[str, object]]:
    r = runbook("plan", "--format", "json", *args)
    assert r.code == 0, r.err
    return {s["id"]: s for g in json.loads(r.out)["groups"] for s in g["steps"]}


def test_vars_and_waves_are_rendered_the_rest_is_named(runbook, plan_file: Path) -> None:
    by_id = steps(runbook, str(plan_file))
    assert by_id["make"]["does"] == "run `mkdir -p 'my dir' && echo ⟨vars.region⟩`"
    assert by_id["make"]["rollback"] == "run `rm -r 'my dir'`"
    assert by_id["count"]["does"] == "query: SELECT 500 AS n"
    assert by_id["call"]["does"] == "POST https://api.example.org/⟨run.id⟩?token=⟨secrets.token⟩"
    assert by_id["use"]["does"] == (
        "run `echo ⟨steps.count.outputs.value⟩ ⟨steps.call.status⟩ ⟨secrets.token⟩`"
    )
    assert by_id["mix"]["does"] == "run `echo ⟨steps.count.outputs.value + vars.batch⟩ big`"
    # a statement that reads a step output cannot be decided: shown as written
    assert by_id["later"]["does"] == (
        "run `{% if steps.count.outputs.value %}yes{% endif %} {{ vars.batch }}`"
    )
    assert by_id["copy[pilot]"]["does"] == "run `copy 0-1 'my dir'`"
    assert by_id["copy[all]"]["does"] == "run `copy 1-100 'my dir'`"


def test_contingencies_name_the_failed_step(runbook, plan_file: Path) -> None:
    r = runbook("plan", "--format", "json", str(plan_file))
    (risk,) = json.loads(r.out)["risks"]
    assert risk["contingencies"][0]["does"] == (
        "run `echo ⟨failed_step.id⟩ failed: ⟨failed_step.error⟩`"
    )


def test_var_and_var_file_are_what_apply_would_use(runbook, plan_file: Path) -> None:
    Path("prod.yaml").write_text("out: /srv/out\nbatch: 7\n", encoding="utf-8")
    by_id = steps(runbook, str(plan_file), "--var-file", "prod.yaml", "--var", "region=eu")
    assert by_id["make"]["does"] == "run `mkdir -p /srv/out && echo eu`"
    assert by_id["count"]["does"] == "query: SELECT 7 AS n"
    assert by_id["mix"]["does"].endswith(" small`")
    bad = runbook("plan", str(plan_file), "--var", "batch=many")
    assert bad.code == 2
    assert "--var batch: expected an integer, got 'many'" in bad.err
    assert bad.out == ""
    assert not Path(".runbook").exists()


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_a_secret_is_never_rendered_into_a_plan(runbook, plan_file: Path, fmt: str) -> None:
    r = runbook("plan", "--format", fmt, str(plan_file), "--var", "region=eu")
    assert r.code == 0, r.err
    assert "⟨secrets.token⟩" in r.out
    for form in (CANARY, CANARY.upper(), "CANARY"):
        assert form not in r.output


def test_the_text_plan_shows_no_raw_jinja_for_the_tour(runbook) -> None:
    tour = Path(__file__).resolve().parents[2] / "runbooks" / "tour" / "operator-session.yaml"
    r = runbook("plan", str(tour))
    assert r.code == 0, r.err
    assert "run `mkdir -p tour`" in r.out
    assert "{{" not in r.out and "{%" not in r.out
    assert "⟨failed_step.error⟩" in r.out
