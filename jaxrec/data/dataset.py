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
from collections.abc import Sequence

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


def from_interactions(
    name: str,
    scenario: str,
    item_noun: str,
    behavior: str,
    attribute_names: Sequence[str],
    users: Sequence[str] | Sequence[int] | np.ndarray,
    items: Sequence[str] | Sequence[int] | np.ndarray,
    item_text: dict[str, Sequence[str]],
    times: np.ndarray | Sequence[float] | None = None,
    ratings: np.ndarray | None = None,
    item_features: tuple[dict[str, np.ndarray], Sequence[str]] | None = None,
    user_features: tuple[dict[str, np.ndarray], Sequence[str]] | None = None,
    source: str = "",
) -> Dataset:
  """Builds a Dataset from raw interaction triples, sorted per user by time.

  Raw ids become `user_keys` / `item_keys` as strings, and index i is the i-th smallest raw id:
  numerically when every id of that kind is an integer (an integer array, or strings that are
  all canonical decimal integers such as "-3", "10"; so "2" comes before "10"), otherwise
  lexicographically by string (one non-canonical id such as "007" or "a1" makes it so).
  Integer ids are de-duplicated as integers and only the unique ones become strings, which keeps
  multi-million-event loads fast. `item_text` and the feature tables are looked up by the same
  key string, str(raw id) for integers.

  Args:
    name, scenario, item_noun, behavior, attribute_names: copied onto the Dataset.
    users, items: [N] raw ids of each interaction: integers or strings.
    item_text: item key -> one text value per attribute. Items without text get "unknown".
    times: [N] timestamps (integers or floats); None keeps the input order within a user.
      Sequences are ordered by the exact values given, ties in input order. Integral values
      (e.g. 1.6e9 as a float) are stored as int64 as they are. Values with a fractional part
      are stored as their dense rank over the whole dataset (0 = earliest, equal times share a
      rank): an ordinal that keeps the global order exactly, so the chronological split stays
      right, where int64 seconds would silently merge and reorder sub-second events. NaN or
      infinite times raise DataError.
    ratings: [N] float or None.
    item_features / user_features: (key -> [F] vector, feature names) or None.
    source: what the interactions were read from, for error messages (default: name).

  Raises:
    DataError: no interactions, per-interaction arrays of different lengths, unusable times, or
      item_text values that do not hold one string per attribute.
  """
  where = source or name
  n = len(users)
  if n == 0:
    raise DataError(f"{where}: no interactions")
  user_keys, user_idx = _index_ids(users, "users", where)
  item_keys, item_idx = _index_ids(items, "items", where)
  if len(item_idx) != n:
    raise DataError(f"{where}: {n} users but {len(item_idx)} items; expected one per interaction")
  if ratings is not None and np.shape(ratings) != (n,):
    raise DataError(f"{where}: ratings has shape {np.shape(ratings)}, expected ({n},)")
  stored_times = None if times is None else _int_times(times, n, where)
  order = _user_time_order(user_idx, len(user_keys), stored_times)
  counts = np.bincount(user_idx, minlength=len(user_keys))
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  a = len(attribute_names)
  unknown = ("unknown",) * a
  try:
    text = np.array([item_text.get(k, unknown) for k in item_keys.tolist()], dtype=str)
  except ValueError:  # ragged rows
    text = None
  if text is None or text.shape != (len(item_keys), a):
    raise DataError(f"{where}: every item_text value must hold {a} strings "
                    f"({', '.join(attribute_names)})")

  def feats(spec, keys):
    if spec is None:
      return np.zeros((len(keys), 0), np.float32), ()
    table, names = spec
    out = np.zeros((len(keys), len(names)), np.float32)
    for row, k in enumerate(keys.tolist()):
      if k in table:
        out[row] = table[k]
    return out, tuple(names)

  ifeat, ifeat_names = feats(item_features, item_keys)
  ufeat, ufeat_names = feats(user_features, user_keys)
  return Dataset(
      name=name, scenario=scenario, item_noun=item_noun, behavior=behavior,
      attribute_names=tuple(attribute_names),
      item_text=text, item_keys=item_keys, user_keys=user_keys,
      seq_items=item_idx[order].astype(np.int32), offsets=offsets,
      ratings=(np.zeros(0, np.float32) if ratings is None
               else np.asarray(ratings, np.float32)[order]),
      times=np.zeros(0, np.int64) if stored_times is None else stored_times[order],
      item_features=ifeat, user_features=ufeat,
      item_feature_names=ifeat_names, user_feature_names=ufeat_names)


