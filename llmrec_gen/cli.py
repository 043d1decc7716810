"""The ``llmrec-gen`` command line (typer). Heavy modules are imported inside commands so that
``llmrec-gen --help`` stays instant.

User errors (:class:`~llmrec_gen.errors.LLMRecError`) print one line and exit with status 1.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from typing import Annotated, Any

import typer

from llmrec_gen.errors import LLMRecError

app = typer.Typer(
    help="LLM generative recommenders vs traditional baselines, on one honest protocol.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
prompt_app = typer.Typer(help="Prompt templates.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(prompt_app, name="prompt")


class Engine(str, Enum):
    """Inference backends."""

    auto = "auto"
    transformers = "transformers"
    vllm = "vllm"
    openai = "openai"


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error to stderr and exit non-zero."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code)


class _Guard:
    """Context manager turning user errors into one-line messages (bugs keep tracebacks)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, LLMRecError):
            fail(str(exc))
        if isinstance(exc, KeyboardInterrupt):
            fail("interrupted (finished work is kept; rerun to resume)", 130)
        return False


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=_err_console())],
    )
    # our own messages (engine picked, one-time model conversion, resuming) always show
    logging.getLogger("llmrec_gen").setLevel(logging.INFO)


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """LLM generative recommenders vs traditional baselines."""
    _setup_logging(verbose)


# ---------------------------------------------------------------------------------------------
# recommend


