#!/usr/bin/env python3
"""Demo data for the two example runbooks: deterministic SQLite databases, standard library only.

    python runbooks/examples/demo_data.py acai --out demo/
        demo/legacy.db    20,000 retailer customers (a few with neither e-mail nor phone),
                          ~60,000 orders, their subscriptions
        demo/new.db       the new platform: the same tables, empty, plus notices, their
                          audience and feedback
        demo/staging.db   the controlled test environment: the new platform's tables, empty

    python runbooks/examples/demo_data.py subscription --out demo/
        demo/subscription-legacy.db   5,000 subscribers (a few with neither e-mail nor phone),
                                      payment methods (a few of types the new platform does
                                      not support), plans, subscriptions, billing holds (empty)
        demo/subscription-new.db      the new payment platform: the same tables, empty, plus
                                      notices, offers and feedback

The same ``--seed`` gives the same rows.  Existing files are never overwritten unless
``--force``.  Exit status: 0 written, 2 bad usage or a file already there.

The new-platform tables are the ones the runbooks' ``prepare-*`` steps create with
``CREATE TABLE IF NOT EXISTS`` (so that the runbooks also work on an empty PostgreSQL
database): keep the DDL here and there in step.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
DEFAULT_SEED = 7
EPOCH = date(2024, 6, 1)  # "today" of the demo data: fixed, so the data is too

# --- acai: a distributor of açaí and frozen fruit and its retailer customers ----------------

ACAI_TABLES = {
    "customers": """CREATE TABLE IF NOT EXISTS customers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        segment TEXT NOT NULL,
        email TEXT,
        phone TEXT,
        locale TEXT NOT NULL,
        city TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        balance TEXT NOT NULL)""",
    "orders": """CREATE TABLE IF NOT EXISTS orders (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL,
        ordered_at TEXT NOT NULL,
        product TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        total TEXT NOT NULL,
        status TEXT NOT NULL)""",
    "subscriptions": """CREATE TABLE IF NOT EXISTS subscriptions (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL,
        plan TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        price TEXT NOT NULL)""",
}
ACAI_INDEXES = (
    "CREATE INDEX IF NOT EXISTS orders_customer ON orders (customer_id)",
    "CREATE INDEX IF NOT EXISTS subscriptions_customer ON subscriptions (customer_id)",
)
# An in-product notice per campaign and language; its audience: the members of the wave it
# announces, written from the runbook's ledger (`sql.exec` with `cohort:`, table rb_members).
NOTICES = """CREATE TABLE IF NOT EXISTS notices (
        campaign TEXT NOT NULL,
        locale TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        published_at TEXT NOT NULL,
        PRIMARY KEY (campaign, locale))"""
ACAI_AUDIENCE = """CREATE TABLE IF NOT EXISTS notice_audience (
        campaign TEXT NOT NULL,
        customer_id INTEGER NOT NULL,
        PRIMARY KEY (campaign, customer_id))"""
ACAI_FEEDBACK = """CREATE TABLE IF NOT EXISTS feedback (
        customer_id INTEGER PRIMARY KEY,
        wave TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        score INTEGER,
        comment TEXT,
        answered_at TEXT)"""

LOCALES = (("pt-BR", 70), ("es", 20), ("en", 10))
CITIES = {
    "pt-BR": ("São Paulo", "Rio de Janeiro", "Belém", "Fortaleza", "Recife", "Curitiba"),
    "es": ("Buenos Aires", "Montevideo", "Santiago", "Asunción", "Lima"),
    "en": ("Miami", "Orlando", "Houston", "New York"),
}
PHONE_PREFIX = {"pt-BR": "+55 11 9", "es": "+54 11 5", "en": "+1 305 5"}
FIRST_NAMES = {
    "pt-BR": ("Ana", "Bruno", "Carla", "Diego", "Fernanda", "João", "Mariana", "Rafael"),
    "es": ("Lucía", "Mateo", "Sofía", "Santiago", "Valentina", "Diego", "Camila"),
    "en": ("Emma", "Liam", "Olivia", "Noah", "Ava", "James"),
}
# (the shop's word, its segment): bars and snack bars, markets and grocers, ice-cream shops
SHOPS = {
    "pt-BR": (
        ("Açaí", "bar"),
        ("Mercado", "market"),
        ("Empório", "market"),
        ("Sorveteria", "ice-cream"),
        ("Lanchonete", "bar"),
        ("Hortifrúti", "market"),
    ),
    "es": (
        ("Heladería", "ice-cream"),
        ("Almacén", "market"),
        ("Frutería", "market"),
        ("Mercado", "market"),
        ("Kiosco", "bar"),
    ),
    "en": (
        ("Bowl Bar", "bar"),
        ("Market", "market"),
        ("Juice Co.", "bar"),
        ("Deli", "market"),
        ("Smoothies", "ice-cream"),
    ),
}
SURNAMES = {
    "pt-BR": ("Silva", "Santos", "Oliveira", "Souza", "Lima", "Costa", "Pereira", "Carvalho"),
    "es": ("García", "López", "Martínez", "Fernández", "Gómez", "Díaz", "Pérez"),
    "en": ("Smith", "Johnson", "Brown", "Miller", "Davis", "Wilson"),
}
PRODUCTS = (
    ("açaí pulp 10 kg bucket", "189.90"),
    ("açaí with guaraná 5 kg", "99.50"),
    ("strawberry pulp 1 kg", "18.40"),
    ("mango pulp 1 kg", "16.90"),
    ("cupuaçu pulp 1 kg", "24.00"),
    ("frozen banana slices 2 kg", "21.75"),
    ("granola topping 1 kg", "27.30"),
)
PLANS = (("weekly-restock", "149.00"), ("biweekly-restock", "89.00"), ("monthly-restock", "49.00"))


def _pick(rng: random.Random, weighted: Sequence[tuple[str, int]]) -> str:
    """A value drawn by weight (cheaper than ``rng.choices`` for 100k draws)."""
    draw = rng.random() * sum(w for _, w in weighted)
    for value, weight in weighted:
        draw -= weight
        if draw < 0:
            return value
    return weighted[-1][0]


def _below(rng: random.Random, n: int) -> int:
    """0 <= k < n (``randint`` costs four times more)."""
    return int(rng.random() * n)


def _between(rng: random.Random, low: int, high: int) -> int:
    return low + _below(rng, high - low + 1)


def _one(rng: random.Random, values: Sequence[T]) -> T:
    return values[_below(rng, len(values))]


_DAYS: dict[int, str] = {}


def _days_ago(rng: random.Random, low: int, high: int) -> str:
    """An ISO 8601 UTC timestamp between ``low`` and ``high`` days before ``EPOCH``."""
    days = low + _below(rng, high - low + 1)
    day = _DAYS.get(days)
    if day is None:
        day = _DAYS[days] = (EPOCH - timedelta(days=days)).strftime("%Y-%m-%d")
    second = _below(rng, 86400)
    return f"{day}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"


def _ascii(text: str) -> str:
    """``Açaí Díaz`` -> ``Acai Diaz``, for e-mail addresses."""
    decomposed = unicodedata.normalize("NFKD", text)
    return decomposed.encode("ascii", "ignore").decode("ascii")


def _cents(value: int) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"


def _contact(n: int, email: str, phone: str) -> tuple[str | None, str | None]:
    """The contact the legacy system holds for customer ``n``: a few have neither e-mail nor
    phone (the runbooks exclude them, reason no-contact), a few only one of them. Chosen by
    number, not drawn: every other value stays what the seed makes it."""
    if n % 199 == 42:
        return None, None
    if n % 211 == 5:
        return None, phone
    if n % 223 == 9:
        return email, None
    return email, phone


def acai_rows(rng: random.Random, n: int) -> dict[str, list[tuple[object, ...]]]:
    customers: list[tuple[object, ...]] = []
    orders: list[tuple[object, ...]] = []
    subscriptions: list[tuple[object, ...]] = []
    for cid in range(1, n + 1):
        locale = _pick(rng, LOCALES)
        shop, segment = _one(rng, SHOPS[locale])
        name = f"{shop} {_one(rng, SURNAMES[locale])}"
        slug = _ascii(name).lower().replace(" ", "-").replace(".", "")
        status = _pick(rng, (("active", 85), ("inactive", 12), ("blocked", 3)))
        email, phone = _contact(
            cid,
            f"{slug}-{cid}@example.com",
            f"{PHONE_PREFIX[locale]}{cid:04d}-{_between(rng, 0, 9999):04d}",
        )
        customers.append(
            (
                cid,
                name,
                segment,
                email,
                phone,
                locale,
                _one(rng, CITIES[locale]),
                status,
                _days_ago(rng, 200, 3000),
                _cents(_between(rng, -20000, 500000)),
            )
        )
        for _ in range(_between(rng, 0, 6)):  # ~3 orders a customer
            product, price = _one(rng, PRODUCTS)
            quantity = _between(rng, 1, 40)
            cents = round(float(price) * 100) * quantity
            orders.append(
                (
                    len(orders) + 1,
                    cid,
                    _days_ago(rng, 1, 190),
                    product,
                    quantity,
                    _cents(cents),
                    _pick(rng, (("delivered", 88), ("in_transit", 7), ("cancelled", 5))),
                )
            )
        if rng.random() < (0.8 if status == "active" else 0.3):
            plan, price = _one(rng, PLANS)
            if status == "active":
                sub_status = _pick(rng, (("active", 90), ("paused", 6), ("cancelled", 4)))
            else:
                sub_status = _pick(rng, (("paused", 40), ("cancelled", 60)))
            subscriptions.append(
                (
                    len(subscriptions) + 1,
                    cid,
                    plan,
                    sub_status,
                    _days_ago(rng, 10, 190),
                    price,
                )
            )
    return {"customers": customers, "orders": orders, "subscriptions": subscriptions}


# --- subscription: a subscription business and its payment platform --------------------------

SUB_TABLES = {
    "subscribers": """CREATE TABLE IF NOT EXISTS subscribers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT,
        phone TEXT,
        locale TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
    "payment_methods": """CREATE TABLE IF NOT EXISTS payment_methods (
        id INTEGER PRIMARY KEY,
        subscriber_id INTEGER NOT NULL,
        type TEXT NOT NULL,
        brand TEXT,
        last4 TEXT,
        expires TEXT,
        token TEXT NOT NULL,
        is_default INTEGER NOT NULL)""",
    "plans": """CREATE TABLE IF NOT EXISTS plans (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL,
        name TEXT NOT NULL,
        price TEXT NOT NULL,
        currency TEXT NOT NULL,
        billing_interval TEXT NOT NULL,
        active INTEGER NOT NULL)""",
    "subscriptions": """CREATE TABLE IF NOT EXISTS subscriptions (
        id INTEGER PRIMARY KEY,
        subscriber_id INTEGER NOT NULL,
        plan_id INTEGER NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        current_period_end TEXT NOT NULL,
        cancelled_at TEXT)""",
}
SUB_INDEXES = (
    "CREATE INDEX IF NOT EXISTS payment_methods_subscriber ON payment_methods (subscriber_id)",
    "CREATE INDEX IF NOT EXISTS subscriptions_subscriber ON subscriptions (subscriber_id)",
)
# The old platform's list of subscribers it must no longer bill (one row per subscriber moved).
BILLING_HOLDS = """CREATE TABLE IF NOT EXISTS billing_holds (
        subscriber_id INTEGER PRIMARY KEY,
        wave TEXT NOT NULL,
        held_at TEXT NOT NULL)"""
