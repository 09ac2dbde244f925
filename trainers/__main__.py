"""python -m trainers run --help"""
import sys

from trainers.cli import main

sys.exit(main())
