"""The batch-RL loop: one epoch = one jitted `lax.scan` of `updates_per_epoch` gradient steps,
each on a minibatch drawn uniformly with replacement from the logged buffer (tianshou's
`offline_trainer`: `policy.update(batch_size, buffer)` -> `buffer.sample(batch_size)`), with a
target network copied from the online one every `target_period` updates (at update 0, 320,
640, ...: tianshou's `if self._iter % self._freq == 0: self.sync_weight()` before the step).

  state = init_state(key)
  state, points = train_epoch(state, data, key)   # jitted

jaxrec.offline.loop serves the next-item learners differently (one pass over a shuffle per
epoch, two copies with a random role swap per step): these learners need neither, and a
periodic target copy instead; `all_finite` / FINITE (the NaN guard's per-update flag) and the
optimizer (agents.optim.adam) are the shared pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrec.batchrl.buffer import Logged
from jaxrec.batchrl.learners import Sample
from jaxrec.train.loop import FINITE, all_finite


class BatchState(NamedTuple):
  params: Any
  target: Any  # the target network's params
  opt_state: Any
  updates: jax.Array  # int32 gradient steps so far


def sample_of(data: Logged, idx: jax.Array, with_rewards: bool) -> Sample:
  """The minibatch of transitions `idx` [B] as the learners read it (the network's input
  built from the stored items / rewards)."""
  obs = ((lambda i, r: (i, r)) if with_rewards else (lambda i, r: i))
  boot = data.boot[idx]
  return Sample(obs=obs(data.items[idx], data.rewards[idx]), action=data.action[idx],
                reward=data.reward[idx], done=data.done[idx],
                next_obs=obs(data.next_items[idx], data.next_rewards[idx]),
                nstep_return=data.nstep_return[idx],
                boot_obs=obs(data.next_items[boot], data.next_rewards[boot]),
                boot_discount=data.boot_discount[idx])


def make_train(batch_loss: Callable, init_params: Callable, optimizer: optax.GradientTransformation,
               batch_size: int, updates_per_epoch: int, target_period: int,
               with_rewards: bool):
  """-> (init_state(key), train_epoch(state, data, key) -> (state, points)).

  batch_loss(params, target, sample) -> (loss, metrics); init_params(key) -> params; points:
  one row per update (loss, the learner's metrics, FINITE)."""

  def init_state(key: jax.Array) -> BatchState:
    params = init_params(key)
    return BatchState(params=params, target=params, opt_state=optimizer.init(params),
                      updates=jnp.zeros((), jnp.int32))

  def _update(state: BatchState, key: jax.Array, data: Logged):
    sync = state.updates % target_period == 0
    target = jax.tree_util.tree_map(lambda p, t: jnp.where(sync, p, t), state.params,
                                    state.target)
    idx = jax.random.randint(key, (batch_size,), 0, data.action.shape[0])
    sample = sample_of(data, idx, with_rewards)
    (loss, metrics), grads = jax.value_and_grad(batch_loss, has_aux=True)(
        state.params, target, sample)
    upd, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, upd)
    point = {"loss": loss} | metrics
    point[FINITE] = all_finite((params, point))
    return BatchState(params=params, target=target, opt_state=opt_state,
                      updates=state.updates + 1), point

  def train_epoch(state: BatchState, data: Logged, key: jax.Array):
    """updates_per_epoch updates, one key each."""
    keys = jax.random.split(key, updates_per_epoch)
    return jax.lax.scan(lambda s, k: _update(s, k, data), state, keys)

  return init_state, train_epoch
