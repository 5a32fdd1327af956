"""Tasks: one file per experiment kind, each implementing the contract in ``tasks/base.py``.

A task composes components (data sources, models, losses, evaluators) for one recipe; the
experiment layer (``experiment/runner.py``) drives it. Tasks never import the runner.
"""
