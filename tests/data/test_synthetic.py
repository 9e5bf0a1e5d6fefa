"""The synthetic generator: determinism, the statistics its docstring promises, the taste signal
and config validation. Small configs (300 users, 200 items, ~0.1 s each) except one size test."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxrec.data import synthetic
from jaxrec.data.synthetic import SyntheticConfig, generate, generate_with_truth
from jaxrec.errors import DataError

ARRAY_FIELDS = ("item_text", "item_keys", "user_keys", "seq_items", "offsets", "ratings", "times",
                "item_features", "user_features")
SMALL = SyntheticConfig(num_users=300, num_items=200)
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", params=SEEDS)
def small(request):
  return generate_with_truth(dataclasses.replace(SMALL, seed=request.param))


def test_same_seed_same_arrays_other_seed_other_arrays():
  a, ta = generate_with_truth(SMALL)
  b, tb = generate_with_truth(SMALL)
  for f in ARRAY_FIELDS:
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
  for f in ("item_genre", "item_emb", "user_taste", "popularity"):
    np.testing.assert_array_equal(getattr(ta, f), getattr(tb, f), err_msg=f)
  c = generate(dataclasses.replace(SMALL, seed=1))
  assert not np.array_equal(a.offsets, c.offsets)
  assert not np.array_equal(a.item_text, c.item_text)
  n = min(a.num_interactions, c.num_interactions)
  assert np.mean(a.seq_items[:n] == c.seq_items[:n]) < 0.2


def test_default_config_sizes():
  ds = generate()
  assert (ds.num_users, ds.num_items) == (2000, 1000)
  assert ds.name == "synthetic" and ds.attribute_names == ("title", "genre", "label")
  assert ds.has_ratings and ds.has_times


def test_sizes_and_lengths(small):
  ds, _ = small
  assert (ds.num_users, ds.num_items) == (300, 200)
  assert abs(ds.lengths.mean() - SMALL.mean_length) <= 0.15 * SMALL.mean_length
  assert ds.lengths.min() == SMALL.min_length  # 1 in 16 users sits at the minimum


def test_lengths_are_clipped_at_max_length():
  cfg = dataclasses.replace(SMALL, min_length=3, mean_length=12.0, max_length=30)
  lengths = generate(cfg).lengths
  assert lengths.min() == 3 and lengths.max() == 30  # ~3% of users reach the cap
  assert abs(lengths.mean() - 12.0) <= 0.15 * 12.0


def test_no_immediate_repeats_and_increasing_times(small):
  ds, _ = small
  same_user = np.diff(ds.user_of_interaction()) == 0
  assert not np.any((np.diff(ds.seq_items) == 0) & same_user)
  assert np.all(np.diff(ds.times)[same_user] > 0)


def test_ratings_are_one_to_five(small):
  ds, _ = small
  assert ds.ratings.dtype == np.float32
  assert set(np.unique(ds.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_long_tail_popularity(small):
  # Measured on seeds 0-2: the top 10% of items hold 25-38% of interactions, 8-35x what the
  # bottom 10% hold; the interaction counts follow the Zipf prior (rank correlation 0.3-0.4,
  # about 0 with pop_weight=0).
  ds, truth = small
  counts = ds.item_popularity()
  share = np.sort(counts)[::-1] / counts.sum()
  tenth = ds.num_items // 10
  assert share[:tenth].sum() > 2 * 0.1  # twice a uniform catalog's share
  assert share[:tenth].sum() > 5 * share[-tenth:].sum()
  rank = lambda x: np.argsort(np.argsort(x))
  assert np.corrcoef(rank(counts), rank(truth.popularity))[0, 1] > 0.15


def test_item_text(small):
  ds, truth = small
  assert ds.item_text.shape == (ds.num_items, 3)
  titles = ds.item_text[:, 0]
  assert len(set(titles.tolist())) == ds.num_items
  np.testing.assert_array_equal(ds.item_text[:, 1], np.array(synthetic._GENRES)[truth.item_genre])
  # Labels come from a few per genre: far fewer distinct (genre, label) pairs than items.
  assert len(set(map(tuple, ds.item_text[:, 1:].tolist()))) <= 3 * SMALL.num_genres


def test_consumed_items_follow_the_start_taste(small):
  # Measured: 0.70-0.75 mean cosine for consumed items against 0.05-0.16 for all items.
  ds, truth = small
  users = ds.user_of_interaction()
  consumed = np.einsum("nd,nd->n", truth.user_taste[users], truth.item_emb[ds.seq_items]).mean()
  catalog = (truth.user_taste @ truth.item_emb.T).mean()
  assert consumed > catalog + 0.4


@pytest.mark.parametrize("genres", [1, 2])
def test_fewer_genres_than_favourites(genres):
  # Users mix up to 3 favourite genres; 1 or 2 genres used to crash (IndexError / ValueError).
  ds, truth = generate_with_truth(dataclasses.replace(SMALL, num_genres=genres))
  assert ds.num_items == 200 and np.unique(truth.item_genre).size == genres


@pytest.mark.parametrize("change, message", [
    ({"num_users": 0}, "num_users must be positive, got 0"),
    ({"num_items": -1}, "num_items must be positive, got -1"),
    ({"num_genres": 0}, "num_genres must be positive"),
    ({"dim": 0}, "dim must be positive"),
    ({"min_length": 0}, "min_length must be positive"),
    ({"max_length": 0}, "max_length must be positive"),
    ({"num_genres": 21}, "num_genres must be <= 20, got 21"),
    ({"min_length": 10, "max_length": 8, "mean_length": 9.0}, "need min_length <= mean_length"),
    ({"mean_length": 4.0}, "need min_length <= mean_length <= max_length, got 5, 4.0, 60"),
    ({"mean_length": 61.0}, "need min_length <= mean_length <= max_length, got 5, 61.0, 60"),
    ({"mean_length": float("nan")}, "need min_length <= mean_length"),
    ({"num_items": 11}, "num_items must be >= max(num_genres, 2), got 11 with num_genres=12"),
    ({"num_items": 1, "num_genres": 1}, "num_items must be >= max(num_genres, 2)"),
])
def test_validate_rejects_bad_sizes(change, message):
  cfg = dataclasses.replace(SMALL, **change)
  with pytest.raises(DataError) as e:
    cfg.validate()
  assert str(e.value).startswith("synthetic: ") and message in str(e.value), str(e.value)
  with pytest.raises(DataError):
    generate(cfg)
  SMALL.validate()
