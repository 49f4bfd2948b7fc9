"""The example trainer (``python examples/train.py``), one concern a module.

- ``config.py``: :class:`Config` (every flag's field and default) and its
  checks;
- ``schedules.py``: the learning-rate and momentum schedules, the optimizer;
- ``steps.py``: the loss, the jitted ``train_step`` and ``eval_step``, and
  ``evaluate`` over the test split;
- ``find_lr.py``: ``--find-lr``, the range test and the bounds it gives;
- ``resume.py``: starting a run afresh or from its workdir's checkpoint;
- ``loop.py``: ``train_and_evaluate``, the epoch loop;
- ``main.py``: the command line.

``examples/train.py`` re-exports the names a user or a test needs.
"""
