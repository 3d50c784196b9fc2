"""Mutated example runbooks never crash the loader or ``validate`` (issue 10, item 19).

Hypothesis draws mutations of the two examples (bench/fuzz_mutations.py: deleted, duplicated
and swapped lines, shifted indentation, stray YAML syntax, anchors, aliases, merge keys, tags,
replaced values, keys and words, raw bytes). Every mutant must load or fail with a located
problem (exit 2): never another exception, never exit 1 with "internal error", never a
traceback, never a file written. ``bench/fuzz_campaign.py`` runs the same mutants by the
ten thousand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_engine.errors import Exit, RunbookError
from runbook_engine.format.loader import load_text
from runbook_engine.format.yamlsource import decode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fuzz_mutations import OPS, Mutation, Sources, mutate

SOURCES = Sources()
MUTATIONS = st.lists(
    st.builds(
        Mutation,
        st.sampled_from(OPS),
        st.integers(0, 1 << 20),
        st.integers(0, 1 << 20),
        st.binary(min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=4,
)


def listing(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, name), root)
        for d, dirs, files in os.walk(root)
        for name in [*dirs, *files]
    )


def test_the_mutant_of_the_issue(runbook, tmp_path: Path) -> None:
    """The acai example's first `with:` turned into `wit<<: *ah:` (was an AttributeError)."""
    text = SOURCES.texts[0].replace("\n    with:\n", "\n    wit<<: *ah:\n", 1)
    assert text != SOURCES.texts[0]
    Path("m.yaml").write_text(text, encoding="utf-8")
    before = listing(tmp_path)
    r = runbook("validate", "m.yaml")
    assert r.code == 2, r.output
    line = text[: text.index("wit<<: *ah:")].count("\n") + 1  # the example's own line
    assert f"m.yaml:{line}:12: contingencies[0].wit<<: unknown alias *ah" in r.err
    assert "internal error" not in r.output and "Traceback" not in r.output
    assert listing(tmp_path) == before


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 1), MUTATIONS)
def test_the_loader_fails_only_with_located_problems(which: int, mutations: list[Mutation]) -> None:
    data = mutate(SOURCES, which, mutations)
    try:
        load_text(decode(data, "m.yaml"), "m.yaml")
    except RunbookError as exc:
        assert exc.exit_code == Exit.INVALID, exc


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.integers(0, 1), MUTATIONS)
def test_validate_exits_0_or_2_without_a_traceback(
    runbook, tmp_path: Path, which: int, mutations: list[Mutation]
) -> None:
    Path("m.yaml").write_bytes(mutate(SOURCES, which, mutations))
    before = listing(tmp_path)
    r = runbook("validate", "m.yaml")
    assert r.code in (0, 2), r.output
    assert "internal error" not in r.output
    assert "Traceback" not in r.output
    if r.code == 2:
        assert "m.yaml:" in r.err  # located
    assert listing(tmp_path) == before  # no crash log, no state
