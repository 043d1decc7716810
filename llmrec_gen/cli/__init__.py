"""The ``llmrec-gen`` command line (typer): one module per command group, one error guard.

``recommend`` and ``evaluate`` are top-level commands; ``data``, ``prompt`` and ``finetune`` are
groups. Heavy modules (torch, transformers, the data stack) are imported inside commands, so
``llmrec-gen --help`` stays instant. User errors print one line and exit non-zero
(:mod:`llmrec_gen.cli.common`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from llmrec_gen.cli.common import OneLineUsageErrors, setup_logging
from llmrec_gen.cli.data import data_app
from llmrec_gen.cli.evaluate import evaluate, tune
from llmrec_gen.cli.finetune import finetune_app
from llmrec_gen.cli.probe import probe_app
from llmrec_gen.cli.prompt import prompt_app
from llmrec_gen.cli.recommend import recommend

app = typer.Typer(
    cls=OneLineUsageErrors,
    help="LLM recommenders vs traditional baselines, on one honest protocol.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """LLM recommenders vs traditional baselines."""
    setup_logging(verbose)


app.command()(recommend)
app.command()(evaluate)
app.command()(tune)
app.add_typer(data_app, name="data")
app.add_typer(prompt_app, name="prompt")
app.add_typer(probe_app, name="probe")
app.add_typer(finetune_app, name="finetune")

__all__ = ["app"]