SUB_AUDIENCE = """CREATE TABLE IF NOT EXISTS notice_audience (
        campaign TEXT NOT NULL,
        subscriber_id INTEGER NOT NULL,
        PRIMARY KEY (campaign, subscriber_id))"""
OFFERS = """CREATE TABLE IF NOT EXISTS offers (
        subscriber_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (subscriber_id, kind))"""
SUB_FEEDBACK = """CREATE TABLE IF NOT EXISTS feedback (
        subscriber_id INTEGER PRIMARY KEY,
        wave TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        score INTEGER,
        comment TEXT,
        answered_at TEXT)"""

SUB_PLANS = (
    (1, "basic-monthly", "Basic", "29.90", "BRL", "month", 1),
    (2, "plus-monthly", "Plus", "49.90", "BRL", "month", 1),
    (3, "premium-monthly", "Premium", "89.90", "BRL", "month", 1),
    (4, "basic-yearly", "Basic (yearly)", "299.00", "BRL", "year", 1),
    (5, "plus-yearly", "Plus (yearly)", "499.00", "BRL", "year", 1),
    (6, "starter-2019", "Starter (retired)", "19.90", "BRL", "month", 0),
)
# card, pix, paypal and boleto move; the new platform has no legacy_wallet nor carrier_billing.
METHOD_TYPES = (
    ("card", 700),
    ("pix", 130),
    ("paypal", 100),
    ("boleto", 55),
    ("legacy_wallet", 10),
    ("carrier_billing", 5),
)
BRANDS = ("visa", "mastercard", "elo", "amex")


