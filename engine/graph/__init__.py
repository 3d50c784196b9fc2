"""The networkx DAG that orders apply, rollback, plan and graph, readiness during a run
(Kahn's countdown), the scope of --only/--step/--wave, and the graph renderers (mermaid, dot,
json) with their status colours.

May import: format, state (statuses for colours), and the base modules.
"""
