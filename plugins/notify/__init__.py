"""The notify action: recipients (a list or a query), per-locale templates, and the
channels (outbox folder, SMTP e-mail, webhook) with their per-recipient records.

May import: runbook_engine.actions, runbook_engine.errors, runbook_engine.format.templates, plugins.sql.db.
"""
