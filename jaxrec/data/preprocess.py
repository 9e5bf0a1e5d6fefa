"""The paper's preprocessing (k-core filtering, contiguous re-indexing) and the two splits."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError


def filter_min_counts(ds: Dataset, min_user: int = 3, min_item: int = 3) -> Dataset:
  """Drops users and items with fewer interactions, repeatedly until both hold (k-core).

  Items are re-indexed contiguously in their previous order; users keep their order.
  Raises DataError when nothing is left.
  """
  if min_user < 1 or min_item < 1:
    raise DataError(f"min counts must be >= 1, got min_user={min_user} min_item={min_item}")
  keep_item = np.ones(ds.num_items, bool)
  cur = ds
  while True:
    item_ok = np.bincount(cur.seq_items, minlength=ds.num_items) >= min_item
    keep_item &= item_ok
    mask = keep_item[cur.seq_items]
    if mask.all() and np.all(cur.lengths >= min_user):
      break
    cur = cur.mask_interactions(mask)
    long_users = np.nonzero(cur.lengths >= min_user)[0]
    cur = cur.select_users(long_users)
    if cur.num_interactions == 0:
      raise DataError(f"dataset {ds.name!r}: empty after filtering users < {min_user} and "
                      f"items < {min_item} interactions")
  return reindex_items(cur, keep_item & (np.bincount(cur.seq_items, minlength=ds.num_items) > 0))


def reindex_items(ds: Dataset, keep: np.ndarray) -> Dataset:
  """Keeps the items where keep [I] is true, renumbered 0..I'-1; every kept interaction must
  refer to a kept item."""
  new_id = np.full(ds.num_items, -1, np.int64)
  new_id[keep] = np.arange(int(keep.sum()))
  seq = new_id[ds.seq_items]
  assert (seq >= 0).all(), "reindex_items: an interaction refers to a dropped item"
  return dataclasses.replace(
      ds, item_keys=ds.item_keys[keep], item_text=ds.item_text[keep],
      item_features=ds.item_features[keep], seq_items=seq.astype(np.int32))


def truncate(ds: Dataset, max_len: int) -> Dataset:
  """Keeps the most recent max_len interactions of each user."""
  if max_len <= 0:
    raise DataError(f"max_len must be positive, got {max_len}")
  rank_from_end = np.repeat(ds.offsets[1:], ds.lengths) - np.arange(ds.num_interactions)
  return ds.mask_interactions(rank_from_end <= max_len)


def split_by_user(ds: Dataset, train_frac: float = 0.8, seed: int = 0) -> tuple[Dataset, Dataset]:
  """Random user split (the core paper's 80/20): whole sequences go to one side."""
  if not 0.0 < train_frac < 1.0:
    raise DataError(f"train_frac must be in (0, 1), got {train_frac}")
  if ds.num_users < 2:
    raise DataError(f"dataset {ds.name!r}: needs >= 2 users to split, has {ds.num_users}")
  perm = np.random.default_rng(seed).permutation(ds.num_users)
  n_train = min(max(1, int(round(train_frac * ds.num_users))), ds.num_users - 1)
  train_users, test_users = np.sort(perm[:n_train]), np.sort(perm[n_train:])
  return (ds.select_users(train_users, f"{ds.name}-train"),
          ds.select_users(test_users, f"{ds.name}-test"))


def split_chronological(ds: Dataset, train_frac: float = 0.5) -> tuple[Dataset, Dataset]:
  """BiLLP's chronological split: the earliest train_frac of all interactions go to train.

  With times, the round(train_frac * N) earliest interactions of the whole dataset are train
  (ties in dataset order: by user, then position), so every train time is <= every test time.
  A user can appear on both sides; a side keeps only the users with interactions on it.

  Datasets without times fall back to a positional split of every sequence: the first
  np.round(train_frac * length) items of each user are train, the rest test (there is no common
  clock, so users are not aligned with one another).

  Coat has times: its loader numbers each user's train.ascii ratings before all of its
  test.ascii ratings (ordinals, not dates), so this is the chronological branch, and
  train_frac=0.6 (Coat's 24 self-selected of 40 ratings per user) reproduces the original
  MNAR train / MAR test partition.

  Raises:
    DataError: train_frac outside (0, 1), or a side left empty.
  """
  if not 0.0 < train_frac < 1.0:
    raise DataError(f"train_frac must be in (0, 1), got {train_frac}")
  if ds.has_times:
    order = np.argsort(ds.times, kind="stable")
    n_train = int(round(train_frac * ds.num_interactions))
    is_train = np.zeros(ds.num_interactions, bool)
    is_train[order[:n_train]] = True
  else:
    pos = np.arange(ds.num_interactions) - np.repeat(ds.offsets[:-1], ds.lengths)
    is_train = pos < np.repeat(np.round(train_frac * ds.lengths), ds.lengths)
  train = ds.mask_interactions(is_train, f"{ds.name}-train")
  test = ds.mask_interactions(~is_train, f"{ds.name}-test")
  if train.num_interactions == 0 or test.num_interactions == 0:
    side = "train" if train.num_interactions == 0 else "test"
    raise DataError(f"dataset {ds.name!r}: the chronological split (--split=chrono) at "
                    f"--train_frac={train_frac:g} leaves the {side} side with no positions")
  return train, test


SPLITS = {"user": split_by_user, "chrono": split_chronological}


def split(ds: Dataset, kind: str, train_frac: float | None = None, seed: int = 0):
  """kind="user" (80/20 by user, default frac 0.8) or "chrono" (50/50 by time)."""
  if kind == "user":
    return split_by_user(ds, 0.8 if train_frac is None else train_frac, seed)
  if kind == "chrono":
    return split_chronological(ds, 0.5 if train_frac is None else train_frac)
  raise DataError(f"unknown split {kind!r}; expected one of {sorted(SPLITS)}")
