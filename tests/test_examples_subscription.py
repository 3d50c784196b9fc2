"""The subscription example on its demo data (issues 4 and 11): subscribers held back with their
reason, every payment method not moved accounted for by the ledger, a lost one failing its
subscriber and the run, a wave rolled back and run again."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from tests.test_examples import (
    DEMO_VARS,
    SUBSCRIPTION,
    count,
    demo_data,
    fake_provider,
    journey,
    ledger,
    ledger_counts,
    members,
    outbox,
    rows,
    summary,
)

NAME = "subscription-platform-switch"
LEGACY = Path("demo/subscription-legacy.db")
NEW = Path("demo/subscription-new.db")
SUPPORTED = "type IN ('card', 'pix', 'paypal', 'boleto')"


__all__ = ["fake_provider"]  # the fixture, imported


def _vars(url: str) -> tuple[str, ...]:
    return (*DEMO_VARS, "--var", f"provider_url={url}")


def _in(keys: list[int]) -> str:
    return f"IN ({', '.join(map(str, keys))})"


def test_subscription_demo_holds_back_what_it_cannot_move_with_the_reason(
    runbook, fake_provider
) -> None:
    vault, url = fake_provider
    assert demo_data.main(["subscription", "--out", "demo", "--customers", "1000"]) == 0
    r = runbook("apply", "--yes", str(SUBSCRIPTION), *_vars(url))
    assert r.code == 0, r.output
    assert (
        "1,000 subscribers: 979 verified, 21 excluded (16 unsupported-payment-method, "
        "5 no-contact), 0 failed, 0 pending" in r.out
    )
    # each verified subscriber's payment method went into the provider's vault by one API call
    # with its own Idempotency-Key (RUN/STEP/ATTEMPT/KEY): a 503 or a 429 was called again
    # with the same key, a 429 no sooner than its Retry-After
    seen = vault.stats()
    verified = {k for (k,) in ledger(NAME, "SELECT key FROM entity WHERE state = 'verified'")}
    assert {int(k) for k in seen["moved"]} == verified and len(verified) == 979
    assert set(seen["moves"].values()) == {1} and seen["unkeyed"] == 0
    assert len(seen["calls"]) == 979 and seen["early_retries"] == 0
    assert all(re.fullmatch(r"\S+/vault-payment-methods\[\w+\]/1/\d+", k) for k in seen["calls"])
    assert seen["failed_once"] and all(int(k) % 97 == 0 for k in seen["failed_once"])
    assert "vault-payment-methods[half]: foreach: 469 done, 0 failed, 0 left" in r.out
    # the churn gate compares each wave with the holdout, and is not run on the holdout itself
    assert re.search(
        r"churn-gate\[canary\]: check 1/3: #1 0 vs holdout 0 \(n 20, n_baseline 19\): passed", r.out
    )
    assert "churn-gate[holdout]" not in r.out or "churn-gate[holdout] skipped" in r.out
    assert ledger_counts(NAME) == {
        ("canary", "verified"): 20,
        ("half", "verified"): 469,
        ("rest", "verified"): 471,
        ("holdout", "verified"): 19,
        (None, "excluded"): 21,
    }
    # held back: every subscriber with a payment method of another type, and those with no
    # contact; each with its reason
    unsupported = {
        k for (k,) in rows(LEGACY, f"SELECT subscriber_id FROM payment_methods WHERE NOT {SUPPORTED}")
    }  # fmt: skip
    no_contact = {
        k for (k,) in rows(LEGACY, "SELECT id FROM subscribers WHERE email IS NULL AND phone IS NULL")
    }  # fmt: skip
    excluded = dict(ledger(NAME, "SELECT key, reason FROM entity WHERE state = 'excluded'"))
    assert set(excluded) == unsupported | no_contact
    assert {k for k, why in excluded.items() if why == "no-contact"} == no_contact
    assert {k for k, why in excluded.items() if why == "unsupported-payment-method"} == (
        unsupported - no_contact
    )
    # every payment method not on the new platform belongs to an excluded subscriber; every
    # verified subscriber's methods are all there; none of an unsupported type moved
    con = sqlite3.connect(LEGACY)
    con.execute("ATTACH DATABASE ? AS new", (str(NEW),))
    left = {
        sid
        for (sid,) in con.execute(
            "SELECT subscriber_id FROM payment_methods p WHERE NOT EXISTS "
            "(SELECT 1 FROM new.payment_methods n WHERE n.id = p.id)"
        )
    }
    con.close()
    assert left and left <= set(excluded)
    assert count(NEW, f"payment_methods WHERE NOT {SUPPORTED}") == 0
    assert count(NEW, "subscribers") == 979
    assert count(NEW, f"subscribers WHERE id {_in(sorted(excluded))}") == 0
    # billing handed over subscriber by subscriber, for the moved ones only
    held = dict(rows(LEGACY, "SELECT subscriber_id, wave FROM billing_holds"))
    assert held == dict(ledger(NAME, "SELECT key, wave FROM entity WHERE state = 'verified'"))
    assert count(NEW, "notice_audience") == 979 and count(NEW, "notices") == 12
    # told: each member with an e-mail once; asked to update: the held-back ones still paying
    emails = outbox("subscription-outbox/email")
    told = [m for m in emails if str(m["X-Runbook-Step"]).startswith("notice-email[")]
    asked = [m for m in emails if m["X-Runbook-Step"] == "ask-payment-update"]
    assert len(told) == 979 - count(
        LEGACY, f"subscribers WHERE email IS NULL AND id NOT {_in(sorted(excluded))}"
    )
    assert len(asked) == count(
        LEGACY,
        f"subscribers WHERE status <> 'cancelled' AND email IS NOT NULL AND id {_in(sorted(unsupported))}",
    )  # fmt: skip
    assert len(told) + len(asked) == len(emails)

    done = summary(kind="subscription")
    assert done.returncode == 0, done.stdout
    said = " ".join(done.stdout.split())
    n_left = count(LEGACY, "payment_methods") - count(NEW, "payment_methods")
    assert f"payment_methods 1,200 -> {1200 - n_left:,} not moved: {n_left}" in said
    assert "excluded (unsupported-payment-method): " in said
    assert "ledger: 979 verified, 16 excluded (unsupported-payment-method), 5 excluded " \
        "(no-contact): agrees with the databases" in said  # fmt: skip


def test_a_payment_method_left_behind_fails_its_subscriber_and_the_run(
    runbook, fake_provider
) -> None:
    """A canary subscriber takes a payment method the new platform does not take after the
    draw: the copy leaves it behind, verify names the subscriber `failed`, the wave is rolled
    back and the run is not clean (exit 1)."""
    vault, url = fake_provider
    assert demo_data.main(["subscription", "--out", "demo", "--customers", "1000"]) == 0
    r = runbook("cohort", "freeze", str(SUBSCRIPTION))
    assert r.code == 0, r.output
    victim = members(NAME, "canary")[0]
    with sqlite3.connect(LEGACY) as db:
        db.execute(
            "INSERT INTO payment_methods (id, subscriber_id, type, token, is_default) "
            "VALUES (9999, ?, 'legacy_wallet', 'tok_new', 0)",
            (victim,),
        )
    r = runbook("apply", "--yes", str(SUBSCRIPTION), *_vars(url))
    assert r.code == 1, r.output
    assert (
        "verify-payment-methods[canary]: table payment_methods: 1 of " in r.out
        and f"missing on target: id=9999; member(s) marked failed (subscriber_id): {victim}"
        in r.out
    )
    seen = journey(runbook, SUBSCRIPTION, victim)
    assert [(t["state"], t["reason"]) for t in seen["transitions"]][-2:] == [
        ("failed", "sql.verify: missing on target in payment_methods"),
        ("compensated", None),
    ]
    assert ledger_counts(NAME)[("canary", "compensated")] == 20
    assert count(NEW, "payment_methods") == count(NEW, "subscribers") == 0
    assert count(LEGACY, "billing_holds") == 0
    assert vault.stats()["requests"] == 0  # verify failed first: nothing went to the vault
    postponed = [
        m
        for m in outbox("subscription-outbox/email")
        if m["X-Runbook-Step"] == "notice-email[canary]#rollback"
    ]
    assert len(postponed) == count(
        LEGACY, f"subscribers WHERE email IS NOT NULL AND id {_in(members(NAME, 'canary'))}"
    )
    assert summary(kind="subscription").returncode == 0  # nothing half-moved is left behind


def test_subscription_fault_in_half_wave_and_the_re_run(runbook, fake_provider) -> None:
    vault, url = fake_provider
    assert demo_data.main(["subscription", "--out", "demo", "--customers", "1000"]) == 0
    r = runbook("apply", "--yes", str(SUBSCRIPTION), *_vars(url), "--var", "inject_fault=half")
    assert r.code == 1, r.output
    assert "verify-payment-methods[half] failed" in r.output
    assert "contingencies fired in this run: page-payments-oncall, pause-and-notify" in r.output
    canary, half = members(NAME, "canary"), members(NAME, "half")
    (mangled,) = rows(
        LEGACY, f"SELECT subscriber_id FROM payment_methods WHERE id = (SELECT MIN(id) FROM "
        f"payment_methods WHERE subscriber_id {_in(half)})"
    )  # fmt: skip
    assert f"member(s) marked failed (subscriber_id): {mangled[0]}" in r.out
    assert sorted(k for (k,) in rows(NEW, "SELECT id FROM subscribers")) == canary
    assert count(NEW, "subscriptions") == count(LEGACY, f"subscriptions WHERE subscriber_id {_in(canary)}")  # fmt: skip
    assert count(NEW, "payment_methods WHERE token LIKE '%-mangled'") == 0
    # billing moved for the canary wave only; the half wave is billed by the old platform again
    assert sorted(k for (k,) in rows(LEGACY, "SELECT subscriber_id FROM billing_holds")) == canary
    assert count(NEW, "plans") == 6
    assert rows(NEW, "SELECT DISTINCT campaign FROM notices") == [("payment-switch-canary",)]

    # the fault is off again: the run is pinned to inject_fault=half (SPEC §8), so the
    # change is refused until accepted
    r = runbook("apply", "--yes", str(SUBSCRIPTION), *_vars(url))
    assert r.code == 2 and 'var inject_fault: "half" -> ' in r.err, r.output
    r = runbook("apply", "--yes", str(SUBSCRIPTION), *_vars(url), "--accept-changes")
    # the run finished, but it needed compensation on the way: never a plain success (SPEC §4)
    assert r.code == 1, r.output
    assert "succeeded after compensation (exit 1)" in r.out
    verified = [k for (k,) in ledger(NAME, "SELECT key FROM entity WHERE state = 'verified'")]
    assert len(verified) == 979
    for table, column in (("subscribers", "id"), ("subscriptions", "subscriber_id")):
        assert count(NEW, table) == count(LEGACY, f"{table} WHERE {column} {_in(verified)}")
    assert count(NEW, "payment_methods") == count(
        LEGACY, f"payment_methods WHERE subscriber_id {_in(verified)}"
    )
    assert {int(k) for k in vault.stats()["moved"]} == set(verified)
    assert [w for (w,) in rows(LEGACY, "SELECT DISTINCT wave FROM billing_holds ORDER BY 1")] == [
        "canary",
        "half",
        "holdout",
        "rest",
    ]
    assert summary(kind="subscription").returncode == 0


def test_a_provider_that_declines_a_canary_subscriber_rolls_the_wave_back_member_by_member(
    runbook, fake_provider
) -> None:
    """The provider declines subscribers whose key is a multiple of 40 (422, every time): the
    canary's `max_failed: 1%` (0 of 20) is exceeded, the declined one is named with the
    provider's answer, and the wave is rolled back: each payment method vaulted is taken out
    again (one DELETE per member done), nothing stays in the vault, the canary is compensated."""
    vault, url = fake_provider
    vault.decline_every = 40
    assert demo_data.main(["subscription", "--out", "demo", "--customers", "1000"]) == 0
    r = runbook("cohort", "freeze", str(SUBSCRIPTION))
    assert r.code == 0, r.output
    canary = members(NAME, "canary")
    declined = [k for k in canary if k % 40 == 0]
    assert declined  # the draw (seeded) puts at least one in the canary
    r = runbook("apply", "--yes", str(SUBSCRIPTION), *_vars(url))
    assert r.code == 1, r.output
    assert (
        f"vault-payment-methods[canary] failed: {len(declined)} of 20 members failed "
        f"(max_failed 1% = 0); first: {declined[0]}: POST {url}/v1/customers/{declined[0]}"
        "/payment-method returned 422 card token expired, expected 200 or 201" in r.out
    )
    seen = vault.stats()
    assert seen["moved"] == [] and seen["unkeyed"] == 0
    # every payment method vaulted was taken out again, once; members not handed out once
    # max_failed was exceeded (the decline is not retried: a 4xx) were never vaulted
    vaulted = {int(k) for k in seen["moves"]}
    assert vaulted and vaulted <= set(canary) - set(declined)
    assert {int(k) for k in seen["removed"]} == vaulted
    assert set(seen["removed"].values()) == {1}
    assert {int(k) for k in seen["declined"]} == set(declined)
    assert set(seen["declined"].values()) == {1}  # a decline is not sent again
    assert ledger_counts(NAME)[("canary", "compensated")] == 20
    assert count(NEW, "subscribers") == 0 and count(LEGACY, "billing_holds") == 0
