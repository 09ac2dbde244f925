"""What a sweep will run before it runs: cells to trials, preflight checks, the time plan, placement, model identities."""
