"""``runbook diff``: semantic changes, flagged (riskier) changes by rule, formats, bounds."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RUNBOOK_BIN, Result
from tests.engine.diff_fixtures import BASE, REFORMATTED, edit, write


def _diff(runbook, new: str, *args: str, old: str = BASE) -> Result:  # type: ignore[no-untyped-def]
    write("old.yaml", old)
    write("new.yaml", new)
    return runbook("diff", *args, "old.yaml", "new.yaml")  # type: ignore[no-any-return]


def _flags(runbook, new: str, old: str = BASE) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """The flags as (rule, message); also checks the exit code and that text lists them first."""
    r = _diff(runbook, new, "--format", "json", old=old)
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    found = [(f["rule"], f["message"]) for f in doc["flags"]]
    text = runbook("diff", "old.yaml", "new.yaml")
    assert text.code == 1
    if found:
        lines = text.out.splitlines()
        assert lines[1] == f"RISKIER: {len(found)} change(s) make this migration riskier"
        assert lines[2].startswith(f"  !! [{found[0][0]}] ")
    return found


def _rules(found: list[tuple[str, str]]) -> list[str]:
    return [rule for rule, _ in found]


# -- no change -----------------------------------------------------------------------------


def test_reformatting_is_no_change(runbook) -> None:
    r = _diff(runbook, REFORMATTED)
    assert r.code == 0, r.out + r.err
    assert r.out.splitlines() == ["runbook diff old.yaml -> new.yaml", "no semantic changes"]
    j = runbook("diff", "--format", "json", "old.yaml", "new.yaml")
    assert j.code == 0
    doc = json.loads(j.out)
    assert doc["changed"] is False and doc["changes"] == [] and doc["flags"] == []
    md = runbook("diff", "--format", "markdown", "old.yaml", "new.yaml")
    assert md.code == 0
    assert "No semantic changes" in md.out


# -- one test per rule -----------------------------------------------------------------------


def test_rule_rollback_removed(runbook) -> None:
    new = edit(
        BASE,
        (
            'rollback: {action: shell, with: {command: "echo undo {{ wave.vars.percent }}"}}',
            "rollback: none",
        ),
    )
    assert (
        "rollback-removed",
        "step `copy`: rollback set to `none` (was shell): this step can no longer be undone",
    ) in _flags(runbook, new)


def test_rule_rollback_removed_when_the_key_goes(runbook) -> None:
    new = edit(
        BASE,
        (
            '        rollback: {action: shell, with: {command: "echo undo {{ wave.vars.percent }}"}}\n',
            "",
        ),
    )
    found = _flags(runbook, new)
    assert (
        "rollback-removed",
        "step `copy`: rollback removed (was shell): this step can no longer be undone",
    ) in found


def test_rule_on_failure_weakened(runbook) -> None:
    new = edit(BASE, ("on_failure: rollback\n", "on_failure: continue\n"))
    found = _flags(runbook, new)
    assert found == [
        ("on-failure-weakened", "step `copy`: on_failure weakened: rollback -> continue")
    ]


def test_on_failure_strengthened_is_not_flagged(runbook) -> None:
    r = _diff(runbook, edit(BASE, ("on_failure: rollback-wave", "on_failure: rollback")))
    assert r.code == 1
    assert "RISKIER" not in r.out
    assert '~ step health on_failure: "rollback-wave" -> "rollback"' in r.out


def test_rule_contingency_removed(runbook) -> None:
    new = edit(
        BASE,
        ("contingencies: [restore, page]", "contingencies: [page]"),
        ('  - id: restore\n    action: shell\n    with: {command: "echo restore"}\n', ""),
    )
    found = _flags(runbook, new)
    assert (
        "contingency-removed",
        "contingency `restore` (shell) removed: nothing runs in its "
        "place when its risk materialises",
    ) in found


def test_rule_risk_removed(runbook) -> None:
    new = edit(
        BASE,
        (
            "  - id: slow-copy\n    likelihood: high\n    impact: low\n    contingencies: [page]\n",
            "",
        ),
        ("risks: [data-loss, slow-copy]", "risks: [data-loss]"),
    )
    found = _flags(runbook, new)
    assert found == [
        ("risk-removed", "risk `slow-copy` (high likelihood, low impact) removed from the register")
    ]


def test_rule_risk_downgraded(runbook) -> None:
    new = edit(
        BASE, ("impact: critical", "impact: high"), ("likelihood: medium", "likelihood: low")
    )
    found = _flags(runbook, new)
    assert found == [
        ("risk-downgraded", "risk `data-loss`: likelihood downgraded medium -> low"),
        ("risk-downgraded", "risk `data-loss`: impact downgraded critical -> high"),
    ]


def test_risk_upgraded_is_not_flagged(runbook) -> None:
    r = _diff(runbook, edit(BASE, ("impact: low", "impact: high")))
    assert r.code == 1
    assert "RISKIER" not in r.out
    assert '~ risk slow-copy.impact: "low" -> "high"' in r.out


def test_rule_risk_contingencies_reduced(runbook) -> None:
    found = _flags(
        runbook, edit(BASE, ("contingencies: [restore, page]", "contingencies: [restore]"))
    )
    assert found == [
        (
            "risk-contingencies-reduced",
            "risk `data-loss`: contingencies shortened, no longer run: page",
        )
    ]


def test_rule_gate_removed(runbook) -> None:
    health = (
        "      - id: health\n        action: check\n"
        '        with: {command: "echo 0.01", condition: "value < 0.02", interval: 1s, count: 3, '
        "failure_limit: 1}\n        on_failure: rollback-wave\n"
    )
    found = _flags(runbook, edit(BASE, (health, "")))
    assert ("gate-removed", "gate `health` (check) removed from phase `rollout`") in found
    sign_off = '      - id: sign-off\n        action: approval\n        with: {message: "go?", approvers: [alice, bob]}\n'
    replaced = "      - {id: sign-off, action: wait, with: {duration: 1s}}\n"
    found = _flags(runbook, edit(BASE, (sign_off, replaced)))
    assert ("gate-removed", "step `sign-off`: no longer a gate: action approval -> wait") in found


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "failure_limit: 1",
            "failure_limit: 2",
            "check gate loosened: failure_limit raised 1 -> 2",
        ),
        ("count: 3", "count: 1", "check gate loosened: count lowered 3 -> 1"),
        (
            'condition: "value < 0.02"',
            'condition: "value < 0.2"',
            "check gate loosened: condition changed 'value < 0.02' -> 'value < 0.2'",
        ),
        (
            "approvers: [alice, bob]",
            "approvers: [alice, bob, mallory]",
            "approval gate loosened: approvers widened: + mallory",
        ),
        (
            ", approvers: [alice, bob]}",
            "}",
            "approval gate loosened: approvers removed (were alice, bob): anyone may approve",
        ),
    ],
)
def test_rule_gate_loosened(runbook, old: str, new: str, message: str) -> None:
    found = _flags(runbook, edit(BASE, (old, new)))
    step = "sign-off" if "approval" in message else "health"
    assert found == [("gate-loosened", f"step `{step}`: {message}")]


def test_gate_tightened_is_not_flagged(runbook) -> None:
    r = _diff(
        runbook,
        edit(BASE, ("count: 3", "count: 5"), ("approvers: [alice, bob]", "approvers: [alice]")),
    )
    assert r.code == 1
    assert "RISKIER" not in r.out


def test_rule_pilot_enlarged(runbook) -> None:
    found = _flags(
        runbook, edit(BASE, ("{id: pilot, vars: {percent: 1}}", "{id: pilot, vars: {percent: 5}}"))
    )
    assert found == [
        ("pilot-enlarged", "phase `rollout`: pilot wave `pilot` enlarged: percent 1 -> 5")
    ]


def test_wave_resized_later_wave_is_a_change_not_a_flag(runbook) -> None:
    r = _diff(
        runbook,
        edit(BASE, ("{id: early, vars: {percent: 10}}", "{id: early, vars: {percent: 20}}")),
    )
    assert r.code == 1
    assert "RISKIER" not in r.out
    assert '~ wave rollout.early resized: {"percent": 10} -> {"percent": 20}' in r.out


def test_rule_wave_removed(runbook) -> None:
    found = _flags(runbook, edit(BASE, ("      - {id: early, vars: {percent: 10}}\n", "")))
    assert found == [
        (
            "wave-removed",
            "phase `rollout`: wave `early` removed (percent: 10): the rollout has one stage fewer",
        )
    ]


def test_rule_change_without_risk(runbook) -> None:
    new = edit(
        BASE,
        (
            "      - id: announce\n",
            "      - {id: purge, action: shell, with: {command: rm -rf old}, rollback: none}\n"
            "      - id: announce\n",
        ),
    )
    found = _flags(runbook, new)
    assert found == [
        (
            "change-without-risk",
            "step `purge`: new step (shell) changes something but names no risk",
        )
    ]


def test_new_step_naming_a_risk_is_not_flagged(runbook) -> None:
    new = edit(
        BASE,
        (
            "      - id: announce\n",
            "      - {id: purge, action: shell, with: {command: rm -rf old}, rollback: none, "
            "risks: [data-loss]}\n      - id: announce\n",
        ),
    )
    r = _diff(runbook, new)
    assert r.code == 1
    assert "RISKIER" not in r.out
    assert "+ step purge (shell)" in r.out
    assert "+ wait" not in r.out


def test_rule_order_loosened_by_a_parallel_phase(runbook) -> None:
    found = _flags(
        runbook, edit(BASE, ("  - id: finish\n", "  - id: finish\n    parallel: true\n"))
    )
    assert found == [
        (
            "order-loosened",
            "phase `finish` is now parallel: its 2 steps, which ran one after another, may now "
            "run side by side",
        )
    ]


def test_rule_order_loosened_by_dropped_needs(runbook) -> None:
    old = edit(
        BASE,
        ("  - id: prepare\n", "  - id: prepare\n    parallel: true\n"),
        ("        action: approval\n", "        action: approval\n        needs: [backup]\n"),
    )
    new = edit(old, ("        needs: [backup]\n", ""))
    found = _flags(runbook, new, old=old)
    assert found == [
        (
            "order-loosened",
            "`sign-off` no longer waits for `backup`: they ran in order and may now run in parallel",
        )
    ]


def test_order_loosened_through_a_removed_step(runbook) -> None:
    """a -> r -> b, r removed and the phase made parallel: b no longer waits for a."""
    old = edit(
        BASE,
        (
            "      - id: announce\n",
            "      - {id: last, action: wait, with: {duration: 0s}}\n      - id: announce\n",
        ),
    )
    old = edit(old, ("  - id: finish\n", "  - id: finish\n    parallel: true\n"))
    old = edit(old, ("      - id: announce\n", "      - id: announce\n        needs: [last]\n"))
    old = edit(old, ("      - {id: last,", "      - {needs: [verify], id: last,"))
    new = edit(
        old,
        ("      - {needs: [verify], id: last, action: wait, with: {duration: 0s}}\n", ""),
        ("        needs: [last]\n", ""),
    )
    found = _flags(runbook, new, old=old)
    assert (
        "order-loosened",
        "`announce` no longer waits for `verify`: they ran in order and may now run in parallel",
    ) in found


def test_inserting_a_step_in_a_chain_loosens_nothing(runbook) -> None:
    new = edit(
        BASE,
        (
            "      - id: announce\n",
            "      - {id: pause, action: wait, with: {duration: 1s}}\n      - id: announce\n",
        ),
    )
    r = _diff(runbook, new)
    assert r.code == 1
    assert "RISKIER" not in r.out
    assert "~ needs of announce: + pause; - verify" in r.out


def test_rule_retries_reduced(runbook) -> None:
    found = _flags(
        runbook,
        edit(
            BASE,
            (
                "        on_failure: rollback\n",
                "        on_failure: rollback\n        retries: 1\n",
            ),
        ),
    )
    assert found == [
        (
            "retries-reduced",
            "step `copy`: retries reduced 3 -> 1 attempts on a step naming critical risk `data-loss`",
        )
    ]


def test_rule_timeout_reduced(runbook) -> None:
    found = _flags(
        runbook,
        edit(
            BASE,
            (
                "        on_failure: rollback\n",
                "        on_failure: rollback\n        timeout: 2m\n",
            ),
        ),
    )
    assert found == [
        (
            "timeout-reduced",
            "step `copy`: timeout reduced 10m -> 2m on a step naming critical risk `data-loss`",
        )
    ]


def test_timeout_reduced_without_a_severe_risk_is_a_change_only(runbook) -> None:
    r = _diff(
        runbook,
        edit(
            BASE,
            (
                'with: {command: "echo verify"}',
                'with: {command: "echo verify"}\n        timeout: 1m',
            ),
        ),
    )
    assert r.code == 1
    assert "RISKIER" not in r.out
    assert '~ step verify timeout: "10m" -> "1m"' in r.out


# -- renames, moves, fields ------------------------------------------------------------------


def test_rename_is_one_change_and_keeps_dependencies(runbook) -> None:
    r = _diff(runbook, edit(BASE, ("      - id: verify\n", "      - id: check-rows\n")))
    assert r.code == 1
    assert "> step check-rows renamed from verify" in r.out
    assert "+ step" not in r.out and "- step" not in r.out
    assert "needs of" not in r.out  # announce still follows the same step
    doc = json.loads(runbook("diff", "--format", "json", "old.yaml", "new.yaml").out)
    assert doc["renamed"] == {"verify": "check-rows"}
    assert doc["summary"] == {"step": {"added": 0, "removed": 0, "changed": 1}}


def test_renamed_wave_step_maps_every_instance(runbook) -> None:
    new = edit(BASE, ("      - id: health\n", "      - id: gate\n"))
    r = _diff(runbook, new)
    assert r.code == 1
    assert "> step gate renamed from health" in r.out
    assert "needs of" not in r.out


def test_changed_definition_is_removed_and_added(runbook) -> None:
    new = edit(
        BASE,
        (
            '      - id: verify\n        action: shell\n        with: {command: "echo verify"}',
            '      - id: check-rows\n        action: shell\n        with: {command: "echo verify!"}',
        ),
    )
    r = _diff(runbook, new)
    assert "+ step check-rows (shell)" in r.out
    assert "- step verify (shell, phase finish)" in r.out


def test_moved_step(runbook) -> None:
    verify = '      - id: verify\n        action: shell\n        with: {command: "echo verify"}\n        rollback: none\n'
    new = edit(BASE, (verify, ""), ("      - id: sign-off\n", verify + "      - id: sign-off\n"))
    r = _diff(runbook, new)
    assert r.code == 1
    assert "> step verify moved from phase finish to prepare" in r.out
    assert "~ needs of verify: + backup; - health[all]" in r.out


def test_field_changes_old_to_new(runbook) -> None:
    new = edit(
        BASE,
        ('with: {command: "echo verify"}', 'with: {command: "echo verify --all"}'),
        ("  new_db: sqlite:///new.db", "  new_db: sqlite:///newer.db"),
        ("port: 2222", "port: 2200"),
        ("owner: ops\n", "owner: dba\n"),
        ("timeout: 10m\n", "timeout: 20m\n"),
    )
    r = _diff(runbook, new)
    assert r.code == 1
    out = r.out
    assert '~ step verify with.command: "echo verify" -> "echo verify --all"' in out
    assert '~ var new_db.default: "sqlite:///new.db" -> "sqlite:///newer.db"' in out  # values shown
    assert "~ host app1.port: 2222 -> 2200" in out
    assert '~ metadata.owner: "ops" -> "dba"' in out
    assert '~ defaults.timeout: "10m" -> "20m"' in out
    assert '~ step backup timeout: "10m" -> "20m"' in out  # the effective value of every step


def test_phases_added_removed_and_needs(runbook) -> None:
    new = edit(
        BASE,
        (
            "  - id: finish\n",
            "  - id: cleanup\n    needs: [prepare]\n    steps:\n      - {id: tidy, action: wait, with: {duration: 1s}, risks: [slow-copy]}\n  - id: finish\n",
        ),
    )
    r = _diff(runbook, new)
    assert r.code == 1
    assert "+ phase cleanup (1 steps)" in r.out
    assert '~ phase finish needs: ["rollout"] -> ["cleanup"]' in r.out


# -- secrets, invalid input, formats ----------------------------------------------------------


def test_secret_values_and_sources_never_printed(runbook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFF_TEST_TOKEN", "s3cr3t-old-value")
    monkeypatch.setenv("OTHER_TOKEN", "s3cr3t-new-value")
    new = edit(
        BASE,
        (
            "api_token: {env: DIFF_TEST_TOKEN}",
            "api_token: {env: OTHER_TOKEN}\n  smtp_password: {file: /run/secrets/smtp}",
        ),
    )
    for fmt in ("text", "markdown", "json"):
        r = _diff(runbook, new, "--format", fmt)
        assert r.code == 1
        assert "api_token" in r.out and "smtp_password" in r.out
        for hidden in ("s3cr3t", "DIFF_TEST_TOKEN", "OTHER_TOKEN", "/run/secrets/smtp"):
            assert hidden not in r.output, (fmt, hidden)
    r = runbook("diff", "old.yaml", "new.yaml")
    assert "~ secret api_token: where its value comes from changed (never shown)" in r.out
    assert "+ secret smtp_password" in r.out


def test_invalid_sides_are_located_in_their_own_file(runbook) -> None:
    write("old.yaml", BASE.replace("action: check", "action: chek"))
    write("new.yaml", BASE.replace("impact: critical", "impact: dire"))
    r = runbook("diff", "old.yaml", "new.yaml")
    assert r.code == 2
    assert r.out == ""
    line_old = BASE.splitlines().index("        action: check") + 1
    line_new = BASE.splitlines().index("    impact: critical") + 1
    assert f"old.yaml:{line_old}:17: phases[1].steps[1].action: unknown action 'chek'" in r.err
    assert f"new.yaml:{line_new}:13: risks[0].impact:" in r.err
    assert "runbook diff: invalid input (2 problem(s)): nothing compared" in r.err
    assert "Traceback" not in r.output


def test_missing_side_and_bad_usage(runbook) -> None:
    write("new.yaml", BASE)
    r = runbook("diff", "gone.yaml", "new.yaml")
    assert r.code == 2
    assert "gone.yaml: no such file" in r.err
    r = runbook("diff", "new.yaml")
    assert r.code == 2
    assert "diff takes two runbooks" in r.err


def test_dev_null_side_is_an_added_runbook(runbook) -> None:
    write("new.yaml", BASE)
    r = runbook("diff", os.devnull, "new.yaml")
    assert r.code == 1
    assert "+ step copy (shell)" in r.out
    assert "+ phase rollout (2 steps)" in r.out


def test_json_format(runbook) -> None:
    r = _diff(
        runbook,
        edit(BASE, ("{id: early, vars: {percent: 10}}", "{id: early, vars: {percent: 20}}")),
        "--format",
        "json",
    )
    assert r.code == 1
    doc = json.loads(r.out)
    assert doc["old"] == "old.yaml" and doc["new"] == "new.yaml" and doc["changed"] is True
    assert doc["changes"] == [
        {
            "subject": "wave",
            "id": "rollout.early",
            "kind": "resized",
            "field": "vars",
            "old": {"percent": 10},
            "new": {"percent": 20},
            "phase": "rollout",
        }
    ]
    assert doc["summary"] == {"wave": {"added": 0, "removed": 0, "changed": 1}}


def test_markdown_order_and_graph(runbook) -> None:
    new = edit(
        BASE,
        ("on_failure: rollback\n", "on_failure: continue\n"),
        (
            "      - id: announce\n",
            "      - {id: pause, action: wait, with: {duration: 1s}}\n      - id: announce\n",
        ),
    )
    r = _diff(runbook, new, "--format", "markdown")
    assert r.code == 1
    md = r.out
    assert md.startswith(
        "### Runbook diff: `old.yaml` → `new.yaml`\n\n| | added | removed | changed |"
    )
    table, flags, details, graph = (
        md.index("| steps | 1 | 0 | 1 |"),
        md.index("#### ⚠️ 1 change(s) make this migration riskier"),
        md.index("<details><summary>All "),
        md.index("```mermaid"),
    )
    assert table < flags < details < graph
    assert "- **`on-failure-weakened`** step `copy`: on_failure weakened: rollback → continue" in md
    assert "##### phase `finish`" in md
    assert "class n" in md and "classDef added" in md
    assert '["pause"]' in md


def test_markdown_stays_under_65000_characters(runbook) -> None:
    def big(tag: str) -> str:
        steps = "".join(
            f'      - {{id: s{i}, action: shell, with: {{command: "echo {tag} {"x" * 60} {i}"}}, '
            f"on_failure: {'rollback' if tag == 'old' else 'continue'}, rollback: none}}\n"
            for i in range(3000)
        )
        return f"apiVersion: runbook/v1\nkind: Runbook\nmetadata: {{name: big}}\nphases:\n  - id: only\n    steps:\n{steps}"

    write("old.yaml", big("old"))
    write("new.yaml", big("new"))
    r = runbook("diff", "--format", "markdown", "old.yaml", "new.yaml")
    assert r.code == 1
    assert len(r.out.encode()) < 65_000
    assert r.out.index("| steps | 0 | 0 | 3000 |") < r.out.index("#### ⚠️ 3000 change(s)")
    assert "> **Cut:**" in r.out and "more flagged change(s) not shown" in r.out
    j = json.loads(runbook("diff", "--format", "json", "old.yaml", "new.yaml").out)
    assert len(j["flags"]) == 3000 and len(j["changes"]) == 6000  # json is never cut


def test_markdown_cuts_details_not_flags_when_flags_fit(runbook) -> None:
    def big(tag: str) -> str:
        steps = "".join(
            f'      - {{id: s{i}, action: shell, with: {{command: "echo {tag} {"y" * 80} {i}"}}, rollback: none}}\n'
            for i in range(2000)
        )
        return f"apiVersion: runbook/v1\nkind: Runbook\nmetadata: {{name: big}}\nphases:\n  - id: only\n    steps:\n{steps}"

    write("old.yaml", big("old"))
    write("new.yaml", big("new"))
    r = runbook("diff", "--format", "markdown", "old.yaml", "new.yaml")
    assert r.code == 1
    assert len(r.out.encode()) < 65_000
    assert "No change was flagged" in r.out
    assert "more change(s) not shown" in r.out
    assert r.out.rstrip().endswith("</details>")


def test_text_is_coloured_on_a_terminal_only(tmp_path: Path) -> None:
    write(tmp_path / "old.yaml", BASE)
    write(tmp_path / "new.yaml", edit(BASE, ("on_failure: rollback\n", "on_failure: continue\n")))

    def on_tty(no_color: bool) -> str:
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        if no_color:
            env["NO_COLOR"] = "1"
        leader, follower = pty.openpty()
        proc = subprocess.run(
            [RUNBOOK_BIN, "diff", "old.yaml", "new.yaml"],
            cwd=tmp_path,
            stdout=follower,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
            timeout=60,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(leader)
        assert proc.returncode == 1
        return b"".join(chunks).decode()

    coloured = on_tty(no_color=False)
    assert "\x1b[31;1mRISKIER" in coloured
    plain = on_tty(no_color=True)
    assert "\x1b[" not in plain and "RISKIER" in plain
    piped = subprocess.run(
        [RUNBOOK_BIN, "diff", "old.yaml", "new.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert piped.returncode == 1 and "\x1b[" not in piped.stdout


def test_help_lists_rules_and_examples(runbook) -> None:
    r = runbook("diff", "--help")
    assert r.code == 0
    for rule in ("rollback-removed", "order-loosened", "timeout-reduced", "gate-loosened"):
        assert rule in r.out
    assert "REV:PATH" in r.out and "Examples" in r.out


def test_a_password_inside_a_url_value_is_never_printed(runbook) -> None:
    base = (
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: dd}\n"
        'vars: {dsn: "postgresql://app:PW@h/db"}\n'
        "phases:\n  - id: p\n    steps:\n      - {id: a, action: wait, with: {duration: 0s}}\n"
    )
    Path("d1.yaml").write_text(base.replace("PW", "first-pw-81"))
    Path("d2.yaml").write_text(base.replace("PW", "second-pw-82"))
    for fmt in ("text", "markdown", "json"):
        r = runbook("diff", "d1.yaml", "d2.yaml", "--format", fmt)
        assert r.code == 1
        assert "postgresql://app:***@h/db" in r.out
        assert "first-pw-81" not in r.output and "second-pw-82" not in r.output
    r = runbook("show", "d1.yaml")
    assert r.code == 0 and "first-pw-81" not in r.output
