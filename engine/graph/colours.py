"""``graph --state``: the DAG coloured by each step's status, and the status palette the report
shares (one colour per status everywhere it is drawn).

The renderers of ``graph_render.py`` draw the graph; this module adds the colours to what they
drew: mermaid gets one ``classDef`` per status and ``class`` lines naming the nodes, dot gets a
``fillcolor`` per node and a legend, JSON gets a ``status`` per step node.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..format.loader import Loaded
from ..state.status import Status


@dataclass(frozen=True)
class Style:
    fill: str  # light: a node's background
    strong: str  # the border, and the report's timeline bars
    label: str  # the legend's word


STYLES: dict[str, Style] = {
    Status.PENDING: Style("#f8f9fa", "#adb5bd", "pending"),
    Status.RUNNING: Style("#d0ebff", "#1c7ed6", "running"),
    Status.SUCCEEDED: Style("#d3f9d8", "#2f9e44", "done"),
    Status.FAILED: Style("#ffe3e3", "#e03131", "failed"),
    Status.SKIPPED: Style("#f1f3f5", "#868e96", "skipped"),
    Status.WAITING: Style("#fff3bf", "#f08c00", "waiting"),
    Status.UNKNOWN: Style("#e5dbff", "#7048e8", "unknown"),
    Status.ROLLING_BACK: Style("#ffe8cc", "#e8590c", "rolling back"),
    Status.ROLLED_BACK: Style("#ffdeeb", "#c2255c", "rolled back"),
    Status.ROLLBACK_FAILED: Style("#f3d9fa", "#862e9c", "rollback failed"),
    # not step statuses: how a stretch of time ended in the report's timeline
    "interrupted": Style("#e9ecef", "#495057", "interrupted"),
}


def style(status: str) -> Style:
    return STYLES.get(status, STYLES[Status.PENDING])


def statuses(loaded: Loaded, state_dir: str) -> tuple[dict[str, str], str | None]:
    """Each step instance's status (``pending`` when never run) and the journal's notice."""
    from ..state.store import read_state

    got = read_state(state_dir, loaded.runbook.name)
    state, notice = (got[0], got[1]) if got else (None, None)
    out = {}
    for node in loaded.runbook.instances:
        out[node] = (state.status_of(node) if state else Status.PENDING).value
    return out, notice


# -- mermaid ----------------------------------------------------------------------------------
_MM_NODE = re.compile(r'^\s*(\w+)\["([^"]*?)(?:<br/>[^"]*)?"\]', re.MULTILINE)


def colour_mermaid(text: str, loaded: Loaded, status: dict[str, str]) -> str:
    """Add ``classDef`` per status and ``class`` lines for the step nodes drawn in ``text``."""
    members: dict[str, list[str]] = {}
    for m in _MM_NODE.finditer(text):
        node = m.group(2).replace("#amp;", "&")
        if node in loaded.runbook.instances:
            members.setdefault(status.get(node, "pending"), []).append(m.group(1))
    lines = [text]
    for st, ids in members.items():
        s = style(st)
        lines.append(f"  classDef {_mm_class(st)} fill:{s.fill},stroke:{s.strong},color:#212529")
        for i in range(0, len(ids), 50):  # long class lines are hard to read in a diff
            lines.append(f"  class {','.join(ids[i : i + 50])} {_mm_class(st)}")
    return "\n".join(lines)


def _mm_class(status: str) -> str:
    return "st_" + status


# -- dot --------------------------------------------------------------------------------------
def colour_dot(text: str, loaded: Loaded, status: dict[str, str]) -> str:
    """Give every step node a fill by status (attributes of a node may be given again, later
    in the file), and a legend of the statuses present."""
    body = text.rstrip()
    if not body.endswith("}"):
        return text
    out = [body[:-1].rstrip()]
    for node in loaded.runbook.instances:
        s = style(status.get(node, "pending"))
        out.append(
            f'  {_q(node)} [style="rounded,filled", fillcolor="{s.fill}", color="{s.strong}"];'
        )
    present = [st for st in STYLES if st in set(status.values())]
    out.append('  subgraph "cluster_legend" {')
    out.append('    label="status"; fontsize=10;')
    for st in present:
        s = style(st)
        out.append(
            f'    {_q("legend:" + st)} [label={_q(s.label)}, shape=box, style="rounded,filled",'
            f' fillcolor="{s.fill}", color="{s.strong}", fontsize=10];'
        )
    out.append("  }")
    out.append("}")
    return "\n".join(out)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- json -------------------------------------------------------------------------------------
def colour_json(text: str, loaded: Loaded, status: dict[str, str]) -> str:
    doc = json.loads(text)
    for node in doc.get("nodes", []):
        if node.get("kind") == "step":
            st = status.get(node["id"], "pending")
            node["status"] = st
            node["fillcolor"] = style(st).fill
    return json.dumps(doc, indent=2, ensure_ascii=False)


COLOURERS = {"mermaid": colour_mermaid, "dot": colour_dot, "json": colour_json}


def colour(fmt: str, text: str, loaded: Loaded, state_dir: str) -> tuple[str, str | None]:
    """The rendered graph ``text`` coloured by the statuses in ``state_dir``."""
    status, notice = statuses(loaded, state_dir)
    return COLOURERS[fmt](text, loaded, status), notice
