"""Exploration strategies (paper RQ4), shared by every agent: scores [N, I] -> actions [N]."""

from __future__ import annotations

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
    return jax.random.categorical(key, scores, axis=-1).astype(jnp.int32)
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
