"""`runbook audit`: the journal's hash chain (SPEC §8 "Audit chain", §11 exit codes, issue 14).

Every test tampers with the state the way an intruder with file access would (plain sqlite3
on state.db), then asserts audit's exit code, the sequence number it names, and that audit
itself changed nothing on disk."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.engine.helpers import RUNBOOK, run_process, write

STATE = Path(".runbook/t/state.db")


def _steps(n: int, duration: str = "0s") -> list[dict[str, object]]:
    return [{"id": f"s{i:02d}", "action": "wait", "with": {"duration": duration}} for i in range(n)]


def _applied(runbook, n: int = 4) -> None:  # type: ignore[no-untyped-def]
    write("r.yaml", phases=[{"id": "p", "steps": _steps(n)}])
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output


def _sql(sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    con = sqlite3.connect(STATE)
    try:
        with con:
            return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _rows() -> list[tuple[int, str, str]]:
    return [
        (int(s), str(t), str(h))
        for s, t, h in _sql("SELECT seq, rec, hash FROM journal ORDER BY seq")
    ]  # type: ignore[misc]


def _digest() -> str:
    return hashlib.sha256(STATE.read_bytes()).hexdigest()


def _audit(runbook, *extra: str) -> tuple[int, dict[str, object], str]:  # type: ignore[no-untyped-def]
    text = runbook("audit", "r.yaml", *extra)
    as_json = runbook("audit", "r.yaml", "--format", "json", *extra)
    assert as_json.code == text.code, (text.output, as_json.output)
    assert "Traceback" not in text.output + as_json.output
    return text.code, json.loads(as_json.out), text.out


def test_untouched_state_holds_and_prints_the_head_on_disk(runbook) -> None:
    _applied(runbook)
    rows = _rows()
    before = _digest()
    code, doc, text = _audit(runbook)
    assert code == 0
    assert doc["holds"] is True and doc["broken"] is None
    assert doc["records"] == len(rows) and doc["chain_from"] == 1 and doc["unchained"] == 0
    # the head is the last record's hash as stored, recomputable by anyone from the bytes
    head = rows[-1][2]
    assert doc["head"] == {"seq": len(rows), "hash": "sha256:" + head}
    prev = "0" * 64
    for seq, text_, _h in rows:
        prev = hashlib.sha256(f"{prev}\n{seq}\n{text_}".encode()).hexdigest()
    assert prev == head
    assert f"chain holds: records 1-{len(rows)}" in text and f"sha256:{head}" in text
    assert _digest() == before  # audit writes nothing


def test_a_tampered_record_is_named_by_its_seq(runbook) -> None:
    _applied(runbook)
    seq, text, _h = _rows()[3]
    changed = text.replace('"succeeded"', '"failed"') if '"succeeded"' in text else text + " "
    assert changed != text
    _sql("UPDATE journal SET rec = ? WHERE seq = ?", (changed, seq))
    before = _digest()
    code, doc, out = _audit(runbook)
    assert code == 1
    assert doc["broken"]["seq"] == seq and doc["broken"]["reason"] == "hash"  # type: ignore[index]
    assert doc["head"]["seq"] == seq - 1  # type: ignore[index]  # it holds up to the one before
    assert f"chain BROKEN at record {seq}" in out
    assert _digest() == before


def test_a_tampered_record_with_its_hash_recomputed_breaks_the_next(runbook) -> None:
    _applied(runbook)
    rows = _rows()
    seq, text, _h = rows[2]
    prev = rows[1][2]
    changed = text[:-1] + ',"note":"forged"}'
    forged = hashlib.sha256(f"{prev}\n{seq}\n{changed}".encode()).hexdigest()
    _sql("UPDATE journal SET rec = ?, hash = ? WHERE seq = ?", (changed, forged, seq))
    code, doc, out = _audit(runbook)
    assert code == 1 and doc["broken"]["seq"] == seq + 1  # type: ignore[index]
    assert f"chain BROKEN at record {seq + 1}" in out


def test_a_deleted_record_is_named_by_its_seq(runbook) -> None:
    _applied(runbook)
    _sql("DELETE FROM journal WHERE seq = 3")
    code, doc, out = _audit(runbook)
    assert code == 1
    assert doc["broken"]["seq"] == 3 and doc["broken"]["reason"] == "missing"  # type: ignore[index]
    assert "record 3 is missing: the journal goes from 2 to 4" in out


def test_deleted_records_renumbered_still_break(runbook) -> None:
    _applied(runbook)
    _sql("DELETE FROM journal WHERE seq = 3")
    _sql("UPDATE journal SET seq = seq - 1 WHERE seq > 3")
    code, doc, _out = _audit(runbook)
    assert code == 1 and doc["broken"]["seq"] == 3  # type: ignore[index]


def test_reordered_records_are_named_by_the_first_seq(runbook) -> None:
    _applied(runbook)
    rows = _rows()
    (s2, t2, h2), (s3, t3, h3) = rows[1], rows[2]
    # swap the two records with their hashes: every row is intact, only the order changed
    _sql("UPDATE journal SET seq = -1 WHERE seq = ?", (s2,))
    _sql("UPDATE journal SET seq = ? WHERE seq = ?", (s2, s3))
    _sql("UPDATE journal SET seq = ? WHERE seq = -1", (s3,))
    assert _rows()[1] == (s2, t3, h3) and _rows()[2] == (s3, t2, h2)
    code, doc, out = _audit(runbook)
    assert code == 1 and doc["broken"]["seq"] == s2  # type: ignore[index]
    assert f"chain BROKEN at record {s2}" in out


def test_a_removed_hash_after_the_chain_started_breaks_it(runbook) -> None:
    _applied(runbook)
    _sql("UPDATE journal SET hash = NULL WHERE seq = 4")
    code, doc, out = _audit(runbook)
    assert code == 1
    assert doc["broken"] == {  # type: ignore[comparison-overlap]
        "seq": 4,
        "reason": "unchained",
        "detail": "record 4 has no hash, but the chain started at 1",
    }
    assert "chain BROKEN at record 4" in out


def test_a_changed_kind_column_is_found_though_the_record_is_intact(runbook) -> None:
    _applied(runbook)
    _sql("UPDATE journal SET kind = 'record' WHERE seq = 2")
    code, doc, out = _audit(runbook)
    assert code == 1
    assert doc["broken"]["seq"] == 2 and doc["broken"]["reason"] == "columns"  # type: ignore[index]
    assert "record 2: its at/kind columns disagree with its content" in out


def test_a_cut_tail_is_found_by_the_kept_head(runbook) -> None:
    _applied(runbook)
    code, doc, _ = _audit(runbook)
    kept = doc["head"]["hash"]  # type: ignore[index]
    # more records after the head was kept: it is still in the chain
    assert runbook("apply", "r.yaml", "--yes", "--replace", "s01").code == 0
    code, doc, out = _audit(runbook, "--head", kept)  # type: ignore[arg-type]
    assert code == 0 and doc["kept_head"] == {"hash": kept, "found": True}
    assert f"kept head {kept} is in the chain" in out
    # the tail cut back to before the kept head: the chain alone holds, the kept head does not
    last = len(_rows())
    _sql("DELETE FROM journal WHERE seq > ?", (last - 6,))
    code, doc, out = _audit(runbook, "--head", kept)  # type: ignore[arg-type]
    assert code == 1 and doc["holds"] is True and doc["kept_head"]["found"] is False  # type: ignore[index]
    assert "is NOT in the chain" in out
    bad = runbook("audit", "r.yaml", "--head", "xyz")
    assert bad.code == 2 and "--head 'xyz': expected a hash of 64 hex digits" in bad.err


def test_records_before_the_chain_existed_are_reported_and_the_chain_starts_after(
    runbook,
) -> None:
    _applied(runbook)
    # the same state as schema 3 wrote it: no hash column
    _sql("ALTER TABLE journal DROP COLUMN hash")
    _sql("DROP TABLE lease")  # schema 5's
    _sql("UPDATE meta SET value = '3' WHERE key = 'version'")
    old = len(_sql("SELECT seq FROM journal"))
    code, doc, out = _audit(runbook)  # a reader never migrates
    assert code == 0 and doc["unchained"] == old and doc["head"] is None
    assert "no chained record yet" in out
    assert _sql("SELECT value FROM meta WHERE key = 'version'") == [("3",)]
    # the next writer migrates to schema 5; the chain starts at its first record
    assert runbook("apply", "r.yaml", "--yes", "--replace", "s00").code == 0
    assert _sql("SELECT value FROM meta WHERE key = 'version'") == [("5",)]
    code, doc, out = _audit(runbook)
    assert code == 0 and doc["unchained"] == old and doc["chain_from"] == old + 1
    assert f"records 1-{old} were written before the chain existed and are not covered" in out
    assert f"the chain starts at record {old + 1}" in out
    assert _sql("SELECT count(*) FROM journal WHERE hash IS NULL") == [(old,)]
    # a record of the chain changed is still found
    _sql("UPDATE journal SET rec = rec || ' ' WHERE seq = ?", (old + 2,))
    code, doc, _ = _audit(runbook)
    assert code == 1 and doc["broken"]["seq"] == old + 2  # type: ignore[index]


def test_no_state_is_exit_2(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": _steps(1)}])
    r = runbook("audit", "r.yaml")
    assert r.code == 2 and "t has no state under .runbook/t: nothing to audit" in r.err
    assert not Path(".runbook/t").exists()


def test_records_of_approve_in_another_process_link_into_the_chain(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    *_steps(2),
                    {"id": "ok", "action": "approval"},
                    {"id": "after", "action": "wait", "with": {"duration": "0s"}},
                ],
            }
        ],
    )
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert run_process("approve", "r.yaml", "ok").returncode == 0
    assert runbook("apply", "r.yaml", "--yes").code == 0
    code, doc, _ = _audit(runbook)
    assert code == 0 and doc["records"] == len(_rows()) and doc["chain_from"] == 1


def test_a_run_killed_mid_way_audits_clean_after_resume(tmp_path: Path) -> None:
    work = Path.cwd()
    write("r.yaml", phases=[{"id": "p", "steps": _steps(200, "5ms")}])
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill it once some steps are checkpointed
        if STATE.exists() and len(_sql("SELECT seq FROM journal")) > 40:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = len(_sql("SELECT seq FROM journal"))
    mid = run_process("audit", "r.yaml", cwd=work)
    assert mid.returncode == 0 and "chain holds" in mid.stdout, mid.stdout + mid.stderr
    done = run_process("apply", "r.yaml", "--yes", cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    after = run_process("audit", "r.yaml", "--format", "json", cwd=work)
    doc = json.loads(after.stdout)
    assert after.returncode == 0 and doc["holds"] is True
    assert doc["records"] > killed_at and doc["head"]["seq"] == doc["records"]
