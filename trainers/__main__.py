"""python -m trainers run --help"""
import sys

try:
    from trainers.cli import main
except ModuleNotFoundError as e:  # run with a Python that lacks the project's packages (no venv)
    from trainers.settings import missing_package
    print(missing_package(e.name, "trainers"), file=sys.stderr)
    sys.exit(2)

sys.exit(main())
