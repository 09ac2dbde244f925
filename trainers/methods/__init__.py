"""The methods, each one recipe with one entry point (`run(cfg, report)`), their registry (`spec.py`) and its checks (`entry.py`)."""
