"""The sql.* actions (exec, query, copy, verify) and the database layer they share
(SQLite built in, PostgreSQL with psycopg), with copy, verify and normalisation.

May import: runbook_engine.actions and runbook_engine.errors only.
"""
