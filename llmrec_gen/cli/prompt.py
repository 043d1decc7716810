"""``llmrec-gen prompt ...``: list templates and show the exact prompt a user gets."""

from __future__ import annotations

from typing import Annotated

import typer

from llmrec_gen.cli.common import fail, user_errors
from llmrec_gen.prompts import DEFAULT_TEMPLATE

prompt_app = typer.Typer(help="Prompt templates.", no_args_is_help=True)


@prompt_app.command("list")
def prompt_list() -> None:
    """List the packaged prompt templates."""
    from llmrec_gen.llm.prompting import list_templates

    for name in list_templates():
        typer.echo(name)


@prompt_app.command("show")
def prompt_show(
    user: Annotated[str, typer.Option("--user", "-u")],
    template: Annotated[str, typer.Option(help="Template id or .j2 path.")] = DEFAULT_TEMPLATE,
    dataset: Annotated[str, typer.Option()] = "ml-100k",
    history_len: Annotated[int, typer.Option(help="History items (>= 1).")] = 20,
    fields: Annotated[
        str, typer.Option(help="Comma-separated: title,year,genres,rating")
    ] = "title,year",
    n_demos: Annotated[int, typer.Option(help="Few-shot demonstrations (>= 0).")] = 2,
    k: Annotated[int, typer.Option("-k", help="Items requested (>= 1).")] = 10,
    target: Annotated[
        str | None, typer.Option(help="Item ID for rating/explain templates.")
    ] = None,
) -> None:
    """Print the rendered prompt (chat messages) for one user; history = training split.

    The prompt is built by the same object that prompts the model during evaluation, so what is
    shown is exactly what the model reads.
    """
    with user_errors():
        from llmrec_gen.data.loaders import load_dataset
        from llmrec_gen.data.splits import split_dataset
        from llmrec_gen.llm.recommender import LLMRecommender
        from llmrec_gen.registry import build_method

        if k < 1:
            fail(f"-k: must be >= 1, got {k}")
        prompt = {
            "template": template,
            "history_len": history_len,
            "fields": [f.strip() for f in fields.split(",") if f.strip()],
            "n_demos": n_demos,
        }
        llm = LLMRecommender(prompt=prompt, grounding={"use_embeddings": False})
        train = split_dataset(load_dataset(dataset)).train
        train.check_user(user)
        llm.fit(train)
        builder = llm.builder
        if target is not None and not builder.uses("target"):
            fail(f"--target: template '{builder.template_id}' takes no target item")
        if builder.uses("target"):
            if target is None:
                fail(f"--target: template '{builder.template_id}' needs an item ID")
            item = train.coerce_item(target)
            messages = builder.build(train, user, target=item, k=k)
        elif builder.uses("candidates"):
            retriever = build_method("popularity").fit(train)
            cands = retriever.recommend([user], 20).item_ids[0].tolist()  # type: ignore[attr-defined]
            messages = llm.prompts([user], k, items=[cands])[0]
        else:
            messages = llm.prompts([user], k)[0]
        typer.echo(f"# template: {builder.template_id}")
        for m in messages:
            typer.echo(f"--- {m['role']} ---\n{m['content']}")
