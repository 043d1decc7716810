"""Memorization probes on the real tiny Llama: prompts come from fit data only, rates are
rates, and the CLI writes its JSON."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from llmrec_gen.cli import app
from llmrec_gen.llm.engines import shared_engine
from llmrec_gen.llm.probe import (
    bootstrap_ci,
    catalogue_prompts,
    continuation_logprobs,
    item_probe,
    user_probe,
)


def test_catalogue_prompts_show_three_real_lines_and_ask_for_another(block_data):
    prompts, expected, ids = catalogue_prompts(block_data.train, "ml-100k", 4, seed=1)
    assert len(prompts) == len(expected) == len(ids) <= 4
    for prompt, item in zip(prompts, ids, strict=True):
        lines = prompt.splitlines()
        assert len(lines) == 5 and lines[-1] == f"{item}|"
        assert all("|" in line for line in lines[1:4])
        assert f"{item}|" not in "\n".join(lines[1:4])  # the asked item is never a shot


def test_bootstrap_ci_brackets_the_rate():
    hits = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 0], dtype=float)
    low, high = bootstrap_ci(hits)
    assert low <= hits.mean() <= high and 0 <= low < high <= 1


def test_continuation_logprobs_equal_a_plain_forward_pass(tiny_model_dir):
    import torch

    engine = shared_engine("transformers", str(tiny_model_dir))
    prompt = engine.tokenizer("A user rated:\n-").input_ids
    conts = [[11, 12, 13], [14], [15, 16]]
    got = continuation_logprobs(engine._base, prompt, conts, "cpu")
    for c, value in zip(conts, got, strict=True):
        with torch.no_grad():
            lp = torch.log_softmax(engine._base(input_ids=torch.tensor([prompt + c])).logits[0], -1)
        expected = sum(float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(c))
        assert value == np.float64(value) and abs(value - expected) < 1e-3


def test_probes_report_rates_over_their_samples(block_data, tiny_model_dir):
    engine = shared_engine("transformers", str(tiny_model_dir))
    item = item_probe(engine, block_data.train, "ml-100k", 3, prefix=False)
    assert item.n == 3 and 0 <= item.rate <= 1 and item.examples
    user = user_probe(engine, block_data.train, 2, n_negatives=3)
    assert user.chance == 0.25 and user.n <= 2 and 0 <= user.rate <= 1


def test_probe_command_writes_json(tmp_path, tiny_model_dir):
    out = tmp_path / "probe.json"
    result = CliRunner().invoke(
        app,
        [
            "probe",
            "memorization",
            "--model",
            str(tiny_model_dir),
            "--items",
            "2",
            "--users",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| id->title |" in result.output
    payload = json.loads(out.read_text())
    assert [p["probe"] for p in payload["probes"]] == [
        "id->title",
        "prefix->title",
        "user next item",
    ]


def test_probe_bad_counts_are_one_line_errors():
    result = CliRunner().invoke(app, ["probe", "memorization", "--items", "0"])
    assert result.exit_code != 0 and "--items must be >= 1" in result.output
    assert "Traceback" not in result.output
