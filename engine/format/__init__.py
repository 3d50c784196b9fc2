"""What a runbook says: the YAML source with positions, the schema, parsing into frozen
records, templates, variables, durations, the order of the steps (plain Python: no networkx on
validate's path), the checks and the lint that `validate` runs.

May import: errors, masking, actions (the plugin contract) and the data package schemas.
"""
