"""iALP's preference step (paper Sec. 4.1, Eq. 2-3): labels of k candidates -> (a_t, r^p_t).

The actor proposes k candidates (`acting.propose`); a labeler (an LLM through
`llm_labeler`, or the simulated `jaxrec.oracle`) answers with a choice in 0..k (k = "None"):

  chosen j < k   ->  a_t = candidates[j],            r^p_t = 1
  None (or an unparseable answer, valid = False)
                 ->  a_t = a uniform candidate,       r^p_t = 0

Soft labels (an option beside the paper's hard ones) keep a_t as above and set r^p_t to the
labeler's probability that the user takes one of the candidates, 1 - p(None) = E[r^p] under
the label distribution: the same expectation with less noise than one sampled answer.
The training loops that use this live in `jaxrec.train.pretrain` (iALP) and
`jaxrec.agents.llm_online` (LLMOnline).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrec.envs.base import append

LABELS = ("hard", "soft")


def preference_actions(key: jax.Array, candidates: jax.Array, choice: jax.Array,
                       valid: jax.Array | None = None, logprobs: jax.Array | None = None,
                       labels: str = "hard") -> tuple[jax.Array, jax.Array, jax.Array]:
  """Resolves labels into actions and preference rewards.

  Args:
    key: for the uniform candidate of "None" rows.
    candidates: [N, k] int32 item ids.
    choice: [N] int32 in 0..k (k = "None").
    valid: [N] bool or None (all valid); invalid rows count as "None".
    logprobs: [N, k + 1] label log-probabilities (needed for labels="soft").
    labels: "hard" (Eq. 3) or "soft" (1 - p(None)).
  Returns:
    (action [N] int32, reward [N] float32, none [N] bool).
  """
  n, k = candidates.shape
  none = choice >= k
  if valid is not None:
    none = none | ~valid
  uniform = jax.random.randint(key, (n,), 0, k)
  slot = jnp.where(none, uniform, jnp.minimum(choice, k - 1))
  action = jnp.take_along_axis(candidates, slot[:, None], axis=1)[:, 0].astype(jnp.int32)
  if labels == "hard":
    reward = (~none).astype(jnp.float32)
  elif labels == "soft":
    if logprobs is None:
      raise ValueError("soft labels need logprobs")
    reward = 1.0 - jnp.exp(logprobs[:, k].astype(jnp.float32))
    if valid is not None:
      reward = jnp.where(valid, reward, 0.0)
  else:
    raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
  return action, reward, none


def extend(history: jax.Array, action: jax.Array) -> jax.Array:
  """history [N, L], action [N] -> the next histories [N, L] (a_t becomes x_{t+1})."""
  return jax.vmap(append)(history, action)
