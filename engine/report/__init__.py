"""After a run: the report built from the journal (timeline, waves, gates, risks) and its
renderers (markdown, html with inline svg, json).

May import: format, state, graph (colours) and the base modules; never run.
"""
