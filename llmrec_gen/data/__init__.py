"""Data: datasets in canonical form, loaders, the training view and honest splits.

::

    from llmrec_gen.data import load_dataset, split_dataset
    split = split_dataset(load_dataset("ml-100k"))   # leave-last-out, seeded tie-break
    split.train                                      # TrainData: the only thing fit() sees
"""

from llmrec_gen.data.dataset import (
    CATALOG_COLUMNS,
    GENERIC_DOMAIN,
    INTERACTION_COLUMNS,
    MOVIES_DOMAIN,
    Dataset,
    Domain,
    item_text,
)
from llmrec_gen.data.loaders import BUILTIN_DATASETS, load_dataset, load_recbole
from llmrec_gen.data.splits import Cohorts, Split, SplitConfig, compute_cohorts, split_dataset
from llmrec_gen.data.train_data import TrainData

__all__ = [
    "BUILTIN_DATASETS",
    "CATALOG_COLUMNS",
    "INTERACTION_COLUMNS",
    "Cohorts",
    "Dataset",
    "Domain",
    "GENERIC_DOMAIN",
    "MOVIES_DOMAIN",
    "Split",
    "SplitConfig",
    "TrainData",
    "compute_cohorts",
    "item_text",
    "load_dataset",
    "load_recbole",
    "split_dataset",
]
