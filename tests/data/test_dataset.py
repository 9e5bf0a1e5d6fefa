"""Dataset invariants, subsets, preprocessing, splits, the npz cache and `from_interactions`,
on hand-made datasets whose expected arrays are spelled out."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from jaxrec.data import (Dataset, filter_min_counts, from_interactions, split_by_user,
                         split_chronological, truncate)
from jaxrec.data.dataset import CACHE_VERSION
from jaxrec.errors import DataError

ARRAY_FIELDS = ("item_text", "item_keys", "user_keys", "seq_items", "offsets", "ratings", "times",
                "item_features", "user_features")


def make_ds(seqs: list[list[int]], num_items: int, times: list[list[int]] | None = None,
            name: str = "toy") -> Dataset:
  """Users u0.. with the given item sequences; item k is "i{k}" with text ("t{k}", "g{k % 2}")
  and one feature equal to k; the rating of an interaction is 10 * user + position."""
  lengths = [len(s) for s in seqs]
  return Dataset(
      name=name, scenario="test", item_noun="thing", behavior="use",
      attribute_names=("title", "genre"),
      item_text=np.array([(f"t{k}", f"g{k % 2}") for k in range(num_items)], dtype=str),
      item_keys=np.array([f"i{k}" for k in range(num_items)]),
      user_keys=np.array([f"u{u}" for u in range(len(seqs))]),
      seq_items=np.array([i for s in seqs for i in s], np.int32),
      offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      ratings=np.array([10 * u + p for u, n in enumerate(lengths) for p in range(n)], np.float32),
      times=(np.zeros(0, np.int64) if times is None
             else np.array([t for ts in times for t in ts], np.int64)),
      item_features=np.arange(num_items, dtype=np.float32)[:, None],
      user_features=np.zeros((len(seqs), 0), np.float32),
      item_feature_names=("id",))


# Lengths 5, 1, 2; times interleave across users.
SEQS = [[0, 1, 2, 3, 4], [5], [6, 7]]
TIMES = [[10, 20, 30, 40, 50], [25], [5, 45]]


@pytest.fixture
def ds() -> Dataset:
  return make_ds(SEQS, 8, TIMES)


def by_user(d: Dataset) -> dict[str, list[str]]:
  """user key -> item keys of its sequence: comparable across re-indexing and subsets."""
  return {k: d.item_keys[d.sequence(u)].tolist() for u, k in enumerate(d.user_keys.tolist())}


def assert_same_catalog(a: Dataset, b: Dataset) -> None:
  for f in ("item_keys", "item_text", "item_features"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


# --- invariants -------------------------------------------------------------------------------
@pytest.mark.parametrize("what, change", [
    ("item_text shape", lambda d: {"item_text": d.item_text[:, :1]}),
    ("offsets shape", lambda d: {"offsets": d.offsets[:-1]}),
    ("offsets bounds", lambda d: {"offsets": d.offsets - np.array([0, 0, 0, 1])}),
    ("offsets monotone", lambda d: {"offsets": np.array([0, 6, 5, 8])}),
    ("ratings shape", lambda d: {"ratings": d.ratings[:-1]}),
    ("times shape", lambda d: {"times": d.times[:3]}),
    ("item_features", lambda d: {"item_features": d.item_features[:-1]}),
    ("user_features", lambda d: {"user_features": np.zeros((2, 0), np.float32)}),
    ("item ids range", lambda d: {"seq_items": np.where(d.seq_items == 7, 8, d.seq_items)}),
    ("item ids range", lambda d: {"seq_items": np.where(d.seq_items == 0, -1, d.seq_items)}),
    ("item_feature_names", lambda d: {"item_feature_names": ()}),
    ("user_feature_names", lambda d: {"user_feature_names": ("age",)}),
])
def test_inconsistent_arrays_raise(ds, what, change):
  with pytest.raises(DataError, match=rf"dataset 'toy': inconsistent arrays \({what}\)"):
    dataclasses.replace(ds, **change(ds))


def test_sizes_and_helpers(ds):
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (3, 8, 8)
  assert ds.has_ratings and ds.has_times
  np.testing.assert_array_equal(ds.lengths, [5, 1, 2])
  np.testing.assert_array_equal(ds.user_of_interaction(), [0, 0, 0, 0, 0, 1, 2, 2])
  np.testing.assert_array_equal(ds.sequence(2), [6, 7])
  np.testing.assert_array_equal(ds.item_popularity(), np.ones(8))


# --- padded -----------------------------------------------------------------------------------
def test_padded_right_aligned_keeps_most_recent(ds):
  out = ds.padded(3)
  assert out.dtype == np.int32
  np.testing.assert_array_equal(out, [[2, 3, 4], [-1, -1, 5], [-1, 6, 7]])
  np.testing.assert_array_equal(ds.padded(6), [[-1, 0, 1, 2, 3, 4], [-1, -1, -1, -1, -1, 5],
                                               [-1, -1, -1, -1, 6, 7]])
  np.testing.assert_array_equal(ds.padded(1), [[4], [5], [7]])
  with pytest.raises(DataError, match="max_len must be positive, got 0"):
    ds.padded(0)


# --- subsets ----------------------------------------------------------------------------------
def test_select_users_in_given_order(ds):
  sub = ds.select_users(np.array([2, 0]), name="sub")
  assert sub.name == "sub" and ds.select_users(np.array([1])).name == "toy"
  assert sub.user_keys.tolist() == ["u2", "u0"]
  np.testing.assert_array_equal(sub.offsets, [0, 2, 7])
  np.testing.assert_array_equal(sub.seq_items, [6, 7, 0, 1, 2, 3, 4])
  np.testing.assert_array_equal(sub.times, [5, 45, 10, 20, 30, 40, 50])
  np.testing.assert_array_equal(sub.ratings, [20, 21, 0, 1, 2, 3, 4])
  assert sub.seq_items.dtype == np.int32 and sub.offsets.dtype == np.int64
  assert_same_catalog(sub, ds)


def test_mask_interactions_drops_empty_users(ds):
  keep = np.array([1, 0, 1, 0, 0, 0, 0, 1], bool)  # u1 loses its only interaction
  sub = ds.mask_interactions(keep, "masked")
  assert sub.name == "masked" and sub.user_keys.tolist() == ["u0", "u2"]
  np.testing.assert_array_equal(sub.offsets, [0, 2, 3])
  np.testing.assert_array_equal(sub.seq_items, [0, 2, 7])
  np.testing.assert_array_equal(sub.times, [10, 30, 45])
  np.testing.assert_array_equal(sub.ratings, [0, 2, 21])
  assert_same_catalog(sub, ds)
  everything = ds.mask_interactions(np.ones(8, bool))
  np.testing.assert_array_equal(everything.offsets, ds.offsets)
  nothing = ds.mask_interactions(np.zeros(8, bool))
  assert (nothing.num_users, nothing.num_interactions) == (0, 0)


# --- k-core filter ----------------------------------------------------------------------------
# min 2 each. Items A=3, B=1, C=0, D=4, E=2. Round 1 drops E (1 interaction), which leaves u3
# with [D] (1 < 2): u3 goes. That leaves D once: round 2 drops D, then u2 with [C]. Round 3
# drops C (only u0 left with it). Survivors: u0 [A, B], u1 [B, A]; items 1 (B) and 3 (A).
A, B, C, D, E = 3, 1, 0, 4, 2
KCORE = [[A, B, C], [B, A], [C, D], [D, E]]


def test_filter_min_counts_is_iterative_k_core():
  raw = make_ds(KCORE, 5)
  out = filter_min_counts(raw, min_user=2, min_item=2)
  assert out.user_keys.tolist() == ["u0", "u1"]
  assert out.item_keys.tolist() == ["i1", "i3"]  # contiguous, in the previous order
  np.testing.assert_array_equal(out.seq_items, [1, 0, 0, 1])
  np.testing.assert_array_equal(out.offsets, [0, 2, 4])
  np.testing.assert_array_equal(out.ratings, [0, 1, 10, 11])
  # Text and features move with their items.
  np.testing.assert_array_equal(out.item_text, [["t1", "g1"], ["t3", "g1"]])
  np.testing.assert_array_equal(out.item_features[:, 0], [1, 3])
  assert by_user(out) == {"u0": ["i3", "i1"], "u1": ["i1", "i3"]}


def test_filter_min_counts_keeps_a_k_core_as_is():
  raw = make_ds([[0, 1], [1, 0], [0, 1]], 2)
  out = filter_min_counts(raw, min_user=2, min_item=3)
  for f in ARRAY_FIELDS:
    np.testing.assert_array_equal(getattr(out, f), getattr(raw, f))


def test_filter_min_counts_drops_unused_items_and_errors():
  raw = make_ds([[0, 2], [2, 0]], 4)  # items 1 and 3 are never used
  assert filter_min_counts(raw, 1, 1).item_keys.tolist() == ["i0", "i2"]
  with pytest.raises(DataError) as e:
    filter_min_counts(make_ds(KCORE, 5), min_user=3, min_item=3)
  msg = str(e.value)
  assert "\n" not in msg and "'toy'" in msg and "empty after filtering" in msg
  with pytest.raises(DataError, match="min counts must be >= 1"):
    filter_min_counts(raw, 0, 1)


def test_truncate_keeps_the_most_recent(ds):
  out = truncate(ds, 2)
  np.testing.assert_array_equal(out.offsets, [0, 2, 3, 5])
  np.testing.assert_array_equal(out.seq_items, [3, 4, 5, 6, 7])
  np.testing.assert_array_equal(out.times, [40, 50, 25, 5, 45])
  np.testing.assert_array_equal(truncate(ds, 5).seq_items, ds.seq_items)
  with pytest.raises(DataError, match="max_len must be positive"):
    truncate(ds, 0)


# --- splits -----------------------------------------------------------------------------------
@pytest.fixture
def fifty() -> Dataset:
  rng = np.random.default_rng(0)
  return make_ds([rng.integers(0, 30, size=rng.integers(1, 6)).tolist() for _ in range(50)], 30)


def test_split_by_user(fifty):
  train, test = split_by_user(fifty, 0.8, seed=0)
  assert (train.num_users, test.num_users) == (40, 10)
  assert (train.name, test.name) == ("toy-train", "toy-test")
  tr, te = set(train.user_keys.tolist()), set(test.user_keys.tolist())
  assert not tr & te and tr | te == set(fifty.user_keys.tolist())
  full = by_user(fifty)
  assert by_user(train) | by_user(test) == full  # whole sequences, unchanged
  assert_same_catalog(train, fifty)
  assert_same_catalog(test, fifty)
  again, _ = split_by_user(fifty, 0.8, seed=0)
  np.testing.assert_array_equal(again.user_keys, train.user_keys)
  other, _ = split_by_user(fifty, 0.8, seed=1)
  assert set(other.user_keys.tolist()) != tr
  assert split_by_user(fifty, 0.999)[1].num_users == 1  # never an empty side
  with pytest.raises(DataError, match="train_frac must be in"):
    split_by_user(fifty, 1.0)
  with pytest.raises(DataError, match="needs >= 2 users"):
    split_by_user(fifty.select_users(np.array([0])))


def test_split_chronological_by_time(ds):
  # Times in order: u2@5 u0@10 u0@20 u1@25 u0@30 | u0@40 u2@45 u0@50.
  train, test = split_chronological(ds, 5 / 8)
  assert train.num_interactions == 5 and test.num_interactions == 3
  assert train.times.max() <= test.times.min()
  assert by_user(train) == {"u0": ["i0", "i1", "i2"], "u1": ["i5"], "u2": ["i6"]}
  assert by_user(test) == {"u0": ["i3", "i4"], "u2": ["i7"]}
  assert_same_catalog(train, ds)
  with pytest.raises(DataError, match=r"--split=chrono\) at --train_frac=0.01 leaves the train "
                     "side with no positions"):
    split_chronological(ds, 0.01)
  with pytest.raises(DataError, match="train_frac must be in"):
    split_chronological(ds, 0.0)


def test_split_chronological_without_times_is_positional():
  ds = make_ds(SEQS, 8)
  assert not ds.has_times
  train, test = split_chronological(ds, 0.5)  # round(2.5) = 2, round(0.5) = 0, round(1) = 1
  assert by_user(train) == {"u0": ["i0", "i1"], "u2": ["i6"]}
  assert by_user(test) == {"u0": ["i2", "i3", "i4"], "u1": ["i5"], "u2": ["i7"]}
  np.testing.assert_array_equal(train.ratings, [0, 1, 20])


# --- cache ------------------------------------------------------------------------------------
def test_cache_round_trip(tmp_path):
  ds = dataclasses.replace(
      make_ds(SEQS, 8, TIMES, name="cached"), item_text=np.array(
          [("Sóng ü", "g0")] + [(f"t{k}", "g") for k in range(1, 8)], dtype=str),
      user_features=np.eye(3, 2, dtype=np.float32), user_feature_names=("a", "b"))
  path = str(tmp_path / "sub" / "ds.npz")
  ds.save(path)
  assert os.listdir(tmp_path / "sub") == ["ds.npz"]
  back = Dataset.load(path)
  for f in dataclasses.fields(Dataset):
    a, b = getattr(ds, f.name), getattr(back, f.name)
    if isinstance(a, np.ndarray):
      assert a.dtype == b.dtype, f.name
      np.testing.assert_array_equal(a, b, err_msg=f.name)
    else:
      assert a == b, f.name
  with np.load(path, allow_pickle=False) as z:
    for f in ("item_text", "item_keys", "user_keys", "meta"):
      assert z[f].dtype.kind == "U", f
    assert json.loads(str(z["meta"]))["cache_version"] == CACHE_VERSION


def _corrupt(path: str, how: str) -> None:
  data = open(path, "rb").read()
  if how == "garbage":
    data = b"this is not an npz file"
  elif how == "empty":
    data = b""
  elif how == "truncated":
    data = data[:len(data) // 2]
  elif how == "flipped byte":
    data = bytearray(data)
    data[len(data) // 2] ^= 0xFF
  with open(path, "wb") as f:
    f.write(data)


@pytest.mark.parametrize("how", ["garbage", "empty", "truncated", "flipped byte"])
def test_corrupt_cache_is_a_data_error_naming_the_path(ds, tmp_path, how):
  path = str(tmp_path / "ds.npz")
  ds.save(path)
  _corrupt(path, how)
  with pytest.raises(DataError) as e:
    Dataset.load(path)
  assert str(e.value).startswith(f"{path}: not a jaxrec dataset cache")
  assert "\n" not in str(e.value)


def test_missing_or_other_version_cache(ds, tmp_path):
  path = str(tmp_path / "ds.npz")
  with pytest.raises(DataError, match=f"^{path}: dataset cache not found$"):
    Dataset.load(path)
  ds.save(path)
  with np.load(path) as z:
    arrays = dict(z)
  meta = json.loads(str(arrays.pop("meta")))
  np.savez(path, meta=np.array(json.dumps(meta | {"cache_version": CACHE_VERSION + 1})),
           **arrays)
  with pytest.raises(DataError, match=f"^{path}: cache version {CACHE_VERSION + 1}, expected "
                     f"{CACHE_VERSION}; rebuild it"):
    Dataset.load(path)
  del arrays["times"]
  np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
  with pytest.raises(DataError, match=f"^{path}: not a jaxrec dataset cache \\(KeyError"):
    Dataset.load(path)


def test_failed_save_leaves_the_old_file_and_no_temp_file(ds, tmp_path, monkeypatch):
  path = tmp_path / "ds.npz"
  path.write_bytes(b"previous cache")

  def broken_savez(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", broken_savez)
  with pytest.raises(OSError, match="disk full"):
    ds.save(str(path))
  assert os.listdir(tmp_path) == ["ds.npz"]
  assert path.read_bytes() == b"previous cache"


# --- from_interactions ------------------------------------------------------------------------
def build(users, items, times=None, ratings=None, item_text=None, **kwargs) -> Dataset:
  return from_interactions(
      "raw", scenario="s", item_noun="i", behavior="b", attribute_names=("title",),
      users=users, items=items, item_text=item_text or {}, times=times, ratings=ratings,
      source="events.txt", **kwargs)


def test_from_interactions_orders_integer_ids_numerically():
  users = [10, 2, 2, 10, 1, -3]
  items = [100, 9, 10, 9, 100, 9]
  text = {"9": ("nine",), "100": ("hundred",)}
  feats = ({"10": np.array([1.0, 2.0]), "9": np.array([3.0, 4.0])}, ("f", "g"))
  ufeats = ({"-3": np.array([7.0])}, ("age",))
  as_text = ([str(x) for x in users], [str(x) for x in items])
  for u, i in ((np.array(users), np.array(items)), as_text):
    ds = build(u, i, times=[1, 2, 1, 0, 5, 4], ratings=[1, 2, 3, 4, 5, 6], item_text=text,
               item_features=feats, user_features=ufeats)
    assert ds.user_keys.tolist() == ["-3", "1", "2", "10"]
    assert ds.item_keys.tolist() == ["9", "10", "100"]
    assert ds.item_text[:, 0].tolist() == ["nine", "unknown", "hundred"]
    np.testing.assert_array_equal(ds.item_features, [[3, 4], [1, 2], [0, 0]])
    np.testing.assert_array_equal(ds.user_features[:, 0], [7, 0, 0, 0])
    assert by_user(ds) == {"-3": ["9"], "1": ["100"], "2": ["10", "9"], "10": ["9", "100"]}
    np.testing.assert_array_equal(ds.ratings, [6, 5, 3, 2, 4, 1])


@pytest.mark.parametrize("ids, keys", [
    (["10", "2", "007"], ["007", "10", "2"]),  # "007" is not how str(int) writes 7
    (["10", "2", "7"], ["2", "7", "10"]),
    (["b10", "b2", "a"], ["a", "b10", "b2"]),
    (["+7", "7", "10"], ["+7", "10", "7"]),
    (["1", "-0"], ["-0", "1"]),
    (["10", "2", "12345678901234567890"], ["10", "12345678901234567890", "2"]),  # > int64
    (["10", "2", "1234567890123456789"], ["2", "10", "1234567890123456789"]),  # 19 digits
])
def test_from_interactions_string_ids(ids, keys):
  ds = build(ids, ["x"] * len(ids))
  assert ds.user_keys.tolist() == keys
  assert sorted(by_user(ds)) == sorted(keys)


def test_from_interactions_times_ties_and_no_times():
  ds = build([1, 1, 1, 1], ["a", "b", "c", "d"], times=[5, 3, 5, 3])
  assert by_user(ds) == {"1": ["b", "d", "a", "c"]}  # ties keep the input order
  np.testing.assert_array_equal(ds.times, [3, 3, 5, 5])
  ds = build([2, 1, 2, 1], ["a", "b", "c", "d"])
  assert by_user(ds) == {"1": ["b", "d"], "2": ["a", "c"]} and not ds.has_times
  huge = build([1, 2, 1], ["a", "b", "c"], times=[2**62, -2**62, 0])  # combined key overflows
  assert by_user(huge) == {"1": ["c", "a"], "2": ["b"]}


def test_from_interactions_fractional_times_keep_their_order():
  # Sub-second events: int64 seconds would tie three of them at 10, and the split would then
  # take u1's 10.9 into train instead of u2's 10.5.
  ds = build([1, 2, 1, 2], ["a", "b", "c", "d"], times=[10.9, 10.5, 10.2, 11.5])
  assert by_user(ds) == {"1": ["c", "a"], "2": ["b", "d"]}
  assert ds.times.dtype == np.int64
  np.testing.assert_array_equal(ds.times, [0, 2, 1, 3])  # dense ranks: 10.2 10.5 10.9 11.5
  train, test = split_chronological(ds, 0.5)
  assert by_user(train) == {"1": ["c"], "2": ["b"]}
  assert by_user(test) == {"1": ["a"], "2": ["d"]}
  tied = build([1, 1, 2], ["a", "b", "c"], times=[0.5, 0.5, 0.25])
  np.testing.assert_array_equal(tied.times, [1, 1, 0])  # equal times share a rank
  whole = build([1, 1], ["a", "b"], times=np.array([1.6e9 + 1, 1.6e9]))
  np.testing.assert_array_equal(whole.times, [1_600_000_000, 1_600_000_001])  # lossless: kept
  for bad in (np.nan, np.inf):
    with pytest.raises(DataError, match=r"^events\.txt: interaction 1 has time .*, expected a "
                       "finite number$"):
      build([1, 1], ["a", "b"], times=[1.0, bad])


def test_from_interactions_bad_inputs():
  with pytest.raises(DataError, match=r"^events\.txt: no interactions$"):
    build([], [])
  with pytest.raises(DataError, match="3 users but 2 items"):
    build([1, 2, 3], ["a", "b"])
  with pytest.raises(DataError, match=r"times has shape \(2,\), expected \(3,\)"):
    build([1, 2, 3], ["a", "b", "c"], times=[1, 2])
  with pytest.raises(DataError, match=r"ratings has shape \(4,\), expected \(3,\)"):
    build([1, 2, 3], ["a", "b", "c"], ratings=[1, 2, 3, 4])
  with pytest.raises(DataError, match="every item_text value must hold 1 strings"):
    build([1], ["a"], item_text={"a": ("x", "y")})
