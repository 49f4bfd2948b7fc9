"""The saddle-point experiment (``python examples/saddle_point.py``).

- ``policies.py``: the seven learning-rate policies and the two budgets;
- ``simulation.py``: the objective and the compiled noisy gradient descent;
- ``report.py``: the tables, figures and ``results.json``.

``examples/saddle_point.py`` holds the command line and re-exports these.
"""