def _index_ids(raw, what: str, where: str) -> tuple[np.ndarray, np.ndarray]:
  """([K] str sorted unique keys, [N] int64 index of each raw id into them).

  Integer ids sort numerically, anything else as strings; see `from_interactions`.
  """
  ids = np.asarray(raw)
  if ids.ndim != 1:
    raise DataError(f"{where}: {what} must be a flat list of ids, got shape {ids.shape}")
  if ids.dtype.kind not in "iu":
    ids = ids.astype(str, copy=False)
    values = _canonical_ints(ids)
    if values is None:
      return np.unique(ids, return_inverse=True)
    ids = values
  uniq, inverse = np.unique(ids, return_inverse=True)
  keys = uniq.astype(str)  # "<U21" for int64: narrow it, the cache stores it fixed-width
  return keys.astype(f"<U{max(1, int(np.char.str_len(keys).max()))}"), inverse


def _canonical_ints(ids: np.ndarray) -> np.ndarray | None:
  """[N] int64 values of unicode ids if every one is written as str(int) writes it, else None.

  int() also accepts "007", "+7", " 7" and non-ASCII digits; those are distinct raw keys that
  would collapse into one, so they keep the string path. Parsed column by column on the UCS-4
  code points: int() per element costs more than the np.unique it is meant to save.
  """
  n = len(ids)
  codes = np.ascontiguousarray(ids).view(np.uint32).reshape(n, ids.dtype.itemsize // 4)
  used = np.nonzero(codes.any(axis=0))[0]  # the dtype may be wider than every id in it
  width = int(used[-1]) + 1 if len(used) else 0
  if width == 0:
    return None
  if width > 18:  # 10**18 < 2**63: narrower ids cannot overflow int64 below
    try:
      values = ids.astype(np.int64)
    except (ValueError, OverflowError):
      return None
    return values if np.array_equal(values.astype(str), ids) else None
  codes = codes[:, :width]
  present = codes != 0  # unicode arrays pad with NUL on the right
  neg = codes[:, 0] == ord("-")
  digit = codes - np.uint32(ord("0"))  # code points below "0" wrap round to > 9
  is_digit = present & (digit <= 9)
  num_digits = is_digit.sum(axis=1)
  first = digit[np.arange(n), np.minimum(neg, width - 1)]  # the first digit, if any
  if not (np.all(num_digits + neg == present.sum(axis=1))  # nothing but "-" and digits
          and np.all(num_digits >= 1)
          and np.all(present[:, 1:] <= present[:, :-1])  # NUL only as padding
          and not np.any((first == 0) & (neg | (num_digits > 1)))):  # "-0", "07"
    return None
  value = np.zeros(n, np.int64)
  for col in range(width):
    value = np.where(is_digit[:, col], value * 10 + digit[:, col], value)
  return np.where(neg, -value, value)


def _int_times(times, n: int, where: str) -> np.ndarray:
  """[N] int64 times ordered exactly like the given ones; see `from_interactions`."""
  t = np.asarray(times)
  if t.shape != (n,):
    raise DataError(f"{where}: times has shape {t.shape}, expected ({n},), one per interaction")
  if t.dtype.kind in "iu":
    return t.astype(np.int64)
  if t.dtype.kind != "f":
    try:
      return t.astype(np.int64)
    except (ValueError, TypeError, OverflowError):
      pass
    try:
      t = t.astype(np.float64)
    except (ValueError, TypeError, OverflowError):
      raise DataError(f"{where}: times must be numbers, got dtype {t.dtype}") from None
  if not np.all(np.isfinite(t)):
    bad = int(np.nonzero(~np.isfinite(t))[0][0])
    raise DataError(f"{where}: interaction {bad} has time {t[bad]}, expected a finite number")
  if np.all(t == np.floor(t)) and np.all(np.abs(t) < 2.0**63):
    return t.astype(np.int64)
  return np.unique(t, return_inverse=True)[1].astype(np.int64)


def _user_time_order(user_idx: np.ndarray, num_users: int,
                     times: np.ndarray | None) -> np.ndarray:
  """[N] permutation sorting by (user, time), ties in input order."""
  if times is None:
    return np.argsort(user_idx, kind="stable")
  t_min = int(times.min())
  span = int(times.max()) - t_min + 1
  # One stable sort of a combined int64 key is about 3x faster than np.lexsort on two keys;
  # fall back to two stable passes when the key would overflow.
  if num_users * span < 2**62:
    return np.argsort(user_idx * span + (times - t_min), kind="stable")
  by_time = np.argsort(times, kind="stable")
  return by_time[np.argsort(user_idx[by_time], kind="stable")]
