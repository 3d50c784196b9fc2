"""graph --state: the DAG coloured by each step's status, in mermaid, dot and JSON."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from runbook_engine.graph.colours import STYLES
from tests.conftest import ci_requires
from tests.engine.helpers import sh, write
from tests.engine.report_run import applied


def mermaid_classes(text: str) -> dict[str, str]:
    """step instance id -> its status class, read back from the mermaid text."""
    node_ids = {m.group(1): m.group(2) for m in re.finditer(r'(\w+)\["([^"<]+)<br/>', text)}
    out = {}
    for m in re.finditer(r"^  class ([\w,]+) st_(\w+)$", text, re.MULTILINE):
        for nid in m.group(1).split(","):
            out[node_ids[nid]] = m.group(2)
    return out


def test_mermaid_has_a_classdef_per_status_and_every_step_in_one(runbook) -> None:
    applied(runbook)
    r = runbook("graph", "m.yaml", "--state")
    assert r.code == 0, r.output
    classes = mermaid_classes(r.out)
    assert classes["health[all]"] == "failed"
    assert classes["copy[all]"] == classes["verify[all]"] == "rolled_back"
    assert classes["backup"] == classes["copy[pilot]"] == classes["go-no-go"] == "succeeded"
    assert len(classes) == 13
    ok, failed, undone = STYLES["succeeded"], STYLES["failed"], STYLES["rolled_back"]
    assert f"  classDef st_succeeded fill:{ok.fill},stroke:{ok.strong},color:#212529" in r.out
    assert f"  classDef st_failed fill:{failed.fill},stroke:{failed.strong}" in r.out
    assert f"  classDef st_rolled_back fill:{undone.fill},stroke:{undone.strong}" in r.out
    # the graph itself is the one `graph` draws without --state
    plain = runbook("graph", "m.yaml").out
    assert r.out.startswith(plain.rstrip("\n"))


def test_waiting_and_unknown_and_never_run_steps(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    {"id": "ok", "action": "approval", "with": {}},
                    sh("later", "true", needs=["ok"]),
                ],
            }
        ],
    )
    r = runbook("graph", "r.yaml", "--state")
    assert r.code == 0 and set(mermaid_classes(r.out).values()) == {"pending"}
    assert runbook("apply", "r.yaml", "--yes").code == 3
    classes = mermaid_classes(runbook("graph", "r.yaml", "--state").out)
    assert classes == {"ok": "waiting", "later": "pending"}
    doc = json.loads(runbook("graph", "r.yaml", "--state", "--format", "json").out)
    steps = {n["id"]: n for n in doc["nodes"] if n["kind"] == "step"}
    assert steps["ok"]["status"] == "waiting" and steps["ok"]["fillcolor"] == STYLES["waiting"].fill
    assert steps["later"]["status"] == "pending"
    assert all("status" not in n for n in doc["nodes"] if n["kind"] != "step")


def test_dot_fills_every_step_and_has_a_legend(runbook) -> None:
    applied(runbook)
    r = runbook("graph", "m.yaml", "--state", "--format", "dot", "--rollbacks")
    assert r.code == 0, r.output
    failed = STYLES["failed"]
    assert (
        f'  "health[all]" [style="rounded,filled", fillcolor="{failed.fill}", '
        f'color="{failed.strong}"];' in r.out
    )
    assert r.out.count('style="rounded,filled", fillcolor=') == 13 + 3  # steps + legend
    assert 'subgraph "cluster_legend"' in r.out and '[label="rolled back"' in r.out
    assert r.out.rstrip().endswith("}")


def test_dot_output_is_valid_graphviz(runbook, tmp_path: Path) -> None:
    dot = shutil.which("dot")
    if dot is None:
        ci_requires("graphviz (dot)")
    assert dot is not None
    applied(runbook)
    r = runbook("graph", "m.yaml", "--state", "--format", "dot")
    svg = subprocess.run([dot, "-Tsvg"], input=r.out, capture_output=True, text=True, check=False)
    assert svg.returncode == 0, svg.stderr
    assert svg.stderr == ""
    assert svg.stdout.count(f'fill="{STYLES["succeeded"].fill}"') >= 10
    assert f'fill="{STYLES["failed"].fill}"' in svg.stdout


def test_damaged_state_is_exit_2_and_left_untouched(runbook) -> None:
    import sqlite3

    applied(runbook)
    path = Path(".runbook/acme-migration/state.db")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(
        'UPDATE journal SET rec = replace(rec, \'"status":"failed"\', \'"status":"failex"\')'
        ' WHERE seq = (SELECT min(seq) FROM journal WHERE rec LIKE \'%"status":"failed"%\')'
    )
    con.close()
    before = path.read_bytes()
    r = runbook("graph", "m.yaml", "--state")
    assert r.code == 2 and "is not a valid state record" in r.err
    assert "Traceback" not in r.output and path.read_bytes() == before
