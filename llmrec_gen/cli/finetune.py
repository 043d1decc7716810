"""``llmrec-gen finetune ...``: LoRA fine-tuning commands (a Typer sub-app).

Mounted by the main CLI with ``app.add_typer(finetune_app, name="finetune")``::

    llmrec-gen finetune train --config ml100k-smollm2-lora [--resume] [--set training.max_steps=10]
    llmrec-gen finetune build-data --config ml100k-smollm2-lora --out sft.jsonl
    llmrec-gen finetune merge --base default --adapter runs/sft-ml100k/final --out merged/

``--config`` takes a YAML path or a packaged recipe name; ``--set key=value`` (repeatable,
YAML-typed values, dotted keys for sections such as ``split.seed``) overrides the file.
User errors print one line and exit 1 (see :mod:`llmrec_gen.cli.common`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from llmrec_gen.cli.common import fail, user_errors

finetune_app = typer.Typer(
    help="Fine-tune an LLM recommender with LoRA (TRL SFT) on the training split.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="YAML file or packaged recipe name (e.g. ml100k-smollm2-lora)."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: key=value (repeatable)."),
]


def _load(config: str | None, overrides: list[str] | None) -> Any:
    from llmrec_gen.config import parse_overrides
    from llmrec_gen.llm.finetune import load_finetune_config

    return load_finetune_config(config, parse_overrides(overrides or []))


@finetune_app.command("train")
def train_command(
    config: ConfigOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in output_dir.")
    ] = False,
    overrides: SetOpt = None,
) -> None:
    """Train a LoRA adapter on the training split; writes OUTPUT_DIR/final."""
    with user_errors():
        from llmrec_gen.llm.finetune import train_sft

        cfg = _load(config, overrides)
        final = train_sft(cfg, resume=resume)
    metrics = json.loads((final / "metrics.json").read_text(encoding="utf-8"))
    typer.echo(
        f"adapter: {final}\n"
        f"steps {metrics['steps']}, samples {metrics['samples']}, "
        f"train loss {metrics['train_loss']}, eval loss {metrics['eval_loss']}, "
        f"{metrics['runtime_s']} s"
    )


@finetune_app.command("build-data")
def build_data_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Write the training and validation examples as JSONL (field `split`: train/valid)."""
    with user_errors():
        from llmrec_gen.io import check_writable
        from llmrec_gen.llm.finetune import prepare_data, write_examples

        if out.is_dir():
            fail(f"--out: '{out}' is a directory; give a file name")
        check_writable(out.parent, "--out")
        cfg = _load(config, overrides)
        train_rows, valid_rows = prepare_data(cfg)
        write_examples(out, train_rows, valid_rows)
    typer.echo(f"wrote {len(train_rows)} train + {len(valid_rows)} valid examples to {out}")


@finetune_app.command("merge")
def merge_command(
    adapter: Annotated[Path, typer.Option("--adapter", help="PEFT adapter directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the merged model.")],
    base: Annotated[
        str, typer.Option("--base", help="Base model: 'default', a directory or a Hub id.")
    ] = "default",
) -> None:
    """Merge a LoRA adapter into its base model (a standalone HF model directory)."""
    with user_errors():
        from llmrec_gen.llm.finetune import merge_adapter

        path = merge_adapter(base, adapter, out)
    typer.echo(f"merged model: {path}")
