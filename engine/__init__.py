"""runbook: declarative, resumable migration runbooks."""

__version__ = "0.1.0"
