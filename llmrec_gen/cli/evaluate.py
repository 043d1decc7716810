"""``llmrec-gen evaluate``: every method of a config on one split; writes a run directory."""

from __future__ import annotations

from typing import Annotated

import typer

from llmrec_gen.cli.common import fail, user_errors


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
    with user_errors():
        from llmrec_gen.config import load_yaml_model, parse_overrides
        from llmrec_gen.evaluation import EvalConfig, run_evaluation

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
