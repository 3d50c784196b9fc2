"""What the operator sees: the terminal writer, the reporters (plain lines, JSON lines, a
live view) that consume the engine's events, and how each event reads as a line.

May import: format (durations) and the base modules; never run (events flow one way).
"""
