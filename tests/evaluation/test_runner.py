"""The evaluator: reports, cohorts, LLM grounding rates, checkpoint/resume, config errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from conftest import make_block_data

from llmrec_gen.errors import ConfigError
from llmrec_gen.evaluation import EvalConfig, run_evaluation
from llmrec_gen.registry import MethodSpec


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The block dataset as a generic interactions.csv + items.csv pair."""
    data = make_block_data()
    out = tmp_path_factory.mktemp("blocks")
    data.train.interactions.to_csv(out / "interactions.csv", index=False)
    data.train.catalog.drop(columns="text").to_csv(out / "items.csv", index=False)
    return out


def _config(dataset_dir: Path, out: Path, methods: list[dict], **kw) -> EvalConfig:
    return EvalConfig(
        name="t",
        dataset=str(dataset_dir),
        output_dir=str(out),
        ks=kw.pop("ks", [1, 3]),
        plot=kw.pop("plot", False),
        methods=[MethodSpec(**m) for m in methods],
        **kw,
    )


def test_writes_every_report_file(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "itemknn"}], plot=True)
    result = run_evaluation(cfg, progress=False)
    for name in ("metrics.json", "metrics.csv", "report.md", "metrics.png", "config.yaml"):
        assert (result.run_dir / name).stat().st_size > 0
    payload = json.loads((result.run_dir / "metrics.json").read_text())
    assert payload["protocol"]["ranking"] == "full-catalog"
    assert [m["name"] for m in payload["methods"]] == ["popularity", "itemknn"]
    assert "## Cohorts" in (result.run_dir / "report.md").read_text()


def test_known_answer_itemknn_beats_popularity(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "itemknn"}])
    pop, knn = run_evaluation(cfg, progress=False).methods
    assert knn.overall["HR@3"] > pop.overall["HR@3"]
    assert knn.n_users == pop.n_users == 24


def test_cohort_sizes_partition_users(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}])
    (m,) = run_evaluation(cfg, progress=False).methods
    assert m.cohorts["head-target"]["users"] + m.cohorts["tail-target"]["users"] == m.n_users
    assert m.cohorts["cold-users"]["users"] + m.cohorts["warm-users"]["users"] == m.n_users


def test_sampled_metrics_are_labelled(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}], sampled_negatives=5)
    result = run_evaluation(cfg, progress=False)
    assert all("[sampled-5]" in k for k in result.methods[0].overall if k.startswith("NDCG"))
    assert result.protocol["ranking"] == "sampled-5"


def test_llm_method_reports_grounding_rates(dataset_dir, tmp_path, tiny_model_dir):
    params = {
        "model": str(tiny_model_dir),
        "engine": "transformers",
        "prompt": {"history_len": 3},
        "decoding": {"mode": "constrained"},
        "batch_size": 4,
        "grounding": {"use_embeddings": False},
    }
    method = {"type": "llm", "name": "llm-c", "params": params, "fallback": "popularity"}
    cfg = _config(dataset_dir, tmp_path, [method], user_sample=6)
    result = run_evaluation(cfg, progress=False)
    (m,) = result.methods
    assert m.n_users == 6
    assert m.stats["valid_title_rate"] == 1.0 and m.stats["hallucination_rate"] == 0.0
    assert m.stats["constrained_rate"] == 1.0
    report = (result.run_dir / "report.md").read_text()
    assert "## Method statistics" in report and "llm-c" in report


def test_saved_lists_are_not_reused_once_the_adapter_weights_change(tmp_path, tiny_adapter_dir):
    import shutil

    from llmrec_gen.evaluation.runner import _method_key
    from llmrec_gen.registry import build_method

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    cfg = EvalConfig(dataset="ml-100k", methods=[{"type": "popularity"}])
    spec = MethodSpec(type="llm", params={"adapter": str(adapter)})
    before = _method_key(spec, build_method(spec), cfg, 0)
    assert _method_key(spec, build_method(spec), cfg, 0) == before
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v2")
    assert _method_key(spec, build_method(spec), cfg, 0) != before


