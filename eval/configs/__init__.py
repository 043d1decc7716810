"""Evaluation configs, shipped inside the package as ``llmrec_gen.eval_configs``."""
