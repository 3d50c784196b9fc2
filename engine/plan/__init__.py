"""What `apply` would do now: the plan built from the runbook and the DAG, its statuses
against the state, and its renderers (text, markdown, json).

May import: format, state, graph, cohort (drawing a cohort in memory), and the base modules.
"""
