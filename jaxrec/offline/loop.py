"""The fused offline loop: one epoch = one jitted `lax.scan` over shuffled minibatches of the
logged transitions, gathered on device.

  state = init_state(key)                         # params, Adam states: one per network copy
  state, points = train_epoch(state, data, key)   # jitted; num_batches updates

Learners with two copies (double Q) keep both stacked on a leading axis of size 2; each update
draws which copy is the main one (updated) and which the target (its role swap), as the
authors' code does. A learner with one copy reads its own params as the target.

A learner with a warm-up (sac, sa2c) trains with `two_phase(first, second, warmup)`: the
authors build two Adam optimizers per network (opt1 for the warm-up loss, opt2 after it, each
with its own moments and step count), so the second phase starts from fresh Adam moments.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrec.offline.lea import with_augmentation
from jaxrec.offline.learners import HParams, Learner
from jaxrec.offline.transitions import Transitions
from jaxrec.train.loop import FINITE, all_finite


class OfflineState(NamedTuple):
  params: Any  # the network params, stacked [copies, ...] on every leaf
  opt_state: Any  # each copy's optimizer state, stacked the same way
  updates: jax.Array  # int32 gradient steps so far


def take(tree, i):
  """Copy i of a stacked tree."""
  return jax.tree_util.tree_map(lambda x: x[i], tree)


def put(tree, i, part):
  """The stacked tree with copy i replaced by `part`."""
  return jax.tree_util.tree_map(lambda x, y: x.at[i].set(y), tree, part)


def two_phase(first: optax.GradientTransformation, second: optax.GradientTransformation,
              switch_at: int) -> optax.GradientTransformationExtraArgs:
  """`first` while the update count `step` (an extra argument of `update`) is below
  `switch_at`, then `second`; each keeps its own state, and only the active one advances."""

  def init(params):
    return first.init(params), second.init(params)

  def update(updates, state, params=None, *, step, **extra):
    del extra
    u1, s1 = first.update(updates, state[0], params)
    u2, s2 = second.update(updates, state[1], params)
    on = step < switch_at

    def pick(a, b):
      return jax.tree_util.tree_map(lambda x, y: jnp.where(on, x, y), a, b)

    return pick(u1, u2), (pick(s1, state[0]), pick(state[1], s2))

  return optax.GradientTransformationExtraArgs(init, update)


class TrainingNet:
  """`net` as a learner calls it (`apply(params, history)`) in training: the encoder's dropout
  on, each call its own key, fold_in(key, i) for the i-th call traced. A learner's calls come
  in a fixed order, so the keys are a deterministic function of the update's key. Every
  forward of an update drops out (the target copy's and the bootstrap's too), as the SQN / SA2C
  authors' code runs all of them with is_training=True."""

  def __init__(self, net, key: jax.Array):
    self.net, self.cfg, self._key, self._calls = net, net.cfg, key, 0

  def apply(self, params, history):
    k = jax.random.fold_in(self._key, self._calls)
    self._calls += 1
    return self.net.apply(params, history, k)


def make_train(learner: Learner, net, optimizer: optax.GradientTransformation, hp: HParams,
               batch_size: int, num_batches: int, augment: bool = False):
  """-> (init_state(key), train_epoch(state, data, key) -> (state, points)); points: one row
  per update (loss, the learner's metrics, FINITE). optimizer: one GradientTransformation
  per copy (its update may take the update count as `step`: two_phase). augment: the loss adds
  LEA's augmented terms on data.aug_action (jaxrec/offline/lea.py)."""
  optimizer = optax.with_extra_args_support(optimizer)
  batch_loss = learner.loss_module().batch_loss
  if augment:
    batch_loss = with_augmentation(batch_loss, learner.q_head)
  copies = learner.copies

  def init_state(key: jax.Array) -> OfflineState:
    example = net.cfg.example_input((1,))
    params = jax.vmap(lambda k: net.init(k, example))(jax.random.split(key, copies))
    return OfflineState(params=params, opt_state=jax.vmap(optimizer.init)(params),
                        updates=jnp.zeros((), jnp.int32))

  def _update(state: OfflineState, xs, data: Transitions):
    idx, key = xs
    batch = jax.tree_util.tree_map(lambda x: x[idx], data)
    k_role, k_loss = jax.random.split(key)
    main_i = jax.random.randint(k_role, (), 0, copies)
    target_i = (main_i + 1) % copies
    main, target = take(state.params, main_i), take(state.params, target_i)
    # With dropout, its keys come from a stream of their own: the role and loss keys (and
    # so a run without dropout) are what they were before dropout existed.
    loss_net = (TrainingNet(net, jax.random.fold_in(key, 2))
                if getattr(net, "dropout", 0.0) > 0 else net)
    (loss, metrics), grads = jax.value_and_grad(batch_loss, argnums=1, has_aux=True)(
        loss_net, main, target, batch, hp, k_loss, state.updates)
    opt = take(state.opt_state, main_i)
    upd, opt = optimizer.update(grads, opt, main, step=state.updates)
    main = optax.apply_updates(main, upd)
    point = {"loss": loss} | metrics
    point[FINITE] = all_finite((main, point))
    return OfflineState(params=put(state.params, main_i, main),
                        opt_state=put(state.opt_state, main_i, opt),
                        updates=state.updates + 1), point

  def train_epoch(state: OfflineState, data: Transitions, key: jax.Array):
    """num_batches updates on a fresh shuffle of `data` (the remainder is left out)."""
    k_perm, k_steps = jax.random.split(key)
    perm = jax.random.permutation(k_perm, data.action.shape[0])
    idx = perm[:num_batches * batch_size].reshape(num_batches, batch_size)
    keys = jax.random.split(k_steps, num_batches)
    return jax.lax.scan(lambda s, xs: _update(s, xs, data), state, (idx, keys))

  return init_state, train_epoch
