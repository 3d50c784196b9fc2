"""The example runbooks and the demo data they migrate (issues 2, 4 and 11), the acai runs.

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
import urllib.error
import urllib.request
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import EXAMPLES

ACAI = EXAMPLES / "acai-distributor-gradual-migration.yaml"
SUBSCRIPTION = EXAMPLES / "subscription-platform-switch.yaml"
SCRIPT = EXAMPLES / "demo_data.py"


def _module(script: Path = SCRIPT) -> ModuleType:
    spec = importlib.util.spec_from_file_location(script.stem, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_data = _module()
fake = _module(EXAMPLES / "fake_provider.py")


@pytest.fixture
def fake_provider() -> Any:
    """The subscription demo's fake payment provider (``runbooks/examples/fake_provider.py``,
    its defaults: a few customers fail once with 503, 429 + Retry-After past 400 calls/s),
    serving in a thread: ``(vault, url)``."""
    import threading

    vault = fake.Vault(0, set(), 400.0, 100, 97)
    server = fake.Server(("127.0.0.1", 0), fake.handler(vault))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield vault, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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
    assert "20000 customers (101 with no e-mail nor phone)" in summary

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
    # the strata of the runbook's draw: every segment in every language it has
    strata = rows(legacy, "SELECT segment, locale, COUNT(*) FROM customers GROUP BY 1, 2")
    assert {s for s, _, _ in strata} == {"bar", "market", "ice-cream"}
    assert len(strata) == 9 and min(n for _, _, n in strata) > 300
    # a few customers have no contact at all (the runbook excludes them), a few only one
    assert count(legacy, "customers WHERE email IS NULL AND phone IS NULL") == 101
    assert 50 < count(legacy, "customers WHERE email IS NULL AND phone IS NOT NULL") < 200
    assert 50 < count(legacy, "customers WHERE phone IS NULL AND email IS NOT NULL") < 200

    new, staging = out / "new.db", out / "staging.db"
    assert tables(new) == {
        "customers",
        "orders",
        "subscriptions",
        "notices",
        "notice_audience",
        "feedback",
    }
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
    assert "5000 subscribers (25 with no e-mail nor phone)" in r.stdout
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
    assert [c[0] for c in columns(legacy, "billing_holds")] == ["subscriber_id", "wave", "held_at"]
    assert count(legacy, "subscribers WHERE email IS NULL AND phone IS NULL") == 25
    assert tables(new) == {
        "subscribers",
        "payment_methods",
        "plans",
        "subscriptions",
        "notices",
        "notice_audience",
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
SUMMARY = EXAMPLES / "demo_summary.py"


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


def ledger(name: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """The runbook's ledger (``.runbook/NAME/state.db``), read-only."""
    con = sqlite3.connect(f"file:.runbook/{name}/state.db?mode=ro", uri=True)
    try:
        return [tuple(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def ledger_counts(name: str) -> dict[tuple[str | None, str], int]:
    rows_ = ledger(name, "SELECT wave, state, count(*) FROM entity GROUP BY wave, state")
    return {(w, s): n for w, s, n in rows_}


def members(name: str, wave: str) -> list[int]:
    return [k for (k,) in ledger(name, "SELECT key FROM entity WHERE wave = ? ORDER BY key", wave)]


def journey(runbook, path: Path, key: object) -> dict[str, Any]:
    """``runbook customers FILE KEY --format json``: the entity, its transitions and messages."""
    r = runbook("customers", str(path), str(key), "--format", "json")
    assert r.code == 0, r.output
    (entity,) = json.loads(r.out)["entities"]
    return dict(entity)


def summary(folder: str = "demo", kind: str = "acai") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUMMARY), kind, folder, "--state-dir", ".runbook"],
        capture_output=True,
        text=True,
        timeout=60,
    )


ACAI_NAME = "acai-distributor-gradual-migration"


