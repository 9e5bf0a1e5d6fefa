"""The `Dataset`: an item catalog plus per-user chronological item sequences.

Everything is a NumPy array so a dataset round-trips through one `.npz` read with
`allow_pickle=False` (strings are fixed-width unicode arrays, never objects).

Layout (U users, I items, N interactions, A text attributes):
  item_text     [I, A] str    one text value per attribute per item
  item_keys     [I]    str    the raw item id of the source files
  user_keys     [U]    str    the raw user id
  seq_items     [N]    int32  items of user u are seq_items[offsets[u]:offsets[u+1]], oldest first
  offsets       [U+1]  int64
  ratings       [N]    float32, or shape [0] when the source has none
  times         [N]    int64 (unix seconds or an ordinal), or shape [0]
  item_features [I, Fi] float32 (0/1 one-hot for Coat), shape [I, 0] when none
  user_features [U, Fu] float32, shape [U, 0] when none
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from jaxrec.errors import DataError
from jaxrec.io import atomic_savez, one_line, read_npz

CACHE_VERSION = 1
_ARRAY_FIELDS = (
    "item_text", "item_keys", "user_keys", "seq_items", "offsets", "ratings", "times",
    "item_features", "user_features",
)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A recommendation dataset; see the module docstring for shapes."""

  name: str
  scenario: str  # the prompt's {scenario} (platform), e.g. "music streaming", "e-commerce"
  item_noun: str  # the prompt's {item}, e.g. "track", "product", "movie"
  behavior: str  # the prompt's {behavior}, e.g. "listening", "purchase", "rating"
  attribute_names: tuple[str, ...]
  item_text: np.ndarray
  item_keys: np.ndarray
  user_keys: np.ndarray
  seq_items: np.ndarray
  offsets: np.ndarray
  ratings: np.ndarray
  times: np.ndarray
  item_features: np.ndarray
  user_features: np.ndarray
  item_feature_names: tuple[str, ...] = ()
  user_feature_names: tuple[str, ...] = ()

  def __post_init__(self):
    i, u, n = len(self.item_keys), len(self.user_keys), len(self.seq_items)
    # In order, each evaluated only once the ones before it hold (so none can index out of range).
    checks = [
        (lambda: self.item_text.shape == (i, len(self.attribute_names)), "item_text shape"),
        (lambda: self.offsets.shape == (u + 1,), "offsets shape"),
        (lambda: self.offsets[0] == 0 and self.offsets[-1] == n, "offsets bounds"),
        (lambda: bool(np.all(np.diff(self.offsets) >= 0)), "offsets monotone"),
        (lambda: self.ratings.shape in ((0,), (n,)), "ratings shape"),
        (lambda: self.times.shape in ((0,), (n,)), "times shape"),
        (lambda: self.item_features.ndim == 2 and self.item_features.shape[0] == i,
         "item_features"),
        (lambda: self.user_features.ndim == 2 and self.user_features.shape[0] == u,
         "user_features"),
        (lambda: n == 0 or (self.seq_items.min() >= 0 and self.seq_items.max() < i),
         "item ids range"),
        (lambda: self.item_features.shape[1] == len(self.item_feature_names),
         "item_feature_names"),
        (lambda: self.user_features.shape[1] == len(self.user_feature_names),
         "user_feature_names"),
    ]
    for ok, what in checks:
      if not ok():
        raise DataError(f"dataset {self.name!r}: inconsistent arrays ({what})")

  # --- sizes -------------------------------------------------------------------------------
  @property
  def num_users(self) -> int:
    return len(self.user_keys)

  @property
  def num_items(self) -> int:
    return len(self.item_keys)

  @property
  def num_interactions(self) -> int:
    return len(self.seq_items)

  @property
  def has_ratings(self) -> bool:
    return self.ratings.shape[0] > 0

  @property
  def has_times(self) -> bool:
    return self.times.shape[0] > 0

  @property
  def lengths(self) -> np.ndarray:
    """[U] int64 sequence length per user."""
    return np.diff(self.offsets)

  def sequence(self, user: int) -> np.ndarray:
    return self.seq_items[self.offsets[user]:self.offsets[user + 1]]

  def user_of_interaction(self) -> np.ndarray:
    """[N] int32 user index of each interaction."""
    return np.repeat(np.arange(self.num_users, dtype=np.int32), self.lengths)

  def padded(self, max_len: int = 10) -> np.ndarray:
    """[U, max_len] int32: each user's most recent max_len items, oldest first, right-aligned
    with -1 padding on the left (the layout of every history in jaxrec: append = shift left)."""
    if max_len <= 0:
      raise DataError(f"max_len must be positive, got {max_len}")
    out = np.full((self.num_users, max_len), -1, np.int32)
    take = np.minimum(self.lengths, max_len)
    col = np.arange(max_len)
    mask = col[None, :] >= (max_len - take)[:, None]
    idx = self.offsets[1:, None] - max_len + col[None, :]
    out[mask] = self.seq_items[idx[mask]]
    return out

  def item_popularity(self) -> np.ndarray:
    """[I] int64 interaction count per item."""
    return np.bincount(self.seq_items, minlength=self.num_items)

  def stats(self) -> dict:
    """The statistics of paper Table 2."""
    return {
        "dataset": self.name,
        "items": self.num_items,
        "sequences": self.num_users,
        "interactions": self.num_interactions,
        "attributes": "; ".join(self.attribute_names),
    }

  # --- subsets -----------------------------------------------------------------------------
  def select_users(self, users: np.ndarray, name: str | None = None) -> Dataset:
    """A dataset with the given users (in that order) and the same item catalog."""
    users = np.asarray(users, np.int64)
    starts, ends = self.offsets[users], self.offsets[users + 1]
    idx = _ranges(starts, ends)
    return self._with_interactions(idx, np.concatenate([[0], np.cumsum(ends - starts)]),
                                   users, name)

  def _with_interactions(self, idx, offsets, users, name):
    return dataclasses.replace(
        self,
        name=name or self.name,
        user_keys=self.user_keys[users],
        user_features=self.user_features[users],
        seq_items=self.seq_items[idx].astype(np.int32),
        offsets=np.asarray(offsets, np.int64),
        ratings=self.ratings[idx] if self.has_ratings else self.ratings,
        times=self.times[idx] if self.has_times else self.times,
    )

  def mask_interactions(self, keep: np.ndarray, name: str | None = None) -> Dataset:
    """Keep interactions where keep [N] bool is true; users left empty are dropped."""
    # Per-user kept counts by prefix sums (reduceat misbehaves on empty segments).
    cum = np.concatenate([[0], np.cumsum(keep.astype(np.int64))])
    counts = cum[self.offsets[1:]] - cum[self.offsets[:-1]]
    users = np.nonzero(counts > 0)[0]
    idx = np.nonzero(keep)[0]
    offsets = np.concatenate([[0], np.cumsum(counts[users])])
    return self._with_interactions(idx, offsets, users, name)

  # --- cache -------------------------------------------------------------------------------
  def save(self, path: str) -> None:
    """Writes the `.npz` cache atomically (temp file in the same directory + rename)."""
    meta = {
        "cache_version": CACHE_VERSION,
        "name": self.name, "scenario": self.scenario, "item_noun": self.item_noun,
        "behavior": self.behavior,
        "attribute_names": list(self.attribute_names),
        "item_feature_names": list(self.item_feature_names),
        "user_feature_names": list(self.user_feature_names),
    }
    arrays = {f: getattr(self, f) for f in _ARRAY_FIELDS}
    atomic_savez(path, meta=np.array(json.dumps(meta)), **arrays)

  @classmethod
  def load(cls, path: str) -> Dataset:
    """Reads a cache written by `save`; anything else is a one-line DataError naming `path`."""
    bad = "not a jaxrec dataset cache"
    try:
      arrays = read_npz(path, label=bad)
    except FileNotFoundError:
      raise DataError(f"{path}: dataset cache not found") from None
    try:
      meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError, RecursionError) as e:
      raise DataError(f"{path}: {bad} ({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(meta, dict):
      raise DataError(f"{path}: {bad} (meta is not a JSON object)")
    if meta.get("cache_version") != CACHE_VERSION:
      raise DataError(f"{path}: cache version {meta.get('cache_version')!r}, "
                      f"expected {CACHE_VERSION}; rebuild it with jaxrec.data.prepare")
    for key in _META_TEXT:
      if not isinstance(meta.get(key), str):
        raise DataError(f"{path}: {bad} (meta field {key}: expected a string)")
    for key in _META_NAMES:
      if not (isinstance(meta.get(key), list) and all(isinstance(v, str) for v in meta[key])):
        raise DataError(f"{path}: {bad} (meta field {key}: expected a list of strings)")
    for f, (kinds, ndim) in _ARRAY_KINDS.items():
      if f not in arrays:
        raise DataError(f"{path}: {bad} (KeyError: no array {f!r})")
      a = arrays[f]
      if a.dtype.kind not in kinds or a.ndim != ndim:
        raise DataError(f"{path}: {bad} (array {f} is {a.dtype}{list(a.shape)}, expected "
                        f"{ndim}-D of dtype kind {kinds!r})")
    try:
      return cls(**{k: meta[k] for k in _META_TEXT},
                 **{k: tuple(meta[k]) for k in _META_NAMES},
                 **{f: arrays[f] for f in _ARRAY_FIELDS})
    except DataError as e:
      raise DataError(f"{path}: {bad} ({e})") from None


# Cache meta fields (strings, lists of strings) and each array's dtype kinds and rank.
_META_TEXT = ("name", "scenario", "item_noun", "behavior")
_META_NAMES = ("attribute_names", "item_feature_names", "user_feature_names")
_ARRAY_KINDS = {"item_text": ("U", 2), "item_keys": ("U", 1), "user_keys": ("U", 1),
                "seq_items": ("iu", 1), "offsets": ("iu", 1), "ratings": ("f", 1),
                "times": ("iu", 1), "item_features": ("f", 2), "user_features": ("f", 2)}


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
  """Concatenation of arange(s, e) for each pair, vectorised."""
  lengths = ends - starts
  total = int(lengths.sum())
  if total == 0:
    return np.zeros(0, np.int64)
  seg_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
  return np.repeat(starts, lengths) + np.arange(total) - seg_start
