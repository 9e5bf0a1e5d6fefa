"""The agents' one optimizer and one gradient step, and their one replay-buffer factory.

Every agent trains with Adam after global-norm clipping, and every update is
`value_and_grad -> optimizer.update -> apply_updates`; DQN and iALP pre-training keep their
transitions in a flashbax item buffer of the same `Transition` layout.
"""

from __future__ import annotations

from typing import Callable

import flashbax as fbx
import jax
import jax.numpy as jnp
import optax

from jaxrec.agents.types import Transition


def adam(learning_rate: float, max_grad_norm: float) -> optax.GradientTransformation:
  """Adam on gradients clipped to a global norm of max_grad_norm."""
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


def apply_gradients(optimizer: optax.GradientTransformation, loss_fn: Callable, params,
                    opt_state, *args):
  """One step on `loss_fn(params, *args) -> (loss, metrics)`: -> (params, opt_state, loss,
  metrics)."""
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss, metrics


def example_transition(history_len: int) -> Transition:
  """One transition with the dtypes the buffers store."""
  history = jnp.full((history_len,), -1, jnp.int32)
  return Transition(history=history, action=jnp.int32(0), reward=jnp.float32(0.0),
                    done=jnp.bool_(False), next_history=history)


def item_buffer(capacity: int, batch_size: int, min_items: int = 1):
  """A flashbax item buffer of Transitions that adds batches and samples uniform minibatches.
  (flashbax raises min_length to 1, with a warning, when given 0; one item is needed anyway.)"""
  return fbx.make_item_buffer(max_length=capacity, min_length=max(min_items, 1),
                              sample_batch_size=batch_size, add_batches=True)
