"""Matrix user model: DeepFM (Guo et al. 2017) on (user, item[, features]) -> rating in [1, 5].

Fields are the user id, the item id, and (when the dataset has them) the item's and the user's
one-hot features, each pooled into one field embedding. The FM part (first order + pairwise
interactions) and an MLP over the concatenated field embeddings are summed into a logit, mapped
to lo + (hi - lo) * sigmoid(logit) and fitted to the observed ratings with MSE (BiLLP /
EasyRL4Rec's user model for Coat). The scale [lo, hi] is the 1-5 star scale widened to the
dataset's observed ratings (`rating_scale`: KuaiRec's watch ratios in [0, 1] give [0, 5], so the
model can predict them and sampled negatives go to 0, as the peer's pushes them to 0). Datasets
without ratings are fitted as implicit feedback: observed = 5, sampled unobserved = 1.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec.data.dataset import Dataset
from jaxrec.usermodels.common import make_sgd_chunk


@dataclasses.dataclass(frozen=True)
class MatrixConfig:
  num_users: int
  num_items: int
  num_item_features: int = 0
  num_user_features: int = 0
  dim: int = 16
  hidden: tuple[int, ...] = (64, 32)
  batch_size: int = 512
  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  num_steps: int = 2000
  implicit_negatives: int = 1  # per observed pair, only for datasets without ratings
  # Per observed pair, for datasets with ratings: sampled (user, item) pairs fitted to the
  # scale's minimum 1, the analog of EasyRL4Rec's "pointneg" user-model loss (neg_K sampled
  # negatives pushed to 0 on its unbounded output). 0 = observed ratings only.
  explicit_negatives: int = 0
  # The output scale (rating_scale(ds)); sampled negatives are fitted to rating_min.
  rating_min: float = 1.0
  rating_max: float = 5.0
  holdout_frac: float = 0.1  # validation (early stopping) and test (report) parts, each
  seed: int = 0


class DeepFM(nn.Module):
  cfg: MatrixConfig

  def setup(self):
    c = self.cfg
    init = nn.initializers.normal(0.05)
    self.user_emb = nn.Embed(c.num_users, c.dim, embedding_init=init)
    self.item_emb = nn.Embed(c.num_items, c.dim, embedding_init=init)
    self.user_w = nn.Embed(c.num_users, 1, embedding_init=nn.initializers.zeros)
    self.item_w = nn.Embed(c.num_items, 1, embedding_init=nn.initializers.zeros)
    self.ifeat = nn.Dense(c.dim, use_bias=False, kernel_init=init) if c.num_item_features else None
    self.ufeat = nn.Dense(c.dim, use_bias=False, kernel_init=init) if c.num_user_features else None
    self.mlp = [nn.Dense(h) for h in c.hidden] + [nn.Dense(1)]
    self.bias = self.param("bias", nn.initializers.zeros, ())

  def fields(self, user, item, item_feats, user_feats):
    """-> [..., F, d] field embeddings and [...] first-order term."""
    f = [self.user_emb(user), self.item_emb(item)]
    if self.ifeat is not None:
      f.append(self.ifeat(item_feats) / jnp.maximum(item_feats.sum(-1, keepdims=True), 1.0))
    if self.ufeat is not None:
      f.append(self.ufeat(user_feats) / jnp.maximum(user_feats.sum(-1, keepdims=True), 1.0))
    return jnp.stack(f, axis=-2), self.user_w(user)[..., 0] + self.item_w(item)[..., 0]

  def __call__(self, user, item, item_feats, user_feats):
    """user, item: [...] int; item_feats [..., Fi]; user_feats [..., Fu] -> rating [...]."""
    v, first = self.fields(user, item, item_feats, user_feats)
    fm = 0.5 * (jnp.square(v.sum(-2)) - jnp.square(v).sum(-2)).sum(-1)
    x = v.reshape(v.shape[:-2] + (-1,))
    for layer in self.mlp[:-1]:
      x = nn.relu(layer(x))
    deep = self.mlp[-1](x)[..., 0]
    lo, hi = self.cfg.rating_min, self.cfg.rating_max
    return lo + (hi - lo) * jax.nn.sigmoid(self.bias + first + fm + deep)

  def item_vectors(self):
    """[I, d] the item-id embeddings (the distance space of the quit rule)."""
    return self.item_emb.embedding


class MatrixReport(NamedTuple):
  rmse: float
  baseline_rmse: float  # item-mean rating (global mean for unseen items)
  num_heldout: int
  implicit: bool
  final_loss: float


def rating_scale(ds: Dataset) -> tuple[float, float]:
  """(lo, hi): the 1-5 star scale, widened to the dataset's observed ratings (1, 5 for every
  star-rated and every implicit dataset)."""
  if not ds.has_ratings or not len(ds.ratings):
    return 1.0, 5.0
  return (min(1.0, float(np.min(ds.ratings))), max(5.0, float(np.max(ds.ratings))))


def rating_triples(ds: Dataset, cfg: MatrixConfig, rng: np.random.Generator):
  """(users, items, ratings) for fitting; implicit datasets get sampled negatives at
  cfg.rating_min (1) and observed pairs 5 (rated ones too with explicit_negatives)."""
  users = ds.user_of_interaction()
  items = ds.seq_items
  if ds.has_ratings and not cfg.explicit_negatives:
    return users, items, ds.ratings.astype(np.float32), False
  positives = ds.ratings.astype(np.float32) if ds.has_ratings else np.full(len(items), 5.0)
  n = len(items) * (cfg.explicit_negatives if ds.has_ratings else cfg.implicit_negatives)
  neg_u = rng.choice(users, size=n)
  neg_i = rng.integers(0, ds.num_items, size=n)
  return (np.concatenate([users, neg_u]), np.concatenate([items, neg_i]),
          np.concatenate([positives, np.full(n, cfg.rating_min)]).astype(np.float32),
          not ds.has_ratings)


def fit(ds: Dataset, cfg: MatrixConfig, log=print) -> tuple[dict, MatrixReport]:
  """Fits on 1 - 2 * holdout_frac of the triples; early-stops on a validation part and reports
  RMSE on a disjoint test part against the item-mean baseline."""
  rng = np.random.default_rng(cfg.seed)
  users, items, ratings, implicit = rating_triples(ds, cfg, rng)
  perm = rng.permutation(len(users))
  n_hold = max(1, int(cfg.holdout_frac * len(users)))
  val, test, train = perm[:n_hold], perm[n_hold:2 * n_hold], perm[2 * n_hold:]
  model = DeepFM(cfg)
  ifeat = jnp.asarray(ds.item_features)
  ufeat = jnp.asarray(ds.user_features)

  def predict(params, u, i):
    return model.apply(params, u, i, ifeat[i], ufeat[u])

  def rmse(params, idx):
    pred = predict(params, jnp.asarray(users[idx]), jnp.asarray(items[idx]))
    return jnp.sqrt(jnp.mean(jnp.square(pred - jnp.asarray(ratings[idx]))))

  key = jax.random.PRNGKey(cfg.seed)
  init_key, key = jax.random.split(key)
  params = model.init(init_key, jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32),
                      ifeat[:1], ufeat[:1])
  opt = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
  opt_state = opt.init(params)
  tu, ti, tr = (jnp.asarray(a[train]) for a in (users, items, ratings))

  def minibatch_loss(p, step_key):
    idx = jax.random.randint(step_key, (cfg.batch_size,), 0, tu.shape[0])
    return jnp.mean(jnp.square(predict(p, tu[idx], ti[idx]) - tr[idx]))

  train_chunk = make_sgd_chunk(minibatch_loss, opt, 200)
  val_rmse_fn = jax.jit(lambda p: rmse(p, val))

  best = (np.inf, params, np.nan)
  for chunk in range(max(1, cfg.num_steps // 200)):
    key, chunk_key = jax.random.split(key)
    params, opt_state, loss = train_chunk(params, opt_state, chunk_key)
    val_rmse = val_rmse_fn(params)
    if float(val_rmse) < best[0]:
      best = (float(val_rmse), params, float(loss))
    if chunk % 5 == 0:
      log(f"  matrix fit step {(chunk + 1) * 200}: train mse {float(loss):.4f} "
          f"val rmse {float(val_rmse):.4f}")
  _, params, loss = best
  # Baseline: each item's mean training rating (the global mean for items unseen in training).
  sums = np.bincount(items[train], weights=ratings[train], minlength=ds.num_items)
  counts = np.bincount(items[train], minlength=ds.num_items)
  item_mean = np.where(counts > 0, sums / np.maximum(counts, 1), ratings[train].mean())
  base = float(np.sqrt(np.mean((item_mean[items[test]] - ratings[test]) ** 2)))
  return params, MatrixReport(float(rmse(params, test)), base, len(test), implicit, loss)


def reward_table(cfg: MatrixConfig, params, ds: Dataset, chunk: int = 256) -> np.ndarray:
  """[U, I] float32 predicted rating of every (user, item) pair of the dataset's users."""
  model = DeepFM(cfg)
  ifeat = jnp.asarray(ds.item_features)
  ufeat = jnp.asarray(ds.user_features)
  all_items = jnp.arange(cfg.num_items)

  @jax.jit
  def rows(u):
    uu = jnp.broadcast_to(u[:, None], (u.shape[0], cfg.num_items))
    ii = jnp.broadcast_to(all_items[None, :], uu.shape)
    return model.apply(params, uu, ii, ifeat[ii], ufeat[uu])

  out = np.zeros((cfg.num_users, cfg.num_items), np.float32)
  for s in range(0, cfg.num_users, chunk):
    u = np.arange(s, min(s + chunk, cfg.num_users))
    out[u] = np.asarray(rows(jnp.asarray(np.pad(u, (0, chunk - len(u)), mode="edge"))))[:len(u)]
  return out
