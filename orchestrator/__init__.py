"""The sweep orchestrator: search spaces, the Ray Tune driver, per-cell Optuna search and pruning,
Ray Train worker groups per trial, and results. Ray lives here and nowhere else.

    python -m orchestrator sweep --space quickstart
"""
