"""python -m orchestrator sweep --space quickstart"""
import sys

from orchestrator.cli import main

sys.exit(main())
