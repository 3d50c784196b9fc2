"""The DAG that orders execution and rollback (networkx), the scope of --only/--step/--wave,
and the graph renderers (mermaid, dot, json) with their status colours.

May import: format, state (statuses for colours), and the base modules.
"""
