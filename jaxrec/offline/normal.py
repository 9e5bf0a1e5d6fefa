"""Normal: the backbone trained with cross-entropy on the next item only (the supervised
baseline of SQN / SNQN / LEA, e.g. "SASRec" in LEA Table 2)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def cross_entropy(logits_t: jax.Array, a_t: jax.Array) -> jax.Array:
  """One example: -log softmax(logits_t)[a_t]. logits_t [I] float, a_t int scalar."""
  chex.assert_rank([logits_t, a_t], [1, 0])
  return -jax.nn.log_softmax(logits_t)[a_t]


def batch_loss(net, main, target, batch, hp, key, step):
  """The learner interface (jaxrec.offline.learners): mean cross-entropy over the batch;
  `target`, `hp`, `key`, `step` are not read."""
  del target, hp, key, step
  logits, _ = net.apply(main, batch.history)
  ce = jax.vmap(cross_entropy)(logits, batch.action)
  loss = jnp.mean(ce)
  return loss, {"ce_loss": loss}
