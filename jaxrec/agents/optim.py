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

from jaxrec import nets
from jaxrec.agents import acting
from jaxrec.agents.types import AgentState, Transition


class GradientAgent:
  """What every agent with one parameter set and one optimizer shares. A subclass sets
  `self.net` (a flax module over histories) and `self.optimizer`, and defines `logits(params,
  history) -> [N, I]` (the scores it acts on) and `update`; it overrides `init` to add its
  `extra` state."""

  def init_params(self, key: jax.Array):
    return nets.init_params(self.net, key)

  def init(self, key: jax.Array, params=None) -> AgentState:
    params = self.init_params(key) if params is None else params
    return AgentState(params=params, opt_state=self.optimizer.init(params), step=jnp.int32(0))

  def policy_params(self, state: AgentState):
    return state.params

  def act(self, params, history, key, strategy, epsilon=0.0, allowed=None):
    return acting.select(key, self.logits(params, history), strategy, epsilon, allowed)


def adam(learning_rate: float, max_grad_norm: float) -> optax.GradientTransformation:
  """Adam on gradients clipped to a global norm of max_grad_norm (0: not clipped, as the
  peer's A2C, whose --max-grad-norm defaults to None; the optimizer state has the same
  structure either way)."""
  clip = optax.clip_by_global_norm(max_grad_norm) if max_grad_norm else optax.identity()
  return optax.chain(clip, optax.adam(learning_rate))


def apply_gradients(optimizer: optax.GradientTransformation, loss_fn: Callable, params,
                    opt_state, *args):
  """One step on `loss_fn(params, *args) -> (loss, metrics)`: -> (params, opt_state, loss,
  metrics)."""
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss, metrics


def example_transition(history) -> Transition:
  """One transition with the dtypes the buffers store; history: one observation (the agent's
  input: items [L], or (items, rewards) where its network reads rewards)."""
  return Transition(history=history, action=jnp.int32(0), reward=jnp.float32(0.0),
                    done=jnp.bool_(False), next_history=history)


def item_buffer(capacity: int, batch_size: int, min_items: int = 1):
  """A flashbax item buffer of Transitions that adds batches and samples uniform minibatches.
  (flashbax raises min_length to 1, with a warning, when given 0; one item is needed anyway.)"""
  return fbx.make_item_buffer(max_length=capacity, min_length=max(min_items, 1),
                              sample_batch_size=batch_size, add_batches=True)
