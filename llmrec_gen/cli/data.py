"""``llmrec-gen data ...``: inspect datasets."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llmrec_gen.cli.common import user_errors

data_app = typer.Typer(help="Datasets.", no_args_is_help=True)


@data_app.command("info")
def data_info(
    dataset: Annotated[
        str, typer.Argument(help="Built-in name (ml-100k, ml-1m) or a path.")
    ] = "ml-100k",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print users, items, interactions, density, time range and merged duplicate titles.

    Data without timestamps is fine here (the time range reads n/a); duplicate (title, year)
    catalogue entries are merged into one item when loading, and the counts are shown.
    """
    with user_errors():
        from llmrec_gen.data.loaders import load_dataset

        info = load_dataset(dataset).info()
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        for key, value in info.items():
            if value is None:
                value = "n/a"
            elif isinstance(value, float) and value < 1:
                value = f"{value:.6f}"
            typer.echo(f"{key:>30}: {value}")
