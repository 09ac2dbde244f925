"""The data: tasks and their sources (YAML beside the code), the few-shot sampler, prompts, export, synthetic fixtures, users' own tasks."""
