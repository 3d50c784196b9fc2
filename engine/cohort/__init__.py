"""Cohorts: reading a population from its source, drawing it into waves (deterministic,
stratified), freezing the draw into the ledger, and finding late and vanished entities.

May import: format, state (the ledger), plugins.sql.db (reading sources) and the base modules.
"""
