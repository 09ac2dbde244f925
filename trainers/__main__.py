"""python -m trainers run --help"""
import sys

try:
    from trainers.cli import main
except ModuleNotFoundError as e:  # run with a Python that lacks the project's packages (no venv)
    print(f"error: Python package {e.name!r} is missing from {sys.executable}; run the project's environment: "
          f".venv/bin/python -m trainers ... (install it with: python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e .)", file=sys.stderr)
    sys.exit(2)

sys.exit(main())
