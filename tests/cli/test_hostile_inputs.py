"""The hostile-input probe as one table: each row is a command, the one-line error it must print,
and its exit code; none may print a traceback or a multi-line usage box.

Paths in a row are placeholders (``{tiny}``, ``{file}``, ...) filled from broken copies of the
tiny test model and adapter (``tests/llm_fixtures.py``) built once per module, so the model rows
take a second or two each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from llm_fixtures import TITLES
from typer.testing import CliRunner

from llmrec_gen.cli import app

runner = CliRunner()

REC = ["recommend", "--user", "1", "-k", "3", "--history-len", "3"]  # LLM rows: tiny prompts
EVAL = ["evaluate", "--config", "ml100k-baselines", "--only", "popularity", "--no-progress"]
TRAIN = ["finetune", "train", "--resume", "--set", "model_name_or_path={tiny}"]


def _edit_json(path: Path, **fields: object) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def places(tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path_factory) -> dict[str, str]:
    """Placeholder -> path: the tiny model and adapter, and broken copies of them."""
    root = tmp_path_factory.mktemp("hostile")

    def model_copy(name: str, drop: tuple[str, ...] = ()) -> Path:
        out = root / name
        shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns(*drop))
        return out

    def adapter_copy(name: str, drop: tuple[str, ...] = ()) -> Path:
        out = root / name
        shutil.copytree(tiny_adapter_dir, out, ignore=shutil.ignore_patterns(*drop))
        return out

    (model_copy("bad_json") / "config.json").write_text("{not json")
    (model_copy("empty_json") / "config.json").write_text("{}")
    model_copy("no_weights", drop=("*.safetensors",))
    model_copy("no_tokenizer", drop=("tokenizer*", "chat_template*"))
    _edit_json(adapter_copy("ad_ill_typed") / "adapter_config.json", r="sixteen")
    adapter_copy("ad_no_weights", drop=("adapter_model.*",))
    _edit_json(adapter_copy("ad_wrong_targets") / "adapter_config.json", target_modules=["wq"])

    (root / "file").write_text("a file, not a directory\n")
    ml100k = root / "ml100k"  # u.data without u.item
    ml100k.mkdir()
    (ml100k / "u.data").write_text("1\t2\t3\t881250949\n")
    ml1m = root / "ml1m"  # ratings.dat without movies.dat
    ml1m.mkdir()
    (ml1m / "ratings.dat").write_text("1::2::3::978300760\n")
    interactions_dir = root / "interactions_dir"
    (interactions_dir / "interactions.csv").mkdir(parents=True)
    (interactions_dir / "items.csv").write_text("item_id,title\n2,Heat\n")

    # a fine-tuning run whose only checkpoint looks complete but is torn: every file is there,
    # the weights are cut short and the optimizer state is not a torch archive
    ckpt = root / "sft_run" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"global_step": 4}')
    shutil.copy(tiny_adapter_dir / "adapter_config.json", ckpt)
    weights = (tiny_adapter_dir / "adapter_model.safetensors").read_bytes()
    (ckpt / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    (ckpt / "optimizer.pt").write_bytes(b"PK\x03\x04 torn")

    found = {p.name: str(p) for p in root.iterdir()}
    return found | {
        "tiny": str(tiny_model_dir),
        "lora": str(tiny_adapter_dir),
        "runs": str(root / "runs"),
    }


# (id, command, fragment of the one error line, exit code)
CASES: list[tuple[str, list[str], str, int]] = [
    # data directories
    ("data-interactions-is-a-dir", ["data", "info", "{interactions_dir}"], "is a directory", 1),
    ("data-ml100k-without-u.item", ["data", "info", "{ml100k}"], "missing 'u.item'", 1),
    ("data-ml1m-without-movies.dat", ["data", "info", "{ml1m}"], "missing 'movies.dat'", 1),
    # models
    (
        "model-config-invalid-json",
        [*REC, "--model", "{bad_json}", "--no-adapter"],
        "config.json is not valid JSON",
        1,
    ),
    (
        "model-config-empty",
        [*REC, "--model", "{empty_json}", "--no-adapter"],
        "config.json names no model_type",
        1,
    ),
    (
        "model-without-weights",
        [*REC, "--model", "{no_weights}", "--no-adapter"],
        "no weights",
        1,
    ),
    (
        "model-without-tokenizer",
        [*REC, "--model", "{no_tokenizer}", "--no-adapter"],
        "no tokenizer files",
        1,
    ),
    # adapters
    (
        "adapter-ill-typed-config",
        [*REC, "--model", "{tiny}", "--adapter", "{ad_ill_typed}"],
        "field 'r' must be a number, got 'sixteen'",
        1,
    ),
    (
        "adapter-without-weights",
        [*REC, "--model", "{tiny}", "--adapter", "{ad_no_weights}"],
        "has no weights",
        1,
    ),
    (
        "adapter-wrong-target-modules",
        [*REC, "--model", "{tiny}", "--adapter", "{ad_wrong_targets}"],
        "targets module(s) wq that the base model does not have",
        1,
    ),
    # evaluate: where it writes, and what it evaluates on
    ("eval-output-under-a-file", [*EVAL, "--output-dir", "{file}/x"], "is not writable", 1),
    ("eval-output-under-proc", [*EVAL, "--output-dir", "/proc/llmrec"], "is not writable", 1),
    (
        "eval-no-evaluable-users",
        [*EVAL, "--output-dir", "{runs}", "--set", "split.min_rating=6"],
        "no users to evaluate on test",
        1,
    ),
    (
        "eval-no-cutoffs",
        [*EVAL, "--output-dir", "{runs}", "--set", "ks=[]"],
        "ks: give at least",
        1,
    ),
    ("eval-k-zero", [*EVAL, "--output-dir", "{runs}", "--set", "ks=[0]"], "ks: cutoffs must be", 1),
    (
        "eval-k-beyond-the-catalogue",
        [*EVAL, "--output-dir", "{runs}", "--set", "ks=[99999]"],
        "ks: 99999 exceeds the catalogue (1664 items)",
        1,
    ),
    # fine-tuning
    (
        "build-data-out-under-a-file",
        ["finetune", "build-data", "--out", "{file}/sft.jsonl"],
        "--out:",
        1,
    ),
    (
        "build-data-out-under-proc",
        ["finetune", "build-data", "--out", "/proc/sft.jsonl"],
        "--out:",
        1,
    ),
    (
        "resume-on-a-corrupt-checkpoint",
        [*TRAIN, "--set", "output_dir={sft_run}"],
        "every checkpoint in",
        1,
    ),
    # prompt show
    (
        "prompt-target-not-an-item",
        ["prompt", "show", "--user", "1", "--template", "rating-v1", "--target", "abc"],
        "unknown item 'abc'",
        1,
    ),
    (
        "prompt-target-for-a-template-without-one",
        ["prompt", "show", "--user", "1", "--target", "abc"],
        "--target: template 'zeroshot-v2' takes no target item",
        1,
    ),
    # k and usage errors: one line, never click's usage box
    ("k-zero", ["recommend", "--user", "1", "--method", "popularity", "-k", "0"], ">= 1", 1),
    ("k-negative", ["recommend", "--user", "1", "--method", "popularity", "-k", "-1"], ">= 1", 1),
    (
        "k-beyond-the-catalogue",
        ["recommend", "--user", "1", "--method", "popularity", "-k", "99999"],
        "exceeds the catalogue (1664 items)",
        1,
    ),
    (
        "k-not-a-number",
        ["recommend", "--user", "1", "-k", "ten"],
        "Invalid value for '-k'",
        2,
    ),
    (
        "engine-bogus",
        ["recommend", "--user", "1", "--engine", "bogus"],
        "--engine: unknown engine 'bogus'",
        1,
    ),
    ("unknown-option", ["recommend", "--user", "1", "--bogus"], "No such option", 2),
    # conflicting flags
    (
        "title-beams-without-free",
        [*REC, "--title-beams", "4", "--no-adapter"],
        "--title-beams: needs --free",
        1,
    ),
    (
        "adapter-and-no-adapter",
        [*REC, "--adapter", "{lora}", "--no-adapter"],
        "--adapter: conflicts with --no-adapter",
        1,
    ),
    (
        "free-with-a-baseline",
        ["recommend", "--user", "1", "--method", "popularity", "--free"],
        "--free: only applies to --method llm",
        1,
    ),
    (
        "engine-with-a-baseline",
        ["recommend", "--user", "1", "--method", "popularity", "--engine", "openai"],
        "--engine: only applies to --method llm",
        1,
    ),
    (
        "template-with-a-baseline",
        ["recommend", "--user", "1", "--method", "popularity", "--template", "fewshot-v2"],
        "--template: only applies to --method llm",
        1,
    ),
    # user IDs are matched exactly
    *[
        (
            f"user-{name}",
            ["recommend", "--user", user, "--method", "popularity"],
            f"unknown user {user!r}",
            1,
        )
        for name, user in [
            ("fullwidth-digits", "４２"),
            ("underscore", "4_2"),
            ("plus-sign", "+42"),
            ("leading-zero", "042"),
            ("spaces", " 42"),
        ]
    ],
    (
        "prompt-user-fullwidth",
        ["prompt", "show", "--user", "４２"],
        "unknown user '４２'",
        1,
    ),
]


@pytest.mark.parametrize(
    ("args", "fragment", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_input_is_one_line_error(places, args, fragment, code):
    argv = [a.format_map(places) for a in args]
    result = runner.invoke(app, argv)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Usage:" not in result.output, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.output


def test_no_progress_silences_transformers_loading_bars(places, tmp_path):
    # a small dataset: the LLM, its adapter and the grounding's sentence encoder all load
    data = tmp_path / "data"
    data.mkdir()
    rows = [(u, i, 1000 * u + i) for u in range(1, 9) for i in range(1 + u % 3, 30, 3)]
    (data / "interactions.csv").write_text(
        "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
    )
    (data / "items.csv").write_text(
        "item_id,title\n" + "".join(f'{i},"{TITLES[i]}"\n' for i in range(30))
    )
    cfg = tmp_path / "llm.yaml"
    params = {
        "model": places["tiny"],
        "adapter": places["lora"],
        "prompt": {"history_len": 3},
        "decoding": {"mode": "list", "max_new_tokens": 8},
    }
    cfg.write_text(
        f"name: bars\ndataset: {data}\nks: [5]\nplot: false\n"
        f"methods: [{{type: llm, params: {json.dumps(params)}, fallback: popularity}}]\n"
    )
    result = runner.invoke(
        app, ["evaluate", "--config", str(cfg), "--output-dir", str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "| llm |" in result.output
    for bar in ("Loading weights", "it/s]", "%|"):
        assert bar not in result.output, result.output


def test_recommend_table_escapes_terminal_sequences_in_titles(tmp_path):
    titles = {
        1: "\x1b[2J\x1b[31mWiped\x1b[0m",  # clear screen + colour
        2: "Csi\x9b31mRed",  # the one-byte C1 CSI
        3: "Bell\x07\rOver",  # bell, carriage return
        4: "[bold red]Markup[/]",  # rich markup is text too
        5: "Plain",
    }
    (tmp_path / "items.csv").write_text(
        "item_id,title\n" + "".join(f'{i},"{t}"\n' for i, t in titles.items())
    )
    rows = [(u, i) for u in range(1, 7) for i in range(1, 5)] + [(7, 5)]
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{u * 10 + i}\n" for u, i in rows)
    )
    args = ["recommend", "--user", "7", "--method", "popularity", "-k", "4", "--show-history"]
    result = runner.invoke(app, [*args, "--dataset", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for raw in ("\x1b", "\x9b", "\x07", "\r"):
        assert raw not in result.output, repr(result.output)
    for shown in ("\ufffd[2J\ufffd[31mWiped", "Csi\ufffd31mRed", "[bold red]Markup[/]", "Plain"):
        assert shown in result.output, result.output
