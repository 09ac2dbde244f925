"""What `python -m orchestrator` exits with; `--help` prints the same table.

    python -m orchestrator sweep --space smoke --max-trials 2; echo $?     # 3: stopped as asked
"""
OK = 0               # every cell has a completed replicate for every data seed (or: the command did its job)
INCOMPLETE = 1       # the sweep ran to its end, but some cell lacks a completed replicate (errors listed)
USAGE = 2            # bad input, refused before Ray starts: one line per problem
MAX_TRIALS = 3       # stopped after --max-trials trials, as asked; --resume continues
STORAGE = 4          # results could not be written (a folder made read-only, a full disk); written records kept
ERROR = 5            # an unexpected error (a bug, or the environment): its traceback printed; written records kept
INTERRUPTED = 130    # Ctrl-C or SIGTERM; finished trials are recorded, --resume continues

HELP = """exit status:
  0    every cell has a completed replicate for every data seed
  1    the sweep ended but some cells are incomplete (their errors are printed)
  2    bad input (space, --set, names, FEWSHOT_* variables, data, models, resources), refused before Ray
  3    stopped after --max-trials trials, as asked (continue with --resume)
  4    the results folder could not be written (read-only, full); the records on disk are kept (--resume continues)
  5    an unexpected error (a bug, or the environment): its traceback is printed; records on disk are kept
  130  interrupted by Ctrl-C or SIGTERM (continue with --resume)"""
