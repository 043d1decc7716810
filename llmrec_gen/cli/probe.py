"""``llmrec-gen probe memorization``: has the model memorized the catalogue or its users?"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llmrec_gen.cli.common import fail, user_errors

probe_app = typer.Typer(help="Probes of the language model.", no_args_is_help=True)


@probe_app.command("memorization")
def memorization(
    dataset: Annotated[str, typer.Option(help="Built-in name or path.")] = "ml-100k",
    model: Annotated[str, typer.Option(help="'default' or a local HF model dir.")] = "default",
    adapter: Annotated[
        str | None, typer.Option(help="LoRA adapter dir or bundled:<dataset>.")
    ] = None,
    items: Annotated[int, typer.Option(help="Sampled items per item probe (>= 1).")] = 100,
    users: Annotated[int, typer.Option(help="Sampled users for the user probe (>= 0).")] = 100,
    seed: Annotated[int, typer.Option(help="Seeds the samples and the bootstrap.")] = 0,
    out: Annotated[str | None, typer.Option(help="Write the results as JSON here.")] = None,
) -> None:
    """Exact-completion rates of catalogue lines and a next-item test on users' own histories,
    with 95 % bootstrap CIs (see llmrec_gen.llm.probe). Reads the training split only."""
    with user_errors():
        if items < 1 or users < 0:
            fail("--items must be >= 1 and --users >= 0")
        from pathlib import Path

        from llmrec_gen.data import load_dataset, split_dataset
        from llmrec_gen.io import atomic_write_text, check_writable
        from llmrec_gen.llm.adapters import resolve_adapter
        from llmrec_gen.llm.engines import shared_engine
        from llmrec_gen.llm.probe import item_probe, user_probe

        if out is not None:
            check_writable(Path(out).parent if Path(out).parent != Path("") else Path("."), "--out")
        ref = resolve_adapter(adapter) if adapter else None
        train = split_dataset(load_dataset(dataset)).fit_data("valid")
        engine = shared_engine("transformers", model)
        results = []
        for prefix in (False, True):
            results.append(
                item_probe(engine, train, dataset, items, prefix=prefix, seed=seed, adapter=ref)
            )
        if users:
            with engine._use_adapter(ref):
                results.append(user_probe(engine, train, users, seed=seed))
        label = f"{model}" + (f" + {adapter}" if adapter else "")
        typer.echo(f"| probe ({label}) | rate [95% CI] | n | chance |\n|---|---|---|---|")
        for r in results:
            typer.echo(
                f"| {r.probe} | {r.rate:.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}] | {r.n} | "
                f"{r.chance:.2f} |"
            )
        if out is not None:
            payload = {
                "dataset": dataset,
                "model": model,
                "adapter": adapter,
                "seed": seed,
                "probes": [r.__dict__ for r in results],
            }
            atomic_write_text(Path(out), json.dumps(payload, indent=2, default=str))