def test_a_new_method_is_one_class_and_one_registry_line(dataset_dir, tmp_path, monkeypatch):
    import numpy as np

    from llmrec_gen import registry
    from llmrec_gen.recommenders.base import ScoringRecommender

    class Newest(ScoringRecommender):
        """Throwaway: scores items by catalogue position (last item first)."""

        name = "newest"

        def _fit(self, train):
            self.n_items_ = train.n_items

        def _score(self, user_idx):
            return np.tile(np.arange(self.n_items_, dtype=float), (len(user_idx), 1))

    monkeypatch.setitem(registry.METHODS, "newest", "")
    registry.register("newest", Newest)
    cfg = _config(dataset_dir, tmp_path, [{"type": "newest"}, {"type": "popularity"}])
    newest, _ = run_evaluation(cfg, progress=False).methods
    assert newest.name == "newest" and newest.n_users == 24


def test_the_evaluation_package_never_asks_for_a_method_name():
    import re

    import llmrec_gen.evaluation as evaluation

    package = Path(evaluation.__file__).parent
    names = ["llm", "popularity", "als", "lightfm", "bm25", "svd", "itemknn", "embedding"]
    for path in package.glob("*.py"):
        code = path.read_text()
        assert "llmrec_gen.llm" not in code, path.name
        assert not re.search(r"\btype\s*==", code), path.name
        for name in names:
            assert not re.search(rf"[\"']{name}[\"']", code), (path.name, name)


def test_resume_continues_from_completed_users(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "als"}])
    run = run_evaluation(cfg, progress=False)
    first = run.methods[0]
    mdir = run.run_dir / "seed-0" / "methods" / "als"
    key = json.loads((mdir / "result.json").read_text())["key"]
    rows = (mdir / "recs.jsonl").read_text().splitlines()
    # simulate a kill after 10 users, with a torn (half-written) last line
    (mdir / "recs.partial.jsonl").write_text(
        "\n".join([json.dumps({"key": key}), *rows[:10], rows[10][:15]])
    )
    (mdir / "result.json").unlink()
    second = run_evaluation(cfg, progress=False).methods[0]
    assert second.timings["resumed_users"] == 10
    assert second.overall == first.overall
    assert not (mdir / "recs.partial.jsonl").exists()


def test_finished_methods_are_reused(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}])
    first = run_evaluation(cfg, progress=False).methods[0]
    second = run_evaluation(cfg, progress=False).methods[0]
    assert second.timings == first.timings  # loaded, not recomputed


def test_unknown_method_type_names_the_field(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "nope"}])
    with pytest.raises(ConfigError, match=r"methods\[0\] \(nope\): unknown method 'nope'"):
        run_evaluation(cfg, progress=False)


def test_bad_method_param_names_the_method(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "als", "params": {"factorz": 3}}])
    with pytest.raises(ConfigError, match=r"methods\[0\]"):
        run_evaluation(cfg, progress=False)


def test_duplicate_method_names_rejected(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "popularity"}])
    with pytest.raises(ConfigError, match="share a name"):
        run_evaluation(cfg, progress=False)


def test_rating_task_reports_mae_rmse_and_svd_beats_global_mean(tmp_path):
    cfg = EvalConfig(
        name="r",
        task="rating",
        output_dir=str(tmp_path),
        user_sample=300,
        plot=False,
        methods=[MethodSpec(type="global-mean"), MethodSpec(type="svd")],
    )
    glob, svd = run_evaluation(cfg, progress=False).methods
    assert 0 < svd.overall["RMSE"] < glob.overall["RMSE"]
    assert glob.overall["MAE"] <= glob.overall["RMSE"]


def test_rating_task_rejects_ranking_methods(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "als"}], task="rating")
    with pytest.raises(ConfigError, match=r"methods\[0\] \(als\): 'als' cannot do this task"):
        run_evaluation(cfg, progress=False)


def test_rating_cohorts_count_users_not_pairs(tmp_path):
    # a global timeline cut holds out several ratings of the same user
    cfg = EvalConfig(
        name="r",
        task="rating",
        split={"protocol": "global_timeline"},
        output_dir=str(tmp_path),
        plot=False,
        methods=[MethodSpec(type="global-mean")],
    )
    (m,) = run_evaluation(cfg, progress=False).methods
    assert m.overall["pairs"] > m.n_users
    assert m.cohorts["warm-users"]["users"] + m.cohorts["cold-users"]["users"] == m.n_users
    assert m.cohorts["warm-users"]["pairs"] + m.cohorts["cold-users"]["pairs"] == m.overall["pairs"]


