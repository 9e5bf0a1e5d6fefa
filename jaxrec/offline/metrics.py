"""HR@k and NDCG@k of the true next item ranked among all items (SQN / SNQN / LEA protocol:
every position of the test sequences, one ranking each).

The rank of the true item is 1 + the items scored above it, where an item with an equal
score counts as above when its id is smaller (a deterministic tie-break, the order of a stable
descending sort; the authors' `np.argsort` leaves ties in an unspecified order, which matters
only for tied scores such as popularity counts). HR@k = share of positions with rank <= k;
NDCG@k = mean of 1 / log2(rank + 1) over positions with rank <= k (one relevant item, so the
ideal DCG is 1), as the authors' `calculate_hit`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

KS = (5, 10, 20)


def rank_of_truth(scores: jax.Array, truth: jax.Array) -> jax.Array:
  """scores [N, I] float, truth [N] int -> [N] int32 rank of the true item (1 = first)."""
  s_true = jnp.take_along_axis(scores, truth[:, None], axis=1)
  ids = jnp.arange(scores.shape[1])[None, :]
  above = (scores > s_true) | ((scores == s_true) & (ids < truth[:, None]))
  return above.sum(axis=1).astype(jnp.int32) + 1


def hit_ndcg_sums(rank: jax.Array, ks: tuple[int, ...], weight: jax.Array) -> dict:
  """rank [N], weight [N] (1 = a real position, 0 = padding) -> {"HR@k", "NDCG@k"} summed."""
  out = {}
  for k in ks:
    hit = (rank <= k) * weight
    out[f"HR@{k}"] = hit.sum()
    out[f"NDCG@{k}"] = (hit / jnp.log2(rank + 1.0)).sum()
  return out


def evaluate_ranking(score_fn: Callable[[jax.Array], jax.Array], histories: jax.Array,
                     truth: jax.Array, ks: tuple[int, ...] = KS, chunk: int = 1024) -> dict:
  """{"HR@k", "NDCG@k"} means over all N positions (jittable; N, chunk static).

  score_fn: histories [C, L] -> scores [C, I]; histories [N, L] int32; truth [N] int32. The
  positions are scored `chunk` at a time (lax.map), so memory is chunk x I, not N x I."""
  n = truth.shape[0]
  chunk = min(chunk, n)
  pad = -n % chunk
  weight = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)]).reshape(-1, chunk)
  hist = jnp.concatenate([histories, jnp.full((pad,) + histories.shape[1:], -1,
                                              histories.dtype)]).reshape(
                                                  (-1, chunk) + histories.shape[1:])
  tr = jnp.concatenate([truth, jnp.zeros(pad, truth.dtype)]).reshape(-1, chunk)

  def one(xs):
    h, t, w = xs
    return hit_ndcg_sums(rank_of_truth(score_fn(h), t), ks, w)

  sums = jax.lax.map(one, (hist, tr, weight))
  return {name: v.sum() / n for name, v in sums.items()}


def popularity_scores(actions: np.ndarray, num_items: int) -> np.ndarray:
  """[I] float32: how often each item is a logged next item in the train transitions."""
  return np.bincount(np.asarray(actions), minlength=num_items).astype(np.float32)