def test_acai_demo_moves_every_customer_it_can_reach(runbook) -> None:
    assert demo_data.main(["acai", "--out", "demo", "--customers", "300"]) == 0
    r = runbook("apply", "--yes", str(ACAI), *DEMO_VARS)
    assert r.code == 0, r.output
    # the repeat-orders gate: each wave's moved customers against those not moved yet, read
    # on each side's own database; not run on the last wave (nobody left to compare with)
    for wave in ("pilot", "early"):
        assert re.search(
            rf"repeat-orders-gate\[{wave}\]: check 1/3: #1 [\d.]+ vs pending [\d.]+ "
            r"\(n \d+, n_baseline \d+\): passed",
            r.out,
        ), r.out
    assert "repeat-orders-gate[all]: check" not in r.out
    assert "cohort customers: drew 298 eligible of 300 (pilot 20, early 59, all 219); " \
        "excluded: 2 no-contact" in r.out  # fmt: skip
    assert "300 customers: 298 verified, 2 excluded (no-contact), 0 failed, 0 pending" in r.out

    legacy, new = Path("demo/legacy.db"), Path("demo/new.db")
    # the ledger: every wave verified; the two customers with no contact excluded with reason
    assert ledger_counts(ACAI_NAME) == {
        ("pilot", "verified"): 20,
        ("early", "verified"): 59,
        ("all", "verified"): 219,
        (None, "excluded"): 2,
    }
    no_contact = rows(legacy, "SELECT id FROM customers WHERE email IS NULL AND phone IS NULL")
    assert ledger(ACAI_NAME, "SELECT key, reason FROM entity WHERE state = 'excluded'") == [
        (k, "no-contact") for (k,) in no_contact
    ]
    # the pilot keeps every (segment, locale) stratum's share: the floor or the ceiling of it
    strata = "json_extract(attrs, '$.segment') || '/' || json_extract(attrs, '$.locale')"
    base = dict(ledger(ACAI_NAME, f"SELECT {strata}, count(*) FROM entity WHERE wave IS NOT NULL GROUP BY 1"))  # fmt: skip
    pilot = dict(ledger(ACAI_NAME, f"SELECT {strata}, count(*) FROM entity WHERE wave = 'pilot' GROUP BY 1"))  # fmt: skip
    for stratum, n in base.items():
        share = 20 * n / 298
        assert int(share) <= pilot.get(stratum, 0) <= int(share) + 1, (stratum, pilot, base)

    # moved: every customer but the excluded ones, with their orders and subscriptions
    excluded = f"IN ({', '.join(str(k) for (k,) in no_contact)})"
    kept = f"NOT {excluded}"
    assert count(new, "customers") == count(legacy, f"customers WHERE id {kept}") == 298
    for table in ("orders", "subscriptions"):
        assert count(new, table) == count(legacy, f"{table} WHERE customer_id {kept}") > 0
        assert count(new, f"{table} WHERE customer_id {excluded}") == 0
    told = count(legacy, f"customers WHERE status <> 'blocked' AND id {kept}")
    assert count(new, "feedback") == told
    assert count(new, "notices") == 9  # three waves, three languages
    assert count(new, "notice_audience") == 298
    assert count(Path("demo/backup.db"), "orders") == count(legacy, "orders")

    # told: every member with an e-mail by e-mail, every member with a phone by SMS
    emails, sms = outbox("outbox/email"), outbox("outbox/sms")
    assert len(emails) == count(legacy, "customers WHERE email IS NOT NULL") == 296
    assert len(sms) == count(legacy, "customers WHERE phone IS NOT NULL")
    pt = [m for m in emails if m["Content-Language"] == "pt-BR"]
    assert pt and all("https://pedidos.acai.example" in body(m) for m in pt)
    assert all(body(m).startswith(f"Olá, {m['To'].addresses[0].display_name},") for m in pt)
    assert all(str(m["Subject"]).endswith("seus pedidos vão para a nova plataforma") for m in pt)
    report = [m for m in outbox("outbox/staff") if m["X-Runbook-Step"] == "report-to-stakeholders"]
    assert len(report) == 3
    assert "customers      298 of 300" in body(report[0])
    assert not Path("demo/outbox/pager").exists()

    # one customer's journey, with the Message-IDs of the files in the outbox
    first = members(ACAI_NAME, "pilot")[0]
    seen = journey(runbook, ACAI, first)
    assert (seen["wave"], seen["state"]) == ("pilot", "verified")
    assert [(t["state"], t["step"], t["attempt"]) for t in seen["transitions"]] == [
        ("notified", "announce-email[pilot]", 1),
        ("moved", "copy-subscriptions[pilot]", 1),
        ("verified", "verify-subscriptions[pilot]", 1),
    ]
    ids = {m["Message-ID"]: m["X-Runbook-Step"] for m in emails + sms}
    assert sorted((ids[m["message_id"]], m["step"]) for m in seen["messages"]) == [
        ("announce-email[pilot]", "announce-email[pilot]"),
        ("announce-sms[pilot]", "announce-sms[pilot]"),
    ]
    # a customer with a phone and no e-mail is told by SMS only, and is notified by it
    (phone_only,) = rows(legacy, "SELECT MIN(id) FROM customers WHERE email IS NULL AND phone IS NOT NULL")  # fmt: skip
    seen = journey(runbook, ACAI, phone_only[0])
    assert seen["transitions"][0]["state"] == "notified"
    assert seen["transitions"][0]["step"].startswith("announce-sms[")

    r = runbook("customers", str(ACAI))
    assert r.code == 0, r.output
    assert r.out.splitlines()[-1].split() == ["total", "0", "0", "0", "298", "2", "300"]
    done = summary()
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stdout.split())
    assert "customers 300 -> 298 not moved: excluded (no-contact): 2 (id 42, 241)" in said
    assert "ledger: 298 verified, 2 excluded (no-contact): agrees with the databases" in done.stdout


