"""Exploration strategies (paper RQ4), shared by every agent: scores [N, I] -> actions [N]."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrec.agents.types import STRATEGIES
from jaxrec.errors import ConfigError


def check_strategy(strategy: str) -> str:
  if strategy not in STRATEGIES:
    raise ConfigError(f"--explore must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
  return strategy


def masked(scores: jax.Array, allowed: jax.Array | None) -> jax.Array:
  """scores [N, I] with the items not `allowed` [N, I] bool at -inf (an evaluation mode's
  mask of items already recommended); a row with no allowed item keeps its scores."""
  if allowed is None:
    return scores
  keep = allowed | ~allowed.any(axis=-1, keepdims=True)
  return jnp.where(keep, scores, -jnp.inf)


def categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
  """One sample of softmax(logits) per row: logits [N, I] -> [N] int32.

  Two-level inverse-CDF sampling: the items are cut into B blocks of S ~ sqrt(I); one uniform
  picks a block by the cumulative block weights, a second an item within it. Two uniforms per
  row instead of `jax.random.categorical`'s I Gumbel draws: on a 2-core CPU at I = 993 and
  N = 100, 0.19 ms against 2.3 ms, which was 70% of a small agent's env step. Items of zero
  probability (-inf logits) are never drawn: where float rounding would select one, the row
  falls back to its argmax.
  """
  n, num = logits.shape
  size = max(1, math.isqrt(num - 1) + 1)  # S = ceil(sqrt(I))
  blocks = -(-num // size)
  w = jnp.exp(logits - logits.max(axis=-1, keepdims=True))
  w = jnp.pad(w, ((0, 0), (0, blocks * size - num))).reshape(n, blocks, size)
  u = jax.random.uniform(key, (n, 2))
  block_cdf = jnp.cumsum(w.sum(axis=-1), axis=-1)  # [N, B]
  b = jnp.sum(block_cdf <= u[:, :1] * block_cdf[:, -1:], axis=-1)
  b = jnp.minimum(b, blocks - 1)
  wb = jnp.take_along_axis(w, b[:, None, None], axis=1)[:, 0]  # [N, S]
  cdf = jnp.cumsum(wb, axis=-1)
  j = jnp.minimum(jnp.sum(cdf <= u[:, 1:] * cdf[:, -1:], axis=-1), size - 1)
  item = b * size + j
  ok = (item < num) & (jnp.take_along_axis(wb, j[:, None], axis=1)[:, 0] > 0)
  return jnp.where(ok, item, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


def select(key: jax.Array, scores: jax.Array, strategy: str,
           epsilon: float | jax.Array = 0.0, allowed: jax.Array | None = None) -> jax.Array:
  """scores [N, I] (actor logits, or Q values for DQN) -> actions [N] int32.

  greedy: argmax; epsilon: a uniform item with probability epsilon, else argmax;
  categorical: a sample of softmax(scores). allowed [N, I] bool: pick only these items.
  """
  check_strategy(strategy)
  scores = masked(scores, allowed)
  if strategy == "greedy":
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)
  if strategy == "categorical":
    return categorical(key, scores)
  k_explore, k_item = jax.random.split(key)
  n, num_items = scores.shape
  explore = jax.random.uniform(k_explore, (n,)) < epsilon
  random_items = jax.random.randint(k_item, (n,), 0, num_items)
  if allowed is not None:  # uniform over the allowed items; the same draw where all are
    k_masked = jax.random.fold_in(k_item, 1)
    random_items = jnp.where(allowed.all(axis=-1), random_items, jax.random.categorical(
        k_masked, masked(jnp.zeros_like(scores), allowed)))
  return jnp.where(explore, random_items, jnp.argmax(scores, axis=-1)).astype(jnp.int32)


def propose(key: jax.Array, scores: jax.Array, k: int, strategy: str,
            epsilon: float | jax.Array = 0.0, allowed: jax.Array | None = None) -> jax.Array:
  """scores [N, I] -> k distinct candidate items [N, k] int32 (paper Alg. 1 line 9), best
  first for greedy.

  greedy: the top k; categorical: k draws of softmax(scores) without replacement (Gumbel
  top-k); epsilon: the top k, each slot replaced by a uniform item with probability epsilon
  (a replacement may repeat another slot). allowed [N, I] bool: candidates only from these
  (the top k when fewer are allowed; the epsilon replacements are not masked).
  """
  check_strategy(strategy)
  scores = masked(scores, allowed)
  if strategy == "categorical":
    scores = scores + jax.random.gumbel(key, scores.shape, scores.dtype)
  _, top = jax.lax.top_k(scores, k)
  top = top.astype(jnp.int32)
  if strategy != "epsilon":
    return top
  k_explore, k_item = jax.random.split(key)
  explore = jax.random.uniform(k_explore, top.shape) < epsilon
  return jnp.where(explore, jax.random.randint(k_item, top.shape, 0, scores.shape[-1]),
                   top).astype(jnp.int32)
