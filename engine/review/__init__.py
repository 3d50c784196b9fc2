"""Reviewing a change: the canonical text of a runbook (`show`), and `diff` (load two
versions, compare, flag risky changes, render as text, markdown or json).

May import: format and the base modules; never run or state.
"""
