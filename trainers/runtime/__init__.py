"""What every method runs on: models, training and its shared ending, evaluation and scoring, serving, precision, sharding, the worker group, metering, the memory plan."""
