"""absl flags that select and preprocess a dataset; shared by every CLI that reads one."""

from __future__ import annotations

from absl import flags

from jaxrec.data import registry, synthetic
from jaxrec.data.dataset import Dataset

DATASET = flags.DEFINE_string("dataset", "synthetic", f"one of {', '.join(registry.DATASETS)}")
DATA_DIR = flags.DEFINE_string("data_dir", None, "local directory with the dataset's raw files")
MIN_USER = flags.DEFINE_integer("min_user", 3, "drop users with fewer interactions")
MIN_ITEM = flags.DEFINE_integer("min_item", 3, "drop items with fewer interactions")
MAX_SEQ_LEN = flags.DEFINE_integer("max_seq_len", None, "keep each user's most recent N items")
SYN_USERS = flags.DEFINE_integer("synthetic_users", synthetic.SyntheticConfig.num_users,
                                 "synthetic: number of users")
SYN_ITEMS = flags.DEFINE_integer("synthetic_items", synthetic.SyntheticConfig.num_items,
                                 "synthetic: number of items")
SYN_GENRES = flags.DEFINE_integer("synthetic_genres", synthetic.SyntheticConfig.num_genres,
                                  "synthetic: number of item clusters")
SYN_LENGTH = flags.DEFINE_float("synthetic_mean_length", synthetic.SyntheticConfig.mean_length,
                                "synthetic: mean sequence length")
DATA_SEED = flags.DEFINE_integer("data_seed", 0, "seed of the synthetic generator")


def synthetic_config_from_flags() -> synthetic.SyntheticConfig:
  return synthetic.SyntheticConfig(
      num_users=SYN_USERS.value, num_items=SYN_ITEMS.value, num_genres=SYN_GENRES.value,
      mean_length=SYN_LENGTH.value, seed=DATA_SEED.value)


def prep_config_from_flags() -> registry.PrepConfig:
  return registry.PrepConfig(min_user=MIN_USER.value, min_item=MIN_ITEM.value,
                             max_seq_len=MAX_SEQ_LEN.value)


def dataset_from_flags() -> Dataset:
  return registry.load_dataset(DATASET.value, DATA_DIR.value, prep_config_from_flags(),
                               synthetic_config_from_flags())
