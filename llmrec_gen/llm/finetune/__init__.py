"""Fine-tuning an LLM recommender with TRL SFT + PEFT LoRA, on the training split only.

``config`` (recipe; TRL arguments passed through), ``examples`` (prompt/completion windows),
``train`` (``SFTTrainer``, checkpoints, resume) and ``merge`` (adapter -> standalone model).
TRL, PEFT and torch are imported only when training starts.
"""

from llmrec_gen.llm.finetune.config import FinetuneConfig, load_finetune_config
from llmrec_gen.llm.finetune.examples import (
    build_sft_examples,
    build_valid_examples,
    prepare_data,
    write_examples,
)
from llmrec_gen.llm.finetune.merge import merge_adapter
from llmrec_gen.llm.finetune.train import latest_checkpoint, train_sft

__all__ = [
    "FinetuneConfig",
    "build_sft_examples",
    "build_valid_examples",
    "latest_checkpoint",
    "load_finetune_config",
    "merge_adapter",
    "prepare_data",
    "train_sft",
    "write_examples",
]
