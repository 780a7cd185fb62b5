"""Pipelines: what composes lessons (``graphs``) and training (``training``) into one job.

``loop`` runs lessons -> pairs -> train -> evaluate -> promote rounds; ``experiment`` compares
training arms on equal budgets. They sit above graphs and training (which never import each
other) and below the app (the CLI, the web viewer); ``from teachloop import run_loop,
run_experiment`` reaches them.
"""
