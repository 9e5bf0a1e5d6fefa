"""`from_interactions`: raw (user, item, time) triples -> a Dataset (ids indexed in their natural
order, each user's items sorted by time). Every loader ends here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError


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