def subscription_rows(rng: random.Random, n: int) -> dict[str, list[tuple[object, ...]]]:
    subscribers: list[tuple[object, ...]] = []
    methods: list[tuple[object, ...]] = []
    subscriptions: list[tuple[object, ...]] = []
    for sid in range(1, n + 1):
        locale = _pick(rng, LOCALES)
        name = f"{_one(rng, FIRST_NAMES[locale])} {_one(rng, SURNAMES[locale])}"
        status = _pick(rng, (("active", 88), ("past_due", 4), ("cancelled", 8)))
        email, phone = _contact(
            sid,
            f"{_ascii(name).lower().replace(' ', '.')}.{sid}@example.org",
            f"{PHONE_PREFIX[locale]}{sid:04d}-{_between(rng, 0, 9999):04d}",
        )
        subscribers.append(
            (
                sid,
                name,
                email,
                phone,
                locale,
                status,
                _days_ago(rng, 30, 2000),
            )
        )
        for k in range(1 if rng.random() < 0.8 else 2):
            kind = _pick(rng, METHOD_TYPES)
            card = kind == "card"
            methods.append(
                (
                    len(methods) + 1,
                    sid,
                    kind,
                    _one(rng, BRANDS) if card else None,
                    f"{_between(rng, 0, 9999):04d}" if card else None,
                    f"{_between(rng, 2025, 2031)}-{_between(rng, 1, 12):02d}" if card else None,
                    f"tok_{rng.getrandbits(64):016x}",
                    1 if k == 0 else 0,
                )
            )
        plan = rng.choices(SUB_PLANS, weights=(30, 30, 15, 10, 10, 5))[0]
        started = _days_ago(rng, 20, 1500)
        period = 365 if plan[5] == "year" else 30
        end = _days_ago(rng, -period, -1)  # the current period ends after EPOCH
        cancelled = _days_ago(rng, 1, 19) if status == "cancelled" else None
        subscriptions.append((sid, sid, plan[0], status, started, end, cancelled))
    return {
        "subscribers": subscribers,
        "payment_methods": methods,
        "plans": list(SUB_PLANS),
        "subscriptions": subscriptions,
    }


