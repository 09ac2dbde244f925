"""python -m orchestrator sweep --space quickstart"""
import sys

try:
    from orchestrator.cli import main
except ModuleNotFoundError as e:  # run with a Python that lacks the project's packages (no venv)
    from trainers.settings import missing_package
    print(missing_package(e.name, "orchestrator"), file=sys.stderr)
    sys.exit(2)

sys.exit(main())
