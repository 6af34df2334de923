"""LLM inference measurement: models, tasks, prompt features and answer quality."""
