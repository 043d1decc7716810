"""``llmrec-gen recommend``: top-k items for one user, from the LLM or any ranking method."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from llmrec_gen.cli.common import fail, user_errors
from llmrec_gen.prompts import DEFAULT_TEMPLATE

ENGINES = ("auto", "transformers", "vllm", "openai")


def recommend(
    user: Annotated[str, typer.Option("--user", "-u", help="User ID to recommend for.")],
    k: Annotated[int, typer.Option("-k", help="Number of items (>= 1).")] = 10,
    dataset: Annotated[str, typer.Option(help="Built-in name or path.")] = "ml-100k",
    method: Annotated[str, typer.Option(help="'llm' or a ranking method (e.g. als).")] = "llm",
    model: Annotated[
        str, typer.Option(help="'default' (bundled SmolLM2-135M), HF dir or id.")
    ] = "default",
    adapter: Annotated[
        str | None,
        typer.Option(
            help="LoRA adapter dir or served name (default: the one shipped for ml-100k)."
        ),
    ] = None,
    no_adapter: Annotated[
        bool, typer.Option("--no-adapter", help="Use the base model only.")
    ] = False,
    engine: Annotated[str, typer.Option(help=f"Inference backend: {', '.join(ENGINES)}.")] = "auto",
    template: Annotated[str, typer.Option(help="Prompt template id.")] = DEFAULT_TEMPLATE,
    constrained: Annotated[
        bool, typer.Option("--constrained/--free", help="Decode only catalogue titles.")
    ] = True,
    title_beams: Annotated[
        int, typer.Option(help="With --free: one title per beam, N beams (0: one list).")
    ] = 0,
    explain: Annotated[
        bool, typer.Option("--explain", help="One model-written reason per item.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    show_history: Annotated[
        bool, typer.Option("--show-history", help="Print the history too.")
    ] = False,
    history_len: Annotated[int, typer.Option(help="History items in the prompt (>= 1).")] = 20,
) -> None:
    """Recommend K unseen catalogue items for one user (all of the user's data is history)."""
    with user_errors():
        from llmrec_gen.data.loaders import load_dataset
        from llmrec_gen.data.train_data import TrainData
        from llmrec_gen.io import to_python
        from llmrec_gen.recommenders.base import Capability
        from llmrec_gen.registry import MethodSpec, build_method, names

        if k < 1:
            fail(f"-k: must be >= 1, got {k}")
        if engine not in ENGINES:
            fail(f"--engine: unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if method != "llm":
            _reject_llm_options(
                {
                    "--model": model != "default",
                    "--adapter": adapter is not None,
                    "--no-adapter": no_adapter,
                    "--engine": engine != "auto",
                    "--template": template != DEFAULT_TEMPLATE,
                    "--free": not constrained,
                    "--title-beams": bool(title_beams),
                    "--explain": explain,
                    "--history-len": history_len != 20,
                }
            )
        elif title_beams and constrained:
            fail("--title-beams: needs --free (constrained decoding writes whole titles)")
        if adapter is not None and no_adapter:
            fail("--adapter: conflicts with --no-adapter; give one of them")
        if title_beams < 0 or history_len < 1:
            fail("--title-beams must be >= 0 and --history-len >= 1")
        ds = load_dataset(dataset)
        train = TrainData(ds.interactions, ds.catalog)
        train.check_user(user)
        if k > train.n_items:
            fail(f"-k: {k} exceeds the catalogue ({train.n_items} items)")
        llm = None
        adapter_spec = None
        if method == "llm":
            from llmrec_gen.llm.adapters import bundled_adapter

            if not no_adapter:
                adapter_spec = adapter or (
                    f"bundled:{ds.name}" if bundled_adapter(ds.name) is not None else None
                )
            mode = "constrained" if constrained else ("title_beams" if title_beams else "list")
            decoding: dict[str, Any] = {"mode": mode}
            if title_beams:
                decoding["title_beams"] = title_beams
            params = {
                "model": model,
                "adapter": adapter_spec,
                "engine": engine,
                "prompt": {"template": template, "history_len": history_len},
                "decoding": decoding,
            }
            spec = MethodSpec(type="llm", params=params, fallback="popularity")
            if not as_json:
                note = f"adapter {adapter_spec}" if adapter_spec else "no adapter"
                label = mode.replace("_", " ") + (f" ({title_beams})" if title_beams else "")
                typer.echo(
                    f"LLM: {model} ({note}), {label} decoding, template {template}", err=True
                )
        else:
            spec = MethodSpec(type=method)
        rec = build_method(spec, "--method")
        if not rec.has(Capability.RANK):
            rankers = ", ".join(names(Capability.RANK))
            fail(f"--method: '{method}' predicts ratings; it cannot rank items ({rankers})")
        if method == "llm":
            llm = rec.primary  # type: ignore[attr-defined]
        rec.fit(train)
        recs = rec.recommend([user], k)  # type: ignore[attr-defined]
        items = recs.item_ids[0].tolist()
        details = recs.details[0] if recs.details else None
        reasons = llm.explain(user, items) if explain and llm is not None else None
        rows = train.items(items)
        out = []
        for n, row in enumerate(rows.itertuples()):
            entry: dict[str, Any] = {
                "rank": n + 1,
                "item_id": to_python(row.item_id),
                "title": row.title,
                "year": None if row.year is None or str(row.year) == "<NA>" else int(row.year),
                "genres": row.genres,
                "score": float(recs.scores[0][n]),
            }
            if details:
                entry["grounding"] = details[n].source
                entry["grounding_score"] = round(details[n].score, 3)
                entry["generated"] = details[n].generated
            if reasons:
                entry["reason"] = reasons[n]
            out.append(entry)
        history = train.items(train.history(user).tolist())
        if as_json:
            payload: dict[str, Any] = {
                "user": user,
                "method": method,
                "k": k,
                "adapter": adapter_spec,
                "recommendations": out,
            }
            if show_history:
                payload["history"] = [to_python(i) for i in history["item_id"]]
            typer.echo(json.dumps(payload, indent=2))
            return
        _print_recommendations(user, out, history if show_history else None)


def _reject_llm_options(given: dict[str, bool]) -> None:
    """Fail on the first LLM-only option given with a method that is not the LLM."""
    for flag, is_given in given.items():
        if is_given:
            fail(f"{flag}: only applies to --method llm")


def safe_cell(text: Any) -> str:
    """Text for a terminal table: control characters (escape sequences) shown as U+FFFD and
    rich markup escaped, so item text cannot restyle or rewrite the terminal."""
    from rich.markup import escape

    return escape("".join(ch if ch.isprintable() else "\ufffd" for ch in str(text)))


def _print_recommendations(user: str, out: list[dict], history: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if history is not None:
        h = Table(title=f"History of user {safe_cell(user)} (oldest first)")
        for col in ("item ID", "title", "year"):
            h.add_column(col)
        for row in history.itertuples():
            year = "" if str(row.year) == "<NA>" else str(row.year)
            h.add_row(safe_cell(row.item_id), safe_cell(row.title), year)
        console.print(h)
    t = Table(title=f"Top {len(out)} for user {safe_cell(user)}")
    t.add_column("rank", justify="right")
    t.add_column("item ID", justify="right")
    t.add_column("title")
    t.add_column("year")
    has_ground = any("grounding" in e for e in out)
    if has_ground:
        t.add_column("grounding")
    if any("reason" in e for e in out):
        t.add_column("why")
    for e in out:
        cells = [
            str(e["rank"]),
            safe_cell(e["item_id"]),
            safe_cell(e["title"]),
            str(e["year"] or ""),
        ]
        if has_ground:
            cells.append(f"{e['grounding']} {e['grounding_score']:.2f}")
        if "reason" in e:
            cells.append(safe_cell(e["reason"]))
        t.add_row(*cells)
    console.print(t)
