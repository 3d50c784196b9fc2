"""The example runbooks and the demo data they migrate (issues 2 and 4).

The generator is run as the plain script the README runs (a subprocess) where its command line
is under test, and imported where only its data is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import EXAMPLES

ACAI = EXAMPLES / "acai-distributor-gradual-migration.yaml"
SUBSCRIPTION = EXAMPLES / "subscription-platform-switch.yaml"
SCRIPT = EXAMPLES / "demo_data.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_data = _module()


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def count(db: Path, table: str) -> int:
    return int(rows(db, f"SELECT COUNT(*) FROM {table}")[0][0])


def tables(db: Path) -> set[str]:
    return {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def columns(db: Path, table: str) -> list[tuple[object, ...]]:
    return [tuple(r[1:6]) for r in rows(db, f"PRAGMA table_info({table})")]


def digest(folder: Path) -> str:
    """A digest of every row of every table of every database in ``folder``."""
    h = hashlib.sha256()
    for db in sorted(folder.glob("*.db")):
        h.update(db.name.encode())
        for table in sorted(tables(db)):
            h.update(table.encode())
            for row in rows(db, f"SELECT * FROM {table} ORDER BY 1"):
                h.update(repr(row).encode())
    return h.hexdigest()


# --- the runbooks ------------------------------------------------------------------------------


def test_both_examples_pass_strict_validation(runbook) -> None:
    r = runbook("validate", "--strict", str(ACAI), str(SUBSCRIPTION))
    assert r.code == 0, r.err
    assert f"{ACAI}: valid" in r.out
    assert f"{SUBSCRIPTION}: valid" in r.out


@pytest.mark.parametrize("path", [ACAI, SUBSCRIPTION], ids=["acai", "subscription"])
def test_examples_start_with_the_schema_comment_and_say_how_to_run(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == (
        "# yaml-language-server: $schema=../../schemas/runbook.schema.json"
    )
    assert "demo_data.py" in text and "runbook apply" in text
    assert "auto_approve=true" in text and "inject_fault" in text


# --- the acai data -----------------------------------------------------------------------------


def test_acai_data_has_the_expected_counts_and_shapes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    started = time.process_time()
    summary = demo_data.generate("acai", out, 7, 20000)
    cpu = time.process_time() - started
    assert cpu < 2.0, f"generating 20,000 customers took {cpu:.2f}s of CPU"
    assert "20000 customers" in summary

    legacy = out / "legacy.db"
    assert count(legacy, "customers") == 20000
    assert 2.5 * 20000 < count(legacy, "orders") < 3.5 * 20000
    assert 0.5 * 20000 < count(legacy, "subscriptions") < 0.9 * 20000
    locales = dict(rows(legacy, "SELECT locale, COUNT(*) FROM customers GROUP BY locale"))
    assert set(locales) == {"pt-BR", "es", "en"}
    assert min(locales.values()) > 1000
    assert {r[0] for r in rows(legacy, "SELECT DISTINCT status FROM customers")} == {
        "active",
        "inactive",
        "blocked",
    }
    balances = [r[0] for r in rows(legacy, "SELECT balance FROM customers")]
    assert all(isinstance(b, str) and re.fullmatch(r"-?\d+\.\d\d", b) for b in balances)
    assert rows(legacy, "SELECT COUNT(*) FROM orders WHERE customer_id NOT IN "
                "(SELECT id FROM customers)") == [(0,)]  # fmt: skip
    # every wave of the runbook (id % 100 < 5, < 25, < 100) has customers of every locale
    assert len(rows(legacy, "SELECT DISTINCT locale FROM customers WHERE id % 100 < 5")) == 3

    new, staging = out / "new.db", out / "staging.db"
    assert tables(new) == {"customers", "orders", "subscriptions", "notices", "feedback"}
    assert tables(staging) == tables(new)
    for table in ("customers", "orders", "subscriptions"):
        # sql.verify compares every column: the targets have the legacy's exact columns
        assert columns(new, table) == columns(legacy, table)
        assert columns(staging, table) == columns(legacy, table)
        assert count(new, table) == 0 and count(staging, table) == 0
    assert count(new, "notices") == 0 and count(new, "feedback") == 0


def test_subscription_data_has_the_expected_counts(tmp_path: Path) -> None:
    r = generate("subscription", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1
    assert "5000 subscribers" in r.stdout
    legacy = tmp_path / "demo" / "subscription-legacy.db"
    new = tmp_path / "demo" / "subscription-new.db"
    assert count(legacy, "subscribers") == 5000
    assert count(legacy, "subscriptions") == 5000
    assert count(legacy, "plans") == 6
    methods = count(legacy, "payment_methods")
    assert 5000 < methods < 7000
    unsupported = count(
        legacy, "payment_methods WHERE type IN ('legacy_wallet', 'carrier_billing')"
    )
    assert 0 < unsupported < 0.05 * methods
    assert f"({unsupported} of types the new platform does not support)" in r.stdout
    assert count(legacy, "billing_holds") == 0
    assert tables(new) == {
        "subscribers",
        "payment_methods",
        "plans",
        "subscriptions",
        "notices",
        "offers",
        "feedback",
    }
    for table in ("subscribers", "payment_methods", "plans", "subscriptions"):
        assert columns(new, table) == columns(legacy, table)
        assert count(new, table) == 0


@pytest.mark.parametrize("kind", ["acai", "subscription"])
def test_same_seed_same_data_other_seed_other_data(kind: str, tmp_path: Path) -> None:
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        r = generate(kind, "--out", str(tmp_path / name), "--seed", seed, "--customers", "2000")
        assert r.returncode == 0, r.stderr
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_existing_files_are_kept_without_force(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "new.db").write_bytes(b"precious")
    r = generate("acai", "--out", str(out), "--customers", "100")
    assert r.returncode == 2
    assert f"{out / 'new.db'} already exist(s); nothing written" in r.stderr
    assert "--force" in r.stderr
    assert r.stdout == ""
    assert (out / "new.db").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["new.db"]

    r = generate("acai", "--out", str(out), "--customers", "100", "--force")
    assert r.returncode == 0, r.stderr
    assert count(out / "legacy.db", "customers") == 100
    assert count(out / "new.db", "customers") == 0  # a database again, empty


def test_force_replaces_a_previous_generation(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert generate("subscription", "--out", str(out), "--customers", "300").returncode == 0
    r = generate("subscription", "--out", str(out), "--customers", "200")
    assert r.returncode == 2
    assert count(out / "subscription-legacy.db", "subscribers") == 300
    r = generate("subscription", "--out", str(out), "--customers", "200", "--force")
    assert r.returncode == 0, r.stderr
    assert count(out / "subscription-legacy.db", "subscribers") == 200


# --- the runbooks run on the demo data ------------------------------------------------------------

DEMO_VARS = (
    "--var",
    "auto_approve=true",
    "--var",
    "notice_lead_time=0s",
    "--var",
    "gate_interval=0s",
)


def outbox(folder: str) -> list[EmailMessage]:
    """The messages of an outbox folder, parsed (bodies decoded)."""
    path = Path("demo") / folder
    return [
        message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in sorted(path.glob("*.eml"))
    ]


def body(message: EmailMessage) -> str:
    return str(message.get_content())


def statuses(runbook, path: Path) -> dict[str, str]:
    r = runbook("status", "--format", "json", str(path))
    return {s["id"]: s["status"] for s in json.loads(r.out)["steps"]}


def test_acai_demo_moves_every_customer(runbook) -> None:
    assert demo_data.main(["acai", "--out", "demo", "--customers", "300"]) == 0
    r = runbook("apply", "--yes", str(ACAI), *DEMO_VARS)
    assert r.code == 0, r.output
    assert "succeeded" in r.out

    legacy, new = Path("demo/legacy.db"), Path("demo/new.db")
    for table in ("customers", "orders", "subscriptions"):
        assert count(new, table) == count(legacy, table) > 0
    told = count(legacy, "customers WHERE status <> 'blocked'")
    assert count(new, "feedback") == told
    assert count(new, "notices") == 9  # three waves, three languages
    assert count(Path("demo/backup.db"), "orders") == count(legacy, "orders")
    assert len(outbox("outbox/email")) == told
    assert len(outbox("outbox/sms")) == told
    pt = [m for m in outbox("outbox/email") if m["Content-Language"] == "pt-BR"]
    assert pt and all("https://pedidos.acai.example" in body(m) for m in pt)
    assert all(body(m).startswith(f"Olá, {m['To'].addresses[0].display_name},") for m in pt)
    assert all(str(m["Subject"]).endswith("seus pedidos vão para a nova plataforma") for m in pt)
    report = [m for m in outbox("outbox/staff") if m["X-Runbook-Step"] == "report-to-stakeholders"]
    assert len(report) == 3
    assert "customers      300 of 300" in body(report[0])
    assert not Path("demo/outbox/pager").exists()


def test_acai_fault_in_early_wave_rolls_back_that_wave_only(runbook) -> None:
    assert demo_data.main(["acai", "--out", "demo", "--customers", "300"]) == 0
    r = runbook("apply", "--yes", str(ACAI), *DEMO_VARS, "--var", "inject_fault=early")
    assert r.code == 1, r.output
    assert "verify-customers[early] failed" in r.output
    assert (
        "contingencies fired in this run: page-dba, restore-customers-from-backup, "
        "restore-orders-from-backup, restore-subscriptions-from-backup" in r.output
    )

    legacy, new = Path("demo/legacy.db"), Path("demo/new.db")
    pilot = "id % 100 < 5"
    assert count(new, "customers") == count(legacy, f"customers WHERE {pilot}") > 0
    assert count(new, "customers WHERE name LIKE '%(corrupted)%'") == 0
    assert count(new, "orders") == count(legacy, f"orders WHERE customer_{pilot}")
    assert count(new, "subscriptions") == count(legacy, f"subscriptions WHERE customer_{pilot}")
    assert rows(new, "SELECT DISTINCT campaign FROM notices") == [("migration-pilot",)]
    assert rows(new, "SELECT DISTINCT wave FROM feedback") == [("pilot",)]
    assert count(legacy, "customers WHERE name LIKE '%(corrupted)%'") == 0
    (page,) = outbox("outbox/pager")
    assert "verify-customers[early]" in str(page["Subject"])
    early = [m for m in outbox("outbox/email") if m["X-Runbook-Step"] == "announce-email[early]"]
    postponed = [
        m for m in outbox("outbox/email") if m["X-Runbook-Step"] == "announce-email[early]#rollback"
    ]
    assert early and postponed and any(m["Subject"] == "Mudança adiada" for m in postponed)
    assert {m["Message-ID"] for m in early}.isdisjoint(m["Message-ID"] for m in postponed)

    status = statuses(runbook, ACAI)
    assert status["copy-customers[pilot]"] == "succeeded"
    assert status["copy-customers[early]"] == "rolled_back"
    assert status["verify-customers[early]"] == "failed"
    assert status["copy-customers[all]"] == "pending"


def test_subscription_demo_and_fault_in_half_wave(runbook) -> None:
    assert demo_data.main(["subscription", "--out", "demo", "--customers", "1000"]) == 0
    r = runbook("apply", "--yes", str(SUBSCRIPTION), *DEMO_VARS, "--var", "inject_fault=half")
    assert r.code == 1, r.output
    assert "verify-payment-methods[half] failed" in r.output
    assert "contingencies fired in this run: page-payments-oncall, pause-and-notify" in r.output

    legacy = Path("demo/subscription-legacy.db")
    new = Path("demo/subscription-new.db")
    canary = "subscriber_id % 100 < 2"
    assert count(new, "subscriptions") == count(legacy, f"subscriptions WHERE {canary}") > 0
    assert count(new, "subscribers") == count(legacy, "subscribers WHERE id % 100 < 2")
    assert count(new, "payment_methods WHERE token LIKE '%-mangled'") == 0
    # billing moved for the canary wave only; the half wave is billed by the old platform again
    assert rows(legacy, "SELECT wave, bucket_from, bucket_to FROM billing_holds") == [
        ("canary", 0, 2)
    ]
    assert count(new, "plans") == 6
    assert count(new, "notices") == 3

    r = runbook("apply", "--yes", str(SUBSCRIPTION), *DEMO_VARS)
    # the run finished, but it needed compensation on the way: never a plain success (SPEC §4)
    assert r.code == 1, r.output
    assert "succeeded after compensation (exit 1)" in r.out
    for table in ("subscribers", "subscriptions", "plans"):
        assert count(new, table) == count(legacy, table)
    supported = "type NOT IN ('legacy_wallet', 'carrier_billing')"
    assert count(new, "payment_methods") == count(legacy, f"payment_methods WHERE {supported}")
    assert count(new, f"payment_methods WHERE NOT ({supported})") == 0
    assert [w for (w,) in rows(legacy, "SELECT wave FROM billing_holds ORDER BY bucket_from")] == [
        "canary",
        "half",
        "rest",
    ]
