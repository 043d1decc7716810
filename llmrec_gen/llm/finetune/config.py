"""The fine-tuning config: what to train on (data, prompt, LoRA) and TRL's own arguments.

Data, prompt and LoRA fields are ours (LoRA names follow TRL's ``ModelConfig``: ``lora_r``,
``lora_alpha``, ...). Everything about *how* to train goes in ``training``, which is passed
through to ``trl.SFTConfig`` unchanged (any ``SFTConfig`` / ``TrainingArguments`` field), over
the defaults in :data:`TRAINING_DEFAULTS`. Unknown ``training`` keys are rejected at load time
with the key named.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from llmrec_gen.config import StrictModel, load_yaml_model
from llmrec_gen.data.splits import SplitConfig
from llmrec_gen.errors import ConfigError
from llmrec_gen.io import check_writable
from llmrec_gen.llm.adapters import FORBIDDEN_MODULES
from llmrec_gen.llm.prompting import PromptConfig

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP_MODULES = ["gate_proj", "up_proj", "down_proj"]

TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-4,  # LoRA likes 1e-4..5e-4 (few steps: up to 1e-3)
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,  # < 1: ratio of total steps
    "num_train_epochs": 1.0,
    "max_steps": -1,  # -1: epochs decide
    "per_device_train_batch_size": 8,  # CPU 4-8; GPU 16-64
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,  # tokens; longer examples are dropped (truncation would cut answers)
    "gradient_checkpointing": False,  # TRL defaults to True: +25-45 % CPU step time (measured)
    "save_strategy": "steps",
    "save_steps": 20,  # checkpoint interval (resume granularity)
    "save_total_limit": 2,
    "logging_steps": 5,
    "logging_first_step": True,
    "report_to": "none",
    "dataloader_num_workers": 0,
}
"""Our defaults for ``trl.SFTConfig``; ``training:`` in a recipe overrides any of them."""


class FinetuneConfig(StrictModel):
    """A LoRA fine-tuning run (precedence: CLI ``--set`` > YAML > defaults).

    Keep ``dataset``, ``split`` and ``prompt`` equal to the evaluation config that will use the
    adapter: the split decides which interactions are held out, and the prompt must look like
    inference.
    """

    # model
    model_name_or_path: str = "default"  # "default" = bundled SmolLM2-135M-Instruct; dir or Hub id
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: per device and CPU
    # what to teach: the generator (write the next items) or the ranker (pick a candidate's label)
    task: Literal["generator", "ranker"] = "generator"
    retriever: str = "als"  # task ranker: the method proposing candidates (a registry name)
    n_candidates: int = Field(20, ge=2, le=26)  # task ranker: candidates per row (labels A-Z)
    # data (train split only; keep equal to the evaluation config)
    dataset: str = "ml-100k"  # built-in name or path (see llmrec_gen.data)
    split: SplitConfig = Field(default_factory=SplitConfig)  # same split as the evaluation
    prompt: PromptConfig = Field(default_factory=PromptConfig)  # the inference prompt
    n_targets: int = Field(10, ge=1, le=50)  # items in each completion (= k asked at inference)
    min_history: int = Field(5, ge=1)  # shortest prefix used as a prompt; 3-10
    samples_per_user: int = Field(2, ge=1)  # windows per user (latest + random earlier); 1-10
    max_samples: int | None = Field(1024, ge=1)  # BIGRec-style cap (seeded sample); None = all
    max_eval_samples: int | None = Field(128, ge=1)  # validation rows for eval loss; None = all
    # LoRA (TRL ModelConfig names)
    lora_r: int = Field(16, ge=1, le=512)  # adapter rank; 8-64 typical
    lora_alpha: int = Field(32, ge=1)  # scaling = alpha / r; usually 2 x r
    lora_dropout: float = Field(0.05, ge=0, lt=1)  # 0-0.1
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(ATTENTION_MODULES), min_length=1
    )  # linear layers to adapt; never embed_tokens/lm_head (vLLM rejects them)
    # how to train: passed through to trl.SFTConfig (over TRAINING_DEFAULTS)
    training: dict[str, Any] = Field(default_factory=dict)
    eval_on_start: bool = True  # eval loss of the untrained model (the baseline to beat)
    seed: int = 0  # seeds window sampling, LoRA init, dropout and data order
    output_dir: str = "runs/sft"  # checkpoints and final/ go here

    @field_validator("lora_target_modules")
    @classmethod
    def _no_embeddings(cls, value: list[str]) -> list[str]:
        bad = sorted({m for m in value if m.split(".")[-1] in FORBIDDEN_MODULES})
        if bad:
            raise ValueError(
                f"{', '.join(bad)} cannot be adapted (vLLM's LoRA loader rejects embedding/LM-head "
                "adapters); use projection layers such as q_proj, v_proj"
            )
        return value

    def training_args(self) -> dict[str, Any]:
        """The ``trl.SFTConfig`` keyword arguments: defaults, then ``training``, then ours."""
        args = {**TRAINING_DEFAULTS, **self.training}
        args.update(output_dir=str(Path(self.output_dir).expanduser()), seed=self.seed)
        args.setdefault("data_seed", self.seed)
        if args.get("eval_steps") and "eval_strategy" not in self.training:
            args["eval_strategy"] = "steps"
        return args


def check_training_args(config: FinetuneConfig) -> None:
    """Reject ``training`` keys that ``trl.SFTConfig`` does not take (imports TRL).

    Raises:
        ConfigError: ``training.<key>: not an SFTConfig argument``; or TRL is not installed.
    """
    try:
        from trl import SFTConfig
    except ImportError:
        raise ConfigError("fine-tuning needs TRL: pip install 'llmrec-gen[finetune]'") from None
    known = set(SFTConfig.__dataclass_fields__) | {"gradient_checkpointing"}
    for key in config.training:
        if key not in known:
            raise ConfigError(f"finetune config: training.{key}: not an SFTConfig argument")
    steps = config.training_args().get("max_steps", -1)
    if steps == 0:
        raise ConfigError("finetune config: training.max_steps: use -1 (epochs) or > 0")


def load_finetune_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> FinetuneConfig:
    """Load a :class:`FinetuneConfig` from YAML plus overrides (CLI > file > defaults).

    Args:
        path: a YAML file, a packaged recipe name (``ml100k-smollm2-lora``) or None (defaults).
        overrides: ``{"lora_r": 8, "training.max_steps": 10}`` (dotted keys reach sections).

    Raises:
        ConfigError: bad file or field (one line naming the field), or output_dir not writable.
        ModelNotFoundError: ``model_name_or_path`` is not available locally.
    """
    cfg = load_yaml_model(FinetuneConfig, path, overrides, what="finetune config")
    check_training_args(cfg)
    check_model_available(cfg.model_name_or_path)
    check_writable(cfg.output_dir, "finetune config: output_dir")
    return cfg


def check_model_available(name: str) -> None:
    """Raise :class:`ModelNotFoundError` unless ``name`` can be loaded without converting it.

    The default model counts as available when its GGUF source is installed (it is converted on
    first use by :func:`llmrec_gen.llm.models.resolve_model`).
    """
    from llmrec_gen.llm import models

    if models.is_default_alias(name):
        if not (models.default_model_dir() / models.MARKER_FILE).is_file():
            models.find_default_gguf()
        return
    models.resolve_model(name)
