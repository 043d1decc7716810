"""llmrec-gen: LLM generative recommenders vs traditional baselines, on one honest protocol."""

__version__ = "0.1.0"
