"""The ssh action: an inventory of hosts run with paramiko, pooled connections, known_hosts
verification and the remote execution of one command.

May import: runbook_engine.actions and runbook_engine.errors only.
"""