@app.command()
def recommend(
    user: Annotated[str, typer.Option("--user", "-u", help="User ID to recommend for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="Number of items.")] = 10,
    dataset: Annotated[str, typer.Option(help="Built-in name or path.")] = "ml-100k",
    method: Annotated[str, typer.Option(help="'llm' or a baseline name (e.g. als).")] = "llm",
    model: Annotated[
        str, typer.Option(help="'default' (bundled SmolLM2-135M), HF dir or id.")
    ] = "default",
    adapter: Annotated[
        str | None, typer.Option(help="LoRA adapter dir (default: the one shipped for ml-100k).")
    ] = None,
    no_adapter: Annotated[
        bool, typer.Option("--no-adapter", help="Use the base model only.")
    ] = False,
    engine: Annotated[Engine, typer.Option(help="Inference backend.")] = Engine.auto,
    template: Annotated[str, typer.Option(help="Prompt template id.")] = "zeroshot-v1",
    constrained: Annotated[
        bool, typer.Option("--constrained/--free", help="Decode only catalog titles.")
    ] = True,
    title_beams: Annotated[
        int,
        typer.Option(min=0, help="With --free: one title per beam, N beams (0: one list)."),
    ] = 0,
    explain: Annotated[
        bool, typer.Option("--explain", help="One model-written reason per item.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    show_history: Annotated[
        bool, typer.Option("--show-history", help="Print the history too.")
    ] = False,
    history_len: Annotated[int, typer.Option(min=1, help="History items in the prompt.")] = 20,
) -> None:
    """Recommend K unseen catalog items for one user (all of the user's data is history)."""
    with _Guard():
        from llmrec_gen.config import MethodConfig
        from llmrec_gen.data import TrainData, load_dataset
        from llmrec_gen.evaluation import build_method

        ds = load_dataset(dataset)
        train = TrainData(ds.interactions, ds.catalog)
        train.require_history(user)
        used_adapter = None
        if method == "llm":
            from llmrec_gen.models import bundled_adapter, resolve_adapter

            used_adapter = None if no_adapter else (adapter or bundled_adapter(ds.name))
            if used_adapter is not None and engine != Engine.openai:
                used_adapter = resolve_adapter(str(used_adapter))
            params = {
                "model": model,
                "adapter": str(used_adapter) if used_adapter else None,
                "engine": engine.value,
                "template": template,
                "constrained": constrained,
                "title_beams": title_beams,
                "history_len": history_len,
            }
            if not as_json:
                note = f"adapter {used_adapter}" if used_adapter else "no adapter"
                mode = "constrained" if constrained else "free"
                if title_beams:
                    mode += f" ({title_beams} title beams)"
                typer.echo(
                    f"LLM: {model} ({note}), {mode} decoding, template {template}",
                    err=True,
                )
            rec = build_method(MethodConfig(type="llm", params=params))
        else:
            rec = build_method(MethodConfig(type=method))
        rec.fit(train)
        recs = rec.recommend([user], k)
        items = recs.item_ids[0].tolist()
        details = recs.details[0] if recs.details else None
        reasons = rec.explain(user, items) if explain and hasattr(rec, "explain") else None
        rows = train.items(items)
        out = []
        for n, row in enumerate(rows.itertuples()):
            entry = {
                "rank": n + 1,
                "item_id": _py(row.item_id),
                "title": row.title,
                "year": None if row.year is None or str(row.year) == "<NA>" else int(row.year),
                "genres": row.genres,
                "score": float(recs.scores[0][n]),
            }
            if details:
                entry["grounding"] = details[n].method
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
                "adapter": str(used_adapter) if used_adapter else None,
                "recommendations": out,
            }
            if show_history:
                payload["history"] = [_py(i) for i in history["item_id"]]
            typer.echo(json.dumps(payload, indent=2))
            return
        _print_recommendations(user, out, history if show_history else None)


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _print_recommendations(user: str, out: list[dict], history: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if history is not None:
        h = Table(title=f"History of user {user} (oldest first)")
        for col in ("item ID", "title", "year"):
            h.add_column(col)
        for row in history.itertuples():
            h.add_row(str(row.item_id), row.title, "" if str(row.year) == "<NA>" else str(row.year))
        console.print(h)
    t = Table(title=f"Top {len(out)} for user {user}")
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
        cells = [str(e["rank"]), str(e["item_id"]), e["title"], str(e["year"] or "")]
        if has_ground:
            cells.append(f"{e['grounding']} {e['grounding_score']:.2f}")
        if "reason" in e:
            cells.append(e["reason"])
        t.add_row(*cells)
    console.print(t)


# ---------------------------------------------------------------------------------------------
# evaluate


@app.command()
def evaluate(
    config: Annotated[str, typer.Option("--config", "-c", help="YAML file or packaged name.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: key=value (dotted).")
    ] = None,
    output_dir: Annotated[str | None, typer.Option(help="Overrides output_dir.")] = None,
    user_sample: Annotated[int | None, typer.Option(help="Overrides user_sample.")] = None,
    target: Annotated[str | None, typer.Option(help="Overrides target (valid/test).")] = None,
    only: Annotated[str | None, typer.Option(help="Comma-separated method names to run.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Evaluate the config's methods on one split; writes a run directory of reports."""
    with _Guard():
        from llmrec_gen.config import EvalConfig, load_yaml_model, parse_overrides
        from llmrec_gen.evaluation import run_evaluation

        overrides = parse_overrides(set_ or [])
        for key, value in (
            ("output_dir", output_dir),
            ("user_sample", user_sample),
            ("target", target),
        ):
            if value is not None:
                overrides[key] = value
        cfg = load_yaml_model(EvalConfig, config, overrides, what="eval config")
        if only:
            wanted = {w.strip() for w in only.split(",")}
            unknown = wanted - {m.label for m in cfg.methods}
            if unknown:
                fail(f"--only: no method named {', '.join(sorted(unknown))} in the config")
            cfg.methods = [m for m in cfg.methods if m.label in wanted]
        result = run_evaluation(cfg, progress=progress)
        typer.echo((result.run_dir / "report.md").read_text())
        typer.echo(f"wrote {result.run_dir}/ (metrics.json, metrics.csv, report.md, metrics.png)")


# ---------------------------------------------------------------------------------------------
# data / prompt


@data_app.command("info")
def data_info(
    dataset: Annotated[str, typer.Argument(help="Built-in name (ml-100k) or a path.")] = "ml-100k",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print users, items, interactions, density and time range."""
    with _Guard():
        from llmrec_gen.data import load_dataset

        info = load_dataset(dataset).info()
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        for key, value in info.items():
            typer.echo(
                f"{key:>30}: {value:.6f}"
                if isinstance(value, float) and value < 1
                else f"{key:>30}: {value}"
            )


@prompt_app.command("list")
def prompt_list() -> None:
    """List the packaged prompt templates."""
    from llmrec_gen.prompting import list_templates

    for name in list_templates():
        typer.echo(name)


@prompt_app.command("show")
def prompt_show(
    user: Annotated[str, typer.Option("--user", "-u")],
    template: Annotated[str, typer.Option(help="Template id or .j2 path.")] = "zeroshot-v1",
    dataset: Annotated[str, typer.Option()] = "ml-100k",
    history_len: Annotated[int, typer.Option(min=1)] = 20,
    fields: Annotated[
        str, typer.Option(help="Comma-separated: title,year,genres,rating")
    ] = "title,year",
    n_demos: Annotated[int, typer.Option(min=0)] = 2,
    k: Annotated[int, typer.Option("-k", min=1)] = 10,
    target: Annotated[
        str | None, typer.Option(help="Item ID for rating/explain templates.")
    ] = None,
) -> None:
    """Print the rendered prompt (chat messages) for one user; history = training split."""
    with _Guard():
        from llmrec_gen.data import load_dataset
        from llmrec_gen.prompting import PromptBuilder, draw_demonstrations
        from llmrec_gen.splits import split_dataset

        split = split_dataset(load_dataset(dataset))
        train = split.train
        builder = PromptBuilder(
            template, history_len, tuple(f.strip() for f in fields.split(",")), k=k, n_demos=n_demos
        )
        demos = draw_demonstrations(train, n_demos) if n_demos else []
        tgt = None
        if target is not None:
            tgt = int(target) if train.item_ids.dtype.kind in "iu" else target
            if tgt not in train.item_index:
                fail(f"--target: unknown item {target!r}")
        cands = []
        if "rerank" in template:
            from llmrec_gen.baselines import make_baseline

            cands = make_baseline("popularity").fit(train).recommend([user], 20).item_ids[0]
        messages = builder.build(train, user, demos=demos, candidates=list(cands), target=tgt)
        typer.echo(f"# template: {builder.template_id}")
        for m in messages:
            typer.echo(f"--- {m['role']} ---\n{m['content']}")


def _mount_optional() -> None:
    try:
        from llmrec_gen.finetune_cli import finetune_app
    except ImportError:  # finetune extras missing: the sub-app itself explains on use
        return
    app.add_typer(finetune_app, name="finetune")


_mount_optional()


def run() -> None:  # pragma: no cover - console entry point wrapper
    """Entry point used by ``python -m llmrec_gen``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