# ---------------------------------------------------------------------------------------------
# Protocol: fit data per target, seeds, CIs, paired tests, per-user file


def _recs(run_dir: Path, method: str, seed: int = 0) -> dict:
    path = run_dir / f"seed-{seed}" / "methods" / method / "recs.jsonl"
    return {r["user"]: r["items"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("target", ["valid", "test"])
def test_the_validation_item_is_seen_exactly_when_ranking_the_test_item(
    dataset_dir, tmp_path, target
):
    from llmrec_gen.data import load_dataset, split_dataset

    cfg = _config(dataset_dir, tmp_path, [{"type": "itemknn"}], target=target, ks=[20])
    run = run_evaluation(cfg, progress=False)
    split = split_dataset(load_dataset(str(dataset_dir)))
    valid_item = split.valid.set_index("user_id")["item_id"].to_dict()
    recs = _recs(run.run_dir, "itemknn")
    shown = [valid_item[u] in recs[u] for u in recs]
    # the block data makes each user's held-out items the only candidates itemknn points to
    assert not any(shown) if target == "test" else all(shown)


def test_test_target_scores_equal_a_fit_on_train_plus_valid(dataset_dir, tmp_path):
    from llmrec_gen.data import load_dataset, split_dataset
    from llmrec_gen.evaluation import metrics as M
    from llmrec_gen.registry import build_method

    cfg = _config(dataset_dir, tmp_path, [{"type": "als"}])
    (m,) = run_evaluation(cfg, progress=False).methods
    split = split_dataset(load_dataset(str(dataset_dir)))
    fit, targets = split.fit_data("test"), split.targets("test")
    users = sorted(targets)
    recs = build_method({"type": "als"}).fit(fit).recommend(users, 3)
    per_user = M.ranking_metrics(list(recs.item_ids), [targets[u] for u in users], [3])
    assert m.overall["NDCG@3"] == pytest.approx(per_user["NDCG@3"].mean())


def test_per_user_file_reproduces_the_report(dataset_dir, tmp_path):
    from llmrec_gen.evaluation.results import read_per_user

    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "itemknn"}])
    run = run_evaluation(cfg, progress=False)
    table = read_per_user(run.run_dir / "per_user.csv")
    assert list(table.columns[:3]) == ["method", "seed", "user"]
    assert {"HR@3", "NDCG@1", "cohort:head-target", "cohort:cold-item-target"} <= set(table)
    for m in run.methods:
        rows = table[table["method"] == m.name]
        assert len(rows) == m.n_users == 24
        assert rows["NDCG@3"].mean() == pytest.approx(m.overall["NDCG@3"], abs=1e-6)
        tail = rows[rows["cohort:tail-target"]]
        assert tail["HR@3"].mean() == pytest.approx(m.cohorts["tail-target"]["HR@3"], abs=1e-6)


def test_every_metric_has_a_ci_around_its_mean(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "itemknn"}])
    for m in run_evaluation(cfg, progress=False).methods:
        accuracy = [k for k in m.overall if k.split("@")[0] in ("HR", "NDCG", "MRR", "MAP")]
        assert accuracy and set(accuracy) <= set(m.ci)
        for metric in accuracy:
            lo, hi = m.ci[metric]
            assert lo <= m.overall[metric] <= hi


def test_paired_tests_use_the_best_method_as_reference_and_mark_significance(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "itemknn"}], ks=[3])
    pop, knn = run_evaluation(cfg, progress=False).methods
    assert knn.test == {"reference": "itemknn", "metric": "NDCG@3", "is_reference": True}
    assert pop.test["reference"] == "itemknn" and pop.test["diff"] < 0
    assert pop.test["significant"] and pop.test["p_bootstrap_holm"] < 0.05
    report = (tmp_path / next(p.name for p in tmp_path.iterdir()) / "report.md").read_text()
    assert "## Paired tests vs `itemknn`" in report and "**significant**" in report


