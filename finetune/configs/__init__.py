"""Fine-tuning recipes, shipped inside the package as ``llmrec_gen.finetune_configs``."""
