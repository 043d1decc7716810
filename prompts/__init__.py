"""Prompt templates (Jinja2), shipped inside the package as ``llmrec_gen.prompts``."""
