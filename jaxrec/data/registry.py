"""Dataset names -> loaders, and the one function the rest of jaxrec calls: `load_dataset`."""

from __future__ import annotations

import dataclasses
import importlib

from jaxrec.data import preprocess, synthetic
from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError

# name -> "module:function"; each function takes (data_dir) and returns the raw Dataset.
LOADERS = {
    "lastfm": "jaxrec.data.loaders.lastfm:load",
    "amazon": "jaxrec.data.loaders.amazon:load",
    "coat": "jaxrec.data.loaders.coat:load",
    "movielens": "jaxrec.data.loaders.movielens:load",
    "kuairec": "jaxrec.data.loaders.kuairec:load",
    "kuairec_big": "jaxrec.data.loaders.kuairec:load_big",
    "kuairand": "jaxrec.data.loaders.kuairand:load",
}
DATASETS = ("synthetic",) + tuple(LOADERS)


@dataclasses.dataclass(frozen=True)
class PrepConfig:
  """The paper's preprocessing options."""
  min_user: int = 3
  min_item: int = 3
  max_seq_len: int | None = None  # keep the most recent interactions of longer users


def load_raw(name: str, data_dir: str | None = None,
             synthetic_cfg: synthetic.SyntheticConfig | None = None) -> Dataset:
  if name == "synthetic":
    return synthetic.generate(synthetic_cfg or synthetic.SyntheticConfig())
  if name not in LOADERS:
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
  if not data_dir:
    raise DataError(f"dataset {name!r} needs --data_dir (a local directory with its files)")
  module, fn = LOADERS[name].split(":")
  return getattr(importlib.import_module(module), fn)(data_dir)


def load_dataset(name: str, data_dir: str | None = None, prep: PrepConfig = PrepConfig(),
                 synthetic_cfg: synthetic.SyntheticConfig | None = None) -> Dataset:
  """Loads a dataset by name and applies the preprocessing (k-core filter, re-index, cut)."""
  ds = load_raw(name, data_dir, synthetic_cfg)
  ds = preprocess.filter_min_counts(ds, prep.min_user, prep.min_item)
  if prep.max_seq_len is not None:
    ds = preprocess.truncate(ds, prep.max_seq_len)
  return ds
