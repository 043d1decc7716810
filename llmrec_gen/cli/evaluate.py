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
    seeds: Annotated[
        str | None, typer.Option(help="Split seeds, e.g. 0,1,2 (overrides split.seeds).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Evaluate the config's methods on one split per seed; writes a run directory of reports.

    The run directory is output_dir/<name>-<digest of the resolved config>; rerunning the same
    config resumes there, a second run into it at the same time fails.
    """
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
        if seeds is not None:
            overrides["split.seeds"] = _parse_seeds(seeds)
        cfg = load_yaml_model(EvalConfig, config, overrides, what="eval config")
        if only:
            wanted = {w.strip() for w in only.split(",")}
            unknown = wanted - {m.label for m in cfg.methods}
            if unknown:
                fail(f"--only: no method named {', '.join(sorted(unknown))} in the config")
            cfg.methods = [m for m in cfg.methods if m.label in wanted]
        result = run_evaluation(cfg, progress=progress)
        typer.echo((result.run_dir / "report.md").read_text())
        typer.echo(
            f"wrote {result.run_dir}/ (report.md, metrics.json, metrics.csv, per_user.csv,"
            " metrics.png, seed-*/)"
        )


def tune(
    config: Annotated[str, typer.Option("--config", "-c", help="YAML file or packaged name.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Where to write the tuned config.")],
    metric: Annotated[str, typer.Option(help="Validation metric to maximise.")] = "NDCG@10",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: key=value (dotted).")
    ] = None,
    output_dir: Annotated[str | None, typer.Option(help="Overrides output_dir.")] = None,
    user_sample: Annotated[
        int | None, typer.Option(help="Users of the search only (the tuned config keeps its own).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Search every method's `grid` on the validation target; write the tuned config.

    All grid points run in one evaluation (target valid, the config's first split seed; fit on
    train only). The tuned config keeps each method's best point as its params; run it with
    `evaluate` for the test target. The table of every trial is printed and saved next to it.
    """
    with user_errors():
        from pathlib import Path

        import yaml

        from llmrec_gen.config import load_yaml_model, parse_overrides
        from llmrec_gen.evaluation import EvalConfig, run_evaluation
        from llmrec_gen.evaluation.tuning import select, trials_config, trials_table
        from llmrec_gen.io import atomic_write_text, check_writable

        target = Path(out)
        check_writable(target.parent if str(target.parent) else Path("."), "--out", create=True)
        overrides = parse_overrides(set_ or [])
        if output_dir is not None:
            overrides["output_dir"] = output_dir
        cfg = load_yaml_model(EvalConfig, config, overrides, what="eval config")
        if cfg.task != "ranking":
            fail("tune: only ranking configs are tuned (a metric to maximise)")
        search, trials = trials_config(cfg)
        if user_sample is not None:  # the search only: the tuned config keeps its own sample
            search = search.model_copy(update={"user_sample": user_sample})
        result = run_evaluation(search, progress=progress)
        scores = {}
        for m in result.methods:
            if metric not in m.overall:
                fail(f"--metric: '{metric}' is not measured here (use e.g. NDCG@10 or HR@10)")
            scores[m.name] = float(m.overall[metric])
        tuned, scored = select(cfg, trials, scores)
        table = trials_table(scored, metric)
        header = (
            f"# Tuned on the validation target ({metric}; split seed {search.split.seed}; "
            f"grid runs in {result.run_dir}).\n# Reproduce: llmrec-gen tune --config {config} "
            f"--out {out}\n"
        )
        dump = tuned.model_dump(mode="json", exclude_defaults=True)
        atomic_write_text(target, header + yaml.safe_dump(dump, sort_keys=False))
        atomic_write_text(target.with_suffix(".tuning.md"), table)
        typer.echo(table)
        typer.echo(f"wrote {target} and {target.with_suffix('.tuning.md')}")


def _parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; anything else is a one-line error naming ``--seeds``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        fail("--seeds: give at least one seed, e.g. --seeds 0,1,2")
    try:
        return [int(p) for p in parts]
    except ValueError:
        fail(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}")