def test_the_reference_can_be_named(dataset_dir, tmp_path):
    methods = [{"type": "popularity"}, {"type": "itemknn"}, {"type": "random"}]
    cfg = _config(dataset_dir, tmp_path, methods, stats={"reference": "popularity"})
    pop, knn, rnd = run_evaluation(cfg, progress=False).methods
    assert pop.test["is_reference"] and knn.test["diff"] > 0
    assert knn.test["p_bootstrap_holm"] >= knn.test["p_bootstrap"]


def test_an_unknown_reference_names_the_field(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}], stats={"reference": "als"})
    with pytest.raises(ConfigError, match=r"^stats\.reference: no method named 'als'"):
        run_evaluation(cfg, progress=False)


def test_seeds_run_the_evaluation_once_each_and_report_the_spread(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "itemknn"}], split={"seeds": [0, 1, 2]})
    run = run_evaluation(cfg, progress=False)
    (m,) = run.methods
    for seed in (0, 1, 2):
        assert (run.run_dir / f"seed-{seed}" / "methods" / "itemknn" / "recs.jsonl").exists()
        assert (run.run_dir / f"seed-{seed}" / "metrics.json").exists()
    assert len(m.seeds["NDCG@3"]) == 3 and "NDCG@3" in m.seed_sd
    assert m.overall["NDCG@3"] == pytest.approx(sum(m.seeds["NDCG@3"]) / 3)
    assert run.protocol["seeds"] == [0, 1, 2]
    assert " ± " in (run.run_dir / "report.md").read_text()


def test_the_report_states_the_protocol(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}], split={"seeds": [3, 4]})
    text = (run_evaluation(cfg, progress=False).run_dir / "report.md").read_text()
    protocol = text.split("## Protocol")[1].split("## Overall")[0]
    for phrase in (
        "split `leave_last_out`, seeds 3, 4",
        "Target `test`",
        "fit on **train + valid (every interaction before the test item)**",
        "**full-catalog**",
        "seen items) are excluded",
        "all 24 users",
        "95% percentile bootstrap CI",
    ):
        assert phrase in protocol, phrase


def test_tables_on_a_user_sample_are_labelled(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}], user_sample=10)
    text = (run_evaluation(cfg, progress=False).run_dir / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    for heading in headings:
        if heading not in ("## Protocol", "## Timings"):
            assert "seeded sample of 10 users" in heading, heading
    assert "**seeded sample of 10 users**" in text


def test_no_evaluable_user_is_a_one_line_data_error(dataset_dir, tmp_path):
    from llmrec_gen.errors import DataError

    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}], split={"min_rating": 5})
    with pytest.raises(DataError, match=r"^no users to evaluate on test: "):
        run_evaluation(cfg, progress=False)


def test_random_leave_one_out_evaluates(dataset_dir, tmp_path):
    split = {"protocol": "random_leave_one_out", "seeds": [0, 1]}
    cfg = _config(dataset_dir, tmp_path, [{"type": "itemknn"}], split=split)
    run = run_evaluation(cfg, progress=False)
    assert run.methods[0].n_users == 24
    assert "no time order" in (run.run_dir / "report.md").read_text()


def test_cold_item_protocol_reports_both_groups_and_cf_cannot_score_cold_items(
    dataset_dir, tmp_path
):
    methods = [{"type": "itemknn"}, {"type": "bm25"}]
    split = {"cold_item_fraction": 0.4, "seeds": [0, 1]}
    cfg = _config(dataset_dir, tmp_path, methods, split=split, ks=[3])
    run = run_evaluation(cfg, progress=False)
    knn, bm25 = run.methods
    cold, warm = knn.cohorts["cold-item-target"], knn.cohorts["warm-item-target"]
    assert cold["users"] > 0 and warm["users"] > 0
    # never in the fit data: a collaborative score of zero (hits only by tie order)
    assert cold["HR@3"] < warm["HR@3"]
    assert bm25.cohorts["cold-item-target"]["HR@3"] > cold["HR@3"]  # content reaches cold items
    assert bm25.cohort_ci["cold-item-target"]["HR@3"][1] > 0
    assert "Cold items: a seeded 40%" in (run.run_dir / "report.md").read_text()