def test_acai_fault_in_early_wave_rolls_back_that_wave_and_the_re_run_tells_them_again(
    runbook,
) -> None:
    assert demo_data.main(["acai", "--out", "demo", "--customers", "300"]) == 0
    r = runbook("apply", "--yes", str(ACAI), *DEMO_VARS, "--var", "inject_fault=early")
    assert r.code == 1, r.output
    assert "verify-customers[early] failed" in r.output
    assert (
        "contingencies fired in this run: page-dba, restore-customers-from-backup, "
        "restore-orders-from-backup, restore-subscriptions-from-backup" in r.output
    )
    assert "300 customers: 20 verified, 2 excluded (no-contact), 59 compensated, 0 failed, " \
        "219 pending" in r.out  # fmt: skip
    assert ledger_counts(ACAI_NAME) == {
        ("pilot", "verified"): 20,
        ("early", "compensated"): 59,
        ("all", "pending"): 219,
        (None, "excluded"): 2,
    }

    legacy, new = Path("demo/legacy.db"), Path("demo/new.db")
    pilot, early = members(ACAI_NAME, "pilot"), members(ACAI_NAME, "early")
    assert sorted(k for (k,) in rows(new, "SELECT id FROM customers")) == pilot
    in_pilot = f"customer_id IN ({', '.join(map(str, pilot))})"
    assert count(new, "orders") == count(legacy, f"orders WHERE {in_pilot}")
    assert count(new, "subscriptions") == count(legacy, f"subscriptions WHERE {in_pilot}")
    assert count(new, "customers WHERE name LIKE '%(corrupted)%'") == 0
    assert rows(new, "SELECT DISTINCT campaign FROM notices") == [("migration-pilot",)]
    assert rows(new, "SELECT DISTINCT wave FROM feedback") == [("pilot",)]
    assert count(legacy, "customers WHERE name LIKE '%(corrupted)%'") == 0
    (page,) = outbox("outbox/pager")
    assert "verify-customers[early]" in str(page["Subject"])
    # every member of early with an e-mail was told, then told that the move is postponed
    with_email = count(legacy, f"customers WHERE email IS NOT NULL AND id IN ({', '.join(map(str, early))})")  # fmt: skip
    step = {m["X-Runbook-Step"] for m in outbox("outbox/email")}
    assert {"announce-email[early]", "announce-email[early]#rollback"} <= step
    told = [m for m in outbox("outbox/email") if m["X-Runbook-Step"] == "announce-email[early]"]
    postponed = [
        m for m in outbox("outbox/email") if m["X-Runbook-Step"] == "announce-email[early]#rollback"
    ]
    assert len(told) == len(postponed) == with_email
    assert any(m["Subject"] == "Mudança adiada" for m in postponed)
    assert {m["Message-ID"] for m in told}.isdisjoint(m["Message-ID"] for m in postponed)
    # the corrupted customer: the wave's first member, failed, then compensated
    broken = early[0]
    seen = journey(runbook, ACAI, broken)
    assert [(t["state"], t["reason"]) for t in seen["transitions"]] == [
        ("notified", None),
        ("moved", None),
        ("failed", "sql.verify: different in customers"),
        ("compensated", None),
    ]
    status = statuses(runbook, ACAI)
    assert status["copy-customers[pilot]"] == "succeeded"
    assert status["copy-customers[early]"] == "rolled_back"
    assert status["verify-customers[early]"] == "failed"
    assert status["copy-customers[all]"] == "pending"
    assert summary().returncode == 0  # compensated members have nothing on the new platform

    # fixed: the fault is off again. The run is pinned to inject_fault=early (SPEC §8): the
    # apply without it is refused, writing nothing, until the change is accepted
    r = runbook("apply", "--yes", str(ACAI), *DEMO_VARS)
    assert r.code == 2 and 'var inject_fault: "early" -> ' in r.err, r.output
    assert ledger_counts(ACAI_NAME)[("early", "compensated")] == 59
    # the next apply runs wave early again (attempt 2), tells them again and moves them
    r = runbook("apply", "--yes", str(ACAI), *DEMO_VARS, "--accept-changes")
    assert r.code == 1, r.output
    assert "succeeded after compensation (exit 1)" in r.out
    assert "300 customers: 298 verified, 2 excluded (no-contact), 0 failed, 0 pending" in r.out
    assert ledger_counts(ACAI_NAME)[("early", "verified")] == 59
    seen = journey(runbook, ACAI, broken)
    assert [(t["state"], t["attempt"]) for t in seen["transitions"]] == [
        ("notified", 1), ("moved", 1), ("failed", 1), ("compensated", 1),
        ("pending", 2), ("notified", 2), ("moved", 2), ("verified", 2),
    ]  # fmt: skip
    sent = {(m["step"], m["attempt"]): m["message_id"] for m in seen["messages"]}
    first, second = sent[("announce-email[early]", 1)], sent[("announce-email[early]", 2)]
    assert first != second and ("announce-email[early]#rollback", 1) in sent
    on_disk = {m["Message-ID"] for m in outbox("outbox/email")}
    assert {first, second, sent[("announce-email[early]#rollback", 1)]} <= on_disk
    assert count(new, "customers") == 298
    done = summary()
    assert done.returncode == 0 and "agrees with the databases" in done.stdout, done.stdout
    r = runbook("apply", "--yes", str(ACAI), *DEMO_VARS)
    assert r.code == 0, r.output  # later applies: nothing to do


