"""Raw recommendation data -> `Dataset` (item catalog + per-user sequences), splits, cache."""

from jaxrec.data.dataset import Dataset
from jaxrec.data.interactions import from_interactions
from jaxrec.data.preprocess import (filter_min_counts, split, split_by_user,
                                    split_chronological, truncate)
from jaxrec.data.registry import DATASETS, PrepConfig, load_dataset, load_raw
from jaxrec.data.synthetic import SyntheticConfig

__all__ = [
    "DATASETS", "Dataset", "PrepConfig", "SyntheticConfig", "filter_min_counts",
    "from_interactions", "load_dataset", "load_raw", "split", "split_by_user",
    "split_chronological", "truncate",
]
