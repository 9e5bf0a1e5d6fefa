"""User models: streaming exactness, fit quality against popularity / item-mean baselines."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.data import SyntheticConfig, load_dataset, split_by_user
from jaxrec.usermodels import matrix as mx
from jaxrec.usermodels import sequential as sq


def test_streaming_step_equals_full_encode():
  cfg = sq.SeqConfig(num_items=50, dim=16, num_layers=2, num_heads=2, window=4)
  model = sq.SeqScorer(cfg)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((8,), jnp.int32))
  seq = jnp.asarray([3, 7, 7, 1, 49, 0, 12, 5, 9, 30], jnp.int32)  # longer than the window
  full = model.apply(params, seq, method=sq.SeqScorer.encode)
  cache = model.apply(params, method=sq.SeqScorer.empty_cache)
  step = jax.jit(lambda c, i: model.apply(params, c, i, method=sq.SeqScorer.step))
  for t in range(len(seq)):
    cache = step(cache, seq[t])
    np.testing.assert_allclose(np.asarray(cache.h), np.asarray(full[t]), atol=1e-5)
  # A new session on the same ring buffer (the env's reset clears `valid`, the write slot is
  # wherever the last session left it) streams its own sequence exactly too.
  assert int(cache.slot) != 0
  cache = cache._replace(valid=jnp.zeros_like(cache.valid))
  again = seq[::-1][:7]
  full = model.apply(params, again, method=sq.SeqScorer.encode)
  for t in range(len(again)):
    cache = step(cache, again[t])
    np.testing.assert_allclose(np.asarray(cache.h), np.asarray(full[t]), atol=1e-5)


def test_padding_does_not_change_the_encoding():
  cfg = sq.SeqConfig(num_items=50, dim=16, window=4)
  model = sq.SeqScorer(cfg)
  params = model.init(jax.random.PRNGKey(1), jnp.zeros((8,), jnp.int32))
  a = model.apply(params, jnp.asarray([4, 5, 6]), method=sq.SeqScorer.encode)[-1]
  b = model.apply(params, jnp.asarray([-1, -1, 4, 5, 6]), method=sq.SeqScorer.encode)[-1]
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_sequential_fit_beats_popularity():
  ds = load_dataset("synthetic", synthetic_cfg=SyntheticConfig(num_users=800, num_items=300))
  train, _ = split_by_user(ds)
  _, report = sq.fit(train, sq.SeqConfig(num_items=ds.num_items, num_steps=300),
                     log=lambda s: None)
  assert report.num_eval_users == train.num_users
  assert report.hr10 > 1.5 * report.pop_hr10 and report.ndcg10 > 1.5 * report.pop_ndcg10


def test_matrix_fit_beats_item_mean():
  # Static tastes (no drift): ratings carry a user x item signal a factorisation can learn.
  ds = load_dataset("synthetic", synthetic_cfg=SyntheticConfig(
      num_users=800, num_items=300, drift=0.0, jump_prob=0.0))
  train, _ = split_by_user(ds)
  cfg = mx.MatrixConfig(num_users=train.num_users, num_items=train.num_items, num_steps=2000)
  params, report = mx.fit(train, cfg, log=lambda s: None)
  assert not report.implicit
  assert report.rmse < 0.9 * report.baseline_rmse
  table = mx.reward_table(cfg, params, train)
  assert table.shape == (train.num_users, train.num_items)
  assert table.min() >= 1.0 and table.max() <= 5.0


def test_matrix_scale_widens_to_the_datasets_ratings():
  # KuaiRec's rewards are watch ratios in [0, 1]: a 1-5 output could never predict them.
  ds = load_dataset("synthetic", synthetic_cfg=SyntheticConfig(num_users=200, num_items=100))
  assert mx.rating_scale(ds) == (1.0, 5.0)
  assert mx.rating_scale(dataclasses.replace(ds, ratings=np.zeros(0, np.float32))) == (1.0, 5.0)
  ratios = dataclasses.replace(ds, ratings=((ds.ratings - 1.0) / 4.0).astype(np.float32))
  lo, hi = mx.rating_scale(ratios)
  assert (lo, hi) == (0.0, 5.0)
  cfg = mx.MatrixConfig(num_users=ds.num_users, num_items=ds.num_items, num_steps=400,
                        explicit_negatives=1, rating_min=lo, rating_max=hi)
  _, _, targets, _ = mx.rating_triples(ratios, cfg, np.random.default_rng(0))
  assert targets.min() == 0.0 and targets.max() <= 1.0  # negatives at the scale's minimum 0
  params, report = mx.fit(ratios, cfg, log=lambda s: None)
  table = mx.reward_table(cfg, params, ratios)
  assert table.min() >= 0.0 and table.mean() < 1.0  # on the data's scale, not stuck above 1
  assert report.rmse < 0.5

def test_matrix_fit_on_implicit_data_uses_sampled_negatives():
  ds = load_dataset("synthetic", synthetic_cfg=SyntheticConfig(num_users=200, num_items=100))
  implicit = dataclasses.replace(ds, ratings=np.zeros(0, np.float32))
  cfg = mx.MatrixConfig(num_users=ds.num_users, num_items=ds.num_items, num_steps=400)
  params, report = mx.fit(implicit, cfg, log=lambda s: None)
  assert report.implicit
  users, items, ratings, implicit_flag = mx.rating_triples(implicit, cfg,
                                                           np.random.default_rng(0))
  assert implicit_flag and set(np.unique(ratings)) == {1.0, 5.0}
  assert len(users) == 2 * implicit.num_interactions


def test_explicit_negatives_add_sampled_pairs_at_the_scale_minimum(small_dataset):
  import numpy as np
  from jaxrec.usermodels import matrix as mx
  ds = small_dataset
  cfg = mx.MatrixConfig(num_users=ds.num_users, num_items=ds.num_items, explicit_negatives=2)
  users, items, ratings, implicit = mx.rating_triples(ds, cfg, np.random.default_rng(0))
  n = ds.num_interactions
  assert not implicit and len(users) == len(items) == len(ratings) == 3 * n
  np.testing.assert_array_equal(ratings[:n], ds.ratings)  # the observed ratings first
  assert (ratings[n:] == 1.0).all() and items[n:].max() < ds.num_items
  plain = mx.rating_triples(ds, mx.MatrixConfig(num_users=ds.num_users,
                                                num_items=ds.num_items),
                            np.random.default_rng(0))
  assert len(plain[0]) == n  # 0 (the default outside the peer protocol): ratings only
