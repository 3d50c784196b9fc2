"""Issue 14, the polish of the PostgreSQL lease: an apply racing another's acquire names who
takes it; `approve` and `resolve` beside a writer stalled inside its transaction wait a bounded
time, with a notice, then exit 4 naming the holder (never the lease taken); a failed renewal
is said when it fails and when it recovers. Every command is its own process against a real
server (``tests/servers/postgres.py``, the ``team`` fixture of ``test_state_postgres.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.engine import test_state_postgres as pgt
from tests.engine.helpers import runbook_yaml, sh
from tests.engine.test_state_postgres import Team, _two_places, run

team = pgt.team  # the fixture: one database, two operators' roles


def _role_url(team: Team, role: str, app: str | None = None) -> str:
    url = f"postgresql://{role}:{team.roles[role]}@127.0.0.1:{team.port}/{team.db}"
    return url + (f"?application_name={app.replace(' ', '%20')}" if app else "")


def _lease(team: Team, name: str) -> list[tuple[Any, ...]]:
    return team.sql(
        'SELECT epoch, host, pid, "user" FROM runbook.lease WHERE runbook = %s', (name,)
    )


# -- 2: an apply racing another's acquire names who takes it -----------------------------------


def test_pg_apply_racing_another_acquire_names_who_is_taking_the_lease(
    team: Team, tmp_path: Path
) -> None:
    import psycopg

    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    steps = [sh("a", "echo a >> ledger.txt")]
    for d in (ana, bo):
        (d / "r.yaml").write_text(runbook_yaml("race2", phases=[{"id": "p", "steps": steps}]))
    # another operator's process, taking the lease at this instant: its session holds the
    # lease's advisory lock, its holder row not committed (yet)
    app = "runbook lease 2026-12-02T10:00:00Z pid 4242 @laptop-ana"
    with psycopg.connect(_role_url(team, role_a, app), autocommit=True) as racer:
        racer.execute("SELECT pg_advisory_lock(hashtextextended('runbook.lease:race2', 0))")
        got = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
        assert got.returncode == 4, got.stdout + got.stderr
        assert "the state of race2 is being taken right now by " in got.stderr
        assert f"{role_a} ({app})" in got.stderr, got.stderr
        assert "another process right now" not in got.stderr
        assert "Traceback" not in got.stderr and "internal error" not in got.stderr
        assert _lease(team, "race2") == []  # nothing written: no lease row,
        assert team.journal("race2") == []  # no journal
        assert not (bo / "ledger.txt").exists()
    # that process gone without taking it: the next apply takes it
    done = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (bo / "ledger.txt").read_text().split() == ["a"]
