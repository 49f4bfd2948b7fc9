"""Smith's Table 1 comparison (``python examples/compare_schedules.py``).

- ``policies.py``: the policies compared and how a policy's seeds train;
- ``results.py``: per-policy rows, the markdown table, JSON and curves.

``examples/compare_schedules.py`` holds the command line and the run.
"""
