"""Side-by-side cost measurements of the project's methods (`python -m benchmarks.NAME`); not tests."""