# --- writing ---------------------------------------------------------------------------------


def _create(
    path: Path,
    tables: Iterable[str],
    rows: dict[str, list[tuple[object, ...]]],
    indexes: Iterable[str] = (),
) -> None:
    """One SQLite file: tables, rows, then indexes (faster than indexing while inserting)."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        with db:
            for statement in tables:
                db.execute(statement)
            for table, values in rows.items():
                if values:
                    marks = ", ".join("?" * len(values[0]))
                    db.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
            for statement in indexes:
                db.execute(statement)
    finally:
        db.close()


def generate(kind: str, out: Path, seed: int, customers: int) -> str:
    """Write the databases of ``kind`` into ``out``; returns the one-line summary."""
    rng = random.Random(f"{kind}:{seed}")
    if kind == "acai":
        rows = acai_rows(rng, customers)
        new_tables = [*ACAI_TABLES.values(), NOTICES, ACAI_AUDIENCE, ACAI_FEEDBACK]
        _create(out / "legacy.db", ACAI_TABLES.values(), rows, ACAI_INDEXES)
        _create(out / "new.db", new_tables, {}, ACAI_INDEXES)
        _create(out / "staging.db", new_tables, {}, ACAI_INDEXES)
        lost = sum(1 for c in rows["customers"] if c[3] is None and c[4] is None)
        return (
            f"acai: {out / 'legacy.db'}: {len(rows['customers'])} customers "
            f"({lost} with no e-mail nor phone), "
            f"{len(rows['orders'])} orders, {len(rows['subscriptions'])} subscriptions; "
            f"{out / 'new.db'} and {out / 'staging.db'} empty (seed {seed})"
        )
    rows = subscription_rows(rng, customers)
    unsupported = sum(1 for m in rows["payment_methods"] if m[2] in UNSUPPORTED)
    tables = list(SUB_TABLES.values())
    _create(out / "subscription-legacy.db", [*tables, BILLING_HOLDS], rows, SUB_INDEXES)
    new_tables = [*tables, NOTICES, SUB_AUDIENCE, OFFERS, SUB_FEEDBACK]
    _create(out / "subscription-new.db", new_tables, {}, SUB_INDEXES)
    lost = sum(1 for c in rows["subscribers"] if c[2] is None and c[3] is None)
    return (
        f"subscription: {out / 'subscription-legacy.db'}: {len(rows['subscribers'])} "
        f"subscribers ({lost} with no e-mail nor phone), {len(rows['payment_methods'])} payment methods ({unsupported} of types "
        f"the new platform does not support), {len(rows['plans'])} plans, "
        f"{len(rows['subscriptions'])} subscriptions; {out / 'subscription-new.db'} empty "
        f"(seed {seed})"
    )


UNSUPPORTED = ("legacy_wallet", "carrier_billing")
FILES = {
    "acai": ("legacy.db", "new.db", "staging.db"),
    "subscription": ("subscription-legacy.db", "subscription-new.db"),
}
DEFAULT_SIZE = {"acai": 20000, "subscription": 5000}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo_data.py", description="Generate the demo databases of the example runbooks."
    )
    parser.add_argument("kind", choices=sorted(FILES), help="which example's data")
    parser.add_argument("--out", type=Path, default=Path("demo"), help="folder (default demo/)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default 7)")
    parser.add_argument(
        "--customers",
        type=int,
        help="customers (acai, default 20000) or subscribers (subscription, default 5000)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    size = DEFAULT_SIZE[args.kind] if args.customers is None else args.customers
    if size < 1:
        parser.error("--customers must be at least 1")
    targets = [args.out / name for name in FILES[args.kind]]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.force:
        print(
            f"demo_data.py: {', '.join(existing)} already exist(s); nothing written "
            "(pass --force to overwrite)",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for path in targets:
        path.unlink(missing_ok=True)
    started = time.perf_counter()
    summary = generate(args.kind, args.out, args.seed, size)
    print(f"{summary}, {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