def test_rating_task_reports_cis(tmp_path):
    cfg = EvalConfig(
        name="r",
        task="rating",
        output_dir=str(tmp_path),
        user_sample=100,
        plot=False,
        methods=[MethodSpec(type="global-mean")],
    )
    (m,) = run_evaluation(cfg, progress=False).methods
    for metric in ("MAE", "RMSE"):
        lo, hi = m.ci[metric]
        assert lo < m.overall[metric] < hi


# ---------------------------------------------------------------------------------------------
# Run directories: digest, lock, permissions, writability


def test_configs_sharing_a_name_get_their_own_run_directories(dataset_dir, tmp_path):
    a = run_evaluation(_config(dataset_dir, tmp_path, [{"type": "popularity"}]), progress=False)
    cfg_b = _config(dataset_dir, tmp_path, [{"type": "popularity"}], split={"seed": 1})
    b = run_evaluation(cfg_b, progress=False)
    assert a.run_dir != b.run_dir and a.run_dir.parent == b.run_dir.parent == tmp_path
    assert a.run_dir.name.startswith("t-") and len(a.run_dir.name) == len("t-") + 8
    assert json.loads((a.run_dir / "metrics.json").read_text())["protocol"]["seed"] == 0
    assert json.loads((b.run_dir / "metrics.json").read_text())["protocol"]["seed"] == 1


def test_the_same_config_reuses_its_run_directory(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}])
    first = run_evaluation(cfg, progress=False)
    again = _config(dataset_dir, tmp_path, [{"type": "popularity"}], plot=True)  # no new number
    assert run_evaluation(again, progress=False).run_dir == first.run_dir


def test_outputs_follow_the_umask(dataset_dir, tmp_path):
    import os

    old = os.umask(0o027)
    try:
        run = run_evaluation(_config(dataset_dir, tmp_path, [{"type": "als"}]), progress=False)
    finally:
        os.umask(old)
    files = [p for p in run.run_dir.rglob("*") if p.is_file()]
    assert len(files) >= 7
    assert {p.stat().st_mode & 0o777 for p in files} == {0o640}
    assert {p.stat().st_mode & 0o777 for p in run.run_dir.rglob("*") if p.is_dir()} == {0o750}


@pytest.mark.parametrize("output_dir", ["/etc/passwd/x", "/proc/llmrec-test"])
def test_an_unwritable_output_dir_is_a_config_error(dataset_dir, output_dir):
    cfg = _config(dataset_dir, Path(output_dir), [{"type": "popularity"}])
    with pytest.raises(ConfigError, match=r"^eval config: output_dir: '.*' is not writable"):
        run_evaluation(cfg, progress=False)


LOCK_HOLDER = """
import sys
from pathlib import Path
from llmrec_gen.io import directory_lock
with directory_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _hold_lock(run_dir: Path):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(run_dir)],
        cwd=tempfile.gettempdir(),  # not the checkout: import the installed package
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_on_the_same_run_directory_fails_naming_the_holder(dataset_dir, tmp_path):
    import socket
    import subprocess
    import sys

    from llmrec_gen.evaluation.runner import run_directory

    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"name: t\ndataset: {dataset_dir}\noutput_dir: {tmp_path / 'runs'}\nks: [1, 3]\n"
        "plot: false\nmethods: [{type: popularity}]\n"
    )
    from llmrec_gen.config import load_yaml_model

    run_dir = run_directory(load_yaml_model(EvalConfig, config))
    holder = _hold_lock(run_dir)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "llmrec_gen", "evaluate", "-c", str(config), "--no-progress"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr
    assert f"is in use by pid {holder.pid} on host {socket.gethostname()}" in errors[0]
    assert not (run_dir / "report.md").exists()
    # once the holder is gone the directory is free again
    third = subprocess.run(
        [sys.executable, "-m", "llmrec_gen", "evaluate", "-c", str(config), "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.returncode == 0, third.stderr
    assert (run_dir / "report.md").exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    import signal

    from llmrec_gen.io import directory_lock

    holder = _hold_lock(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with directory_lock(tmp_path / "run"):
        pass
