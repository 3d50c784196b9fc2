"""The HTML report as a real headless Chromium draws it: not blank, the timeline's bars and the
gate charts on screen, no script and nothing fetched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runbook_engine.graph.colours import STYLES
from runbook_engine.report.svg import GATE_LINE
from tests.conftest import ci_requires
from tests.engine.browser import dump_dom, find_chromium, read_png, screenshot
from tests.engine.report_run import applied


@pytest.fixture
def chromium() -> str:
    found = find_chromium()
    if found is None:
        ci_requires("chromium")
    assert found is not None
    return found


def test_the_report_draws_its_timeline_and_gates_in_chromium(
    runbook, chromium: str, tmp_path: Path
) -> None:
    applied(runbook)
    page = tmp_path / "report.html"
    r = runbook("report", "m.yaml", "--format", "html", "--output", str(page))
    assert r.code == 0, r.output
    png = tmp_path / "report.png"
    screenshot(chromium, page.as_uri(), png, 1280, 2000)
    image = read_png(png)
    assert (image.width, image.height) == (1280, 2000)
    assert image.distinct_colours() > 20 and image.share_not_white() > 0.05  # not blank
    # the timeline: green bars for the 10 steps that succeeded (12px high, tens of px long),
    # the failed gate in red, the rolled back copy in its own colour
    assert image.count(STYLES["succeeded"].strong) > 3000
    assert image.count(STYLES["failed"].strong) > 300
    assert image.count(STYLES["rolled_back"].strong) > 150
    # the gate charts: their line has a colour of its own
    assert image.count(GATE_LINE) > 300


def test_the_dom_has_no_script_and_the_hostile_text_stays_text(
    runbook, chromium: str, tmp_path: Path
) -> None:
    applied(runbook)
    page = tmp_path / "report.html"
    assert runbook("report", "m.yaml", "--format", "html", "-o", str(page)).code == 0
    dom = dump_dom(chromium, page.as_uri())
    assert '<svg class="gantt"' in dom and dom.count('<svg class="gate"') == 3
    assert re.search(r"<script[\s>]", dom) is None
    assert "go &lt;script&gt;alert('x')&lt;/script&gt;" in dom
    assert len(re.findall(r"<rect [^>]*fill=\"#2f9e44\"", dom)) >= 10
