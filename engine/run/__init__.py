"""How a runbook executes: the session, the scheduler (apply), rollback, the executor of one
step with retries, the template context, secrets, dry runs and closing summaries.

May import: format, state, graph, console (reporters consume its events), and the base modules.
"""