def test_demo_summary_finds_what_the_ledger_and_the_databases_disagree_on(runbook) -> None:
    assert demo_data.main(["acai", "--out", "demo", "--customers", "300"]) == 0
    assert runbook("apply", "--yes", str(ACAI), *DEMO_VARS).code == 0
    assert summary().returncode == 0
    new = sqlite3.connect("demo/new.db")
    with new:  # an order of a verified customer lost, a customer the ledger excluded moved
        (lost,) = new.execute("SELECT MIN(id) FROM orders").fetchone()
        new.execute("DELETE FROM orders WHERE id = ?", (lost,))
        new.execute("ATTACH DATABASE 'demo/legacy.db' AS legacy")
        new.execute("INSERT INTO customers SELECT * FROM legacy.customers WHERE id = 42")
    new.close()
    done = summary()
    assert done.returncode == 1, done.stdout
    assert "DISAGREES with the databases" in done.stdout
    assert (
        f"orders: 1 row(s) (id {lost}) of verified customers absent on the new side" in done.stdout
    )
    assert "customers: 1 row(s) (id 42) of excluded customers on the new platform" in done.stdout
    r = subprocess.run(
        [sys.executable, str(SUMMARY), "acai", "nowhere"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "no such file" in r.stderr


def test_the_fake_provider_serves_only_while_its_command_runs(tmp_path: Path) -> None:
    """`fake_provider.py --run COMMAND` (how the Makefile's demos start and stop it): the URL
    in $PROVIDER_URL, the command's exit status, one summary line, the port closed after."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys, urllib.error, urllib.request\n"
        "url = os.environ['PROVIDER_URL']\n"
        "open(sys.argv[1], 'w').write(url)\n"
        "req = urllib.request.Request(url + '/v1/customers/97/payment-method', data=b'{}',\n"
        "                             headers={'Idempotency-Key': 'k97'}, method='POST')\n"
        "try:\n"
        "    urllib.request.urlopen(req)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print('first', exc.code)\n"
        "print('again', urllib.request.urlopen(req).status)\n"
        "sys.exit(3)\n"
    )
    seen = tmp_path / "url.txt"
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "fake_provider.py"), "--run",
         f"{sys.executable} {probe} {seen}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 3, r.stdout + r.stderr
    assert "first 503" in r.stdout and "again 201" in r.stdout  # 97 fails once, then moves
    assert "1 payment methods in the vault (0 moved twice)" in r.stdout
    assert "1 customers failed once (503) and retried" in r.stdout
    url = seen.read_text()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    with pytest.raises(urllib.error.URLError):  # stopped: nothing listens there any more
        urllib.request.urlopen(url + "/stats", timeout=5)
