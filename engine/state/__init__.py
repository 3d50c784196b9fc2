"""What happened: the journal, the store that folds it into step and run statuses, the
lease, and the status view. The ledger and other backends belong here too.

May import: format and the base modules (errors, masking); never run, graph or console.
"""
