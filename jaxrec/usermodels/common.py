"""What both user-model fits share: minibatch SGD compiled as one scan per chunk of steps."""

from __future__ import annotations

from typing import Callable

import jax
import optax


def make_sgd_chunk(loss_fn: Callable, optimizer: optax.GradientTransformation, steps: int):
  """-> jitted chunk(params, opt_state, key) -> (params, opt_state, mean loss) running `steps`
  updates of loss_fn(params, step_key), a minibatch loss that samples its batch from the key."""

  def train_step(carry, step_key):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, step_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  @jax.jit
  def chunk(params, opt_state, key):
    (params, opt_state), losses = jax.lax.scan(train_step, (params, opt_state),
                                               jax.random.split(key, steps))
    return params, opt_state, losses.mean()

  return chunk
