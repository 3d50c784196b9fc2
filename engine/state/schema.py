"""The state database's tables, by schema version: ``db.py`` creates the newest and migrates an
older database forward, one version at a time, each in one transaction."""

from __future__ import annotations

VERSION = 5

# version -> the statements that reach it from the version before
STEPS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # one row per journal record, in commit order; `rec` is the masked record as JSON
        "CREATE TABLE journal (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL,"
        " rec TEXT NOT NULL)",
    ),
    # the ledger (ledger.py): cohorts as drawn, one row per entity, transitions, messages
    2: (
        "CREATE TABLE cohort (name TEXT PRIMARY KEY, frozen_at TEXT NOT NULL, run TEXT,"
        " digest TEXT NOT NULL, definition TEXT NOT NULL, summary TEXT NOT NULL)",
        # `key` has no declared type: SQLite keeps the source's type (1 is not '1'), so that
        # a member list joins with the source's and target's tables as they are
        "CREATE TABLE entity (cohort TEXT NOT NULL, key NOT NULL, wave TEXT,"
        " state TEXT NOT NULL, reason TEXT, stratum TEXT, rank INTEGER, attrs TEXT,"
        " updated_at TEXT NOT NULL, PRIMARY KEY (cohort, key))",
        "CREATE INDEX entity_by_wave ON entity (cohort, wave, state)",
        "CREATE TABLE transition (seq INTEGER PRIMARY KEY, cohort TEXT NOT NULL, key NOT NULL,"
        " state TEXT NOT NULL, step TEXT, run TEXT, attempt INTEGER, reason TEXT,"
        " at TEXT NOT NULL)",
        "CREATE INDEX transition_by_key ON transition (cohort, key)",
        "CREATE TABLE message (seq INTEGER PRIMARY KEY, cohort TEXT NOT NULL, key NOT NULL,"
        " step TEXT NOT NULL, attempt INTEGER NOT NULL, channel TEXT NOT NULL,"
        " message_id TEXT, state TEXT NOT NULL, at TEXT NOT NULL)",
        # a message is recorded once per member, step, attempt and state, however often a
        # resumed step reports it
        "CREATE UNIQUE INDEX message_once ON message (cohort, key, step, attempt, state)",
    ),
    # the outbox (outbox.py): one row per message of a notify step, in every channel. The key
    # (run, step instance, wave attempt or contingency firing, recipient) makes "once" a
    # constraint; the relay moves an `outbox` row queued -> sending -> sent (or uncertain,
    # failed). `entity` has no declared type, like the ledger's `key` (the one SQLite-ism,
    # kept to this column: PostgreSQL gets the type of the cohort's key).
    3: (
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, run TEXT NOT NULL, step TEXT NOT NULL,"
        " attempt TEXT NOT NULL, recipient TEXT NOT NULL, cohort TEXT, entity,"
        " channel TEXT NOT NULL, state TEXT NOT NULL, reason TEXT, message_id TEXT NOT NULL,"
        " sender TEXT NOT NULL, address TEXT NOT NULL, name TEXT NOT NULL, locale TEXT,"
        " subject TEXT NOT NULL, body TEXT NOT NULL, headers TEXT NOT NULL,"
        " queued_at TEXT NOT NULL, updated_at TEXT NOT NULL, claimed_by TEXT,"
        " UNIQUE (run, step, attempt, recipient))",
        # a ledger message points at its outbox row: the journey shows its delivery state
        "ALTER TABLE message ADD COLUMN outbox INTEGER",
    ),
    # the audit chain (journal.py): each record's hash over the previous record's hash, its
    # sequence number and its text as stored. Records written before this version keep a NULL
    # hash: the chain starts at the first record written after the migration (SPEC §11), and
    # `meta.chain_from` says where (1 for a database created with the chain), so that audit
    # tells hashes removed later (`unchained`, a break) from records older than the chain
    4: (
        "ALTER TABLE journal ADD COLUMN hash TEXT",
        "INSERT OR REPLACE INTO meta (key, value) SELECT 'chain_from', CAST(COALESCE(MAX(seq), 0) + 1"
        " AS TEXT) FROM journal",
    ),
    # the lease (lease.py): one row, the current (or last) holder and the epoch every write
    # of the holder checks inside its transaction (fencing); `released` is set when the
    # holder gave it back (or `unlock --force` cleared it)
    5: (
        "CREATE TABLE lease (id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL,"
        " host TEXT NOT NULL, pid INTEGER NOT NULL, user TEXT NOT NULL, command TEXT NOT NULL,"
        " started TEXT NOT NULL, seconds REAL NOT NULL, released TEXT)",
    ),
}
