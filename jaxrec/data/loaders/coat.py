"""Coat (Schnabel et al., 2016) loader: 290 users' ratings of 300 coats, MNAR then MAR.

Files in data_dir (the unzipped `coat/` folder), ASCII, whitespace-separated numbers, no header:
  train.ascii  290 lines (users) x 300 values (items): 0 = unobserved, 1-5 = rating. The
               ratings users gave to coats they picked themselves (missing not at random).
  test.ascii   the same shape: ratings of coats shown to each user at random (missing at random).
  user_item_features/item_features.ascii    300 lines (items) x Fi values, each 0 or 1
  user_item_features/item_features_map.txt  Fi lines, the name of each column, `group:value`
                                            (gender:men, jackettype:bomber, color:black,
                                            onfrontpage:yes, ...)
  user_item_features/user_features.ascii    290 lines (users) x Fu values, each 0 or 1
  user_item_features/user_features_map.txt  Fu lines (gender:women, age:20-30, ...)
Values may be written as integers or integral decimals (`4` or `4.0`).

Keys: a user is its 0-based line number in the rating and user-feature files ("0".."289"), an
item its 0-based column in the rating files, which is its line in the item-feature file.
Attributes `jacket type; colour; gender` are the values (text after the colon) of the set columns
of the groups jackettype, color and gender; several set columns are joined with ", ", none is
"unknown". item_features / user_features hold the one-hot matrices as float32, with the map
files' lines as their names. Users and items with no rating in either file are left out.

Coat has no timestamps. A user's sequence is their train.ascii ratings in item order followed by
their test.ascii ratings in item order; an item rated in both files appears twice. `times` is an
ordinal chosen so every train (MNAR) rating of every user precedes every test (MAR) one: a train
rating's time is its position within the user's train part, a test rating's time is the largest
train-part length over all users plus its position within the test part. On the real data (24
MNAR + 16 MAR ratings per user) `split_chronological(ds, train_frac=0.6)` therefore gives back
exactly the original train/test files. Ratings are kept.
"""

from __future__ import annotations

import os

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.interactions import from_interactions
from jaxrec.data.loaders._common import (UNKNOWN, find_file, iter_lines, require_dir, to_float)
from jaxrec.errors import DataError

NUM_USERS = 290
NUM_ITEMS = 300
FEATURE_DIR = "user_item_features"
ATTRIBUTES = ("jacket type", "colour", "gender")
ATTRIBUTE_GROUPS = ("jackettype", "color", "gender")  # feature-map group of each attribute


def load(data_dir: str) -> Dataset:
  """Reads the Coat files in data_dir into the raw (unfiltered) Dataset."""
  require_dir(data_dir, "coat")
  feature_dir = os.path.join(data_dir, FEATURE_DIR)
  paths = [find_file(data_dir, "train.ascii"), find_file(data_dir, "test.ascii")] + [
      find_file(feature_dir, name) for name in (
          "item_features.ascii", "item_features_map.txt",
          "user_features.ascii", "user_features_map.txt")]
  train_path, test_path, item_path, item_map_path, user_path, user_map_path = paths
  ratings = tuple(range(6))
  train = _read_matrix(train_path, NUM_USERS, NUM_ITEMS, "user", "item", ratings, "a rating 0-5")
  test = _read_matrix(test_path, NUM_USERS, NUM_ITEMS, "user", "item", ratings, "a rating 0-5")
  item_names = _read_names(item_map_path)
  user_names = _read_names(user_map_path)
  onehot = (0, 1)
  item_feat = _read_matrix(item_path, NUM_ITEMS, len(item_names), "item", "feature", onehot,
                           "0 or 1")
  user_feat = _read_matrix(user_path, NUM_USERS, len(user_names), "user", "feature", onehot,
                           "0 or 1")

  # Row-major nonzero walks each user's items in id order: train part, then test part.
  tr_user, tr_item = np.nonzero(train)
  te_user, te_item = np.nonzero(test)
  tr_counts = np.bincount(tr_user, minlength=NUM_USERS)
  te_counts = np.bincount(te_user, minlength=NUM_USERS)
  tr_pos = np.arange(len(tr_user)) - np.repeat(np.cumsum(tr_counts) - tr_counts, tr_counts)
  te_pos = np.arange(len(te_user)) - np.repeat(np.cumsum(te_counts) - te_counts, te_counts)
  times = np.concatenate([tr_pos, tr_counts.max() + te_pos])
  users = np.concatenate([tr_user, te_user])
  items = np.concatenate([tr_item, te_item])
  values = np.concatenate([train[tr_user, tr_item], test[te_user, te_item]])

  item_text = {str(i): _attributes(item_feat[i], item_names) for i in range(NUM_ITEMS)}
  return from_interactions(
      "coat", scenario="online fashion", item_noun="coat", behavior="rating",
      attribute_names=ATTRIBUTES, users=users, items=items, item_text=item_text,
      times=times, ratings=values,
      item_features=({str(i): item_feat[i] for i in range(NUM_ITEMS)}, item_names),
      user_features=({str(u): user_feat[u] for u in range(NUM_USERS)}, user_names),
      source=f"{train_path} + {test_path}")


def _attributes(row: np.ndarray, names: tuple[str, ...]) -> tuple[str, ...]:
  """The text of each attribute group from one item's one-hot row."""
  values: dict[str, list[str]] = {g: [] for g in ATTRIBUTE_GROUPS}
  for name in np.asarray(names)[row > 0]:
    group, _, value = name.partition(":")
    if group in values:
      values[group].append(value.strip() or UNKNOWN)
  return tuple(", ".join(values[g]) or UNKNOWN for g in ATTRIBUTE_GROUPS)


def _read_names(path: str) -> tuple[str, ...]:
  names = tuple(line.strip() for _, line in iter_lines(path, "utf-8"))
  if not names:
    raise DataError(f"{path}: no feature names (expected one name per line)")
  return names


def _read_matrix(path: str, rows: int, cols: int, row_noun: str, col_noun: str,
                 allowed: tuple[int, ...], allowed_text: str) -> np.ndarray:
  """A [rows, cols] int64 matrix; every value must be in `allowed`."""
  out: list[np.ndarray] = []
  found, first_extra, last = 0, 0, 0
  for last, line in iter_lines(path, "ascii"):
    found += 1
    if found > rows:  # only counted, for the error below
      first_extra = first_extra or last
      continue
    fields = line.split()
    if len(fields) != cols:
      raise DataError(f"{path}:{last}: expected {cols} space-separated values (one per "
                      f"{col_noun}), got {len(fields)}")
    try:
      row = np.array(fields).astype(np.float64)
    except ValueError:
      row = np.array([to_float(path, last, f"column {j + 1} ({col_noun} {j})", v)
                      for j, v in enumerate(fields)])
    bad = np.nonzero(~np.isin(row, allowed))[0]
    if len(bad):
      j = int(bad[0])
      raise DataError(f"{path}:{last}: field column {j + 1} ({col_noun} {j}): expected "
                      f"{allowed_text}, got {fields[j]!r}")
    out.append(row.astype(np.int64))
  if found != rows:
    raise DataError(f"{path}:{first_extra or last + 1}: expected {rows} lines (one per "
                    f"{row_noun}), found {found}")
  return np.stack(out)
