"""Benchmarks of the sweep itself, not of a method: Ray's overhead per trial, the driver at 1,000
trials, what pruning saves, how right the ETA is, and the battery of bad inputs.

    python -m benchmarks.sweep.driver_scale --trials 300
"""
