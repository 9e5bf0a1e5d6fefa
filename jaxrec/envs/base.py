"""The simulator API shared by every environment (gymnax-shaped, DESIGN.md "Environment API").

  reset(key, params) -> (obs, state)
  step(key, state, action, params) -> (obs, state, reward, done, info)   # auto-resets on done

State and params are `flax.struct` dataclasses; an env object holds only static shapes, so one
compiled step serves every parameter setting (train env, test env). Batching is `jax.vmap`.

A simulator = an initial-state sampler + a response model (the fitted user model) + the quit rule
(BiLLP Sec. 5.1.2): the episode ends when the reward is under `min_reward`, or when the
recommended item lies within distance `beta` of one of the last W recommended items (filter
bubble), or after `max_len` steps (truncation). The reward of the quitting step is counted.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Observation:
  history: jax.Array  # [L] int32 consumed items, oldest first, right-aligned, -1 = padding
  user: jax.Array  # int32 the simulated user's index in its env (-1 where users are not modelled)
  step: jax.Array  # int32 steps taken in this episode


@struct.dataclass
class QuitParams:
  beta: jax.Array  # float: quit when ||v_a - v_recent|| < beta (item-vector distance)
  min_reward: jax.Array  # float: quit when the reward is under this
  max_len: jax.Array  # int32: truncate after this many steps


@struct.dataclass
class EnvState:
  history: jax.Array  # [L] int32
  recent: jax.Array  # [W] int32 last W recommended items, -1 = none yet
  user: jax.Array  # int32
  t: jax.Array  # int32 steps taken
  ret: jax.Array  # float32 return so far
  model: Any  # the response model's per-session state (a pytree; () when stateless)


def append(buf: jax.Array, x: jax.Array) -> jax.Array:
  """Shift left and put x last: the one update of every right-aligned buffer."""
  return jnp.concatenate([buf[1:], x[None].astype(buf.dtype)])


def too_similar(item_vecs: jax.Array, action: jax.Array, recent: jax.Array,
                beta: jax.Array) -> jax.Array:
  """True when `action` is within distance beta of a valid item in `recent` [W]."""
  diff = item_vecs[jnp.maximum(recent, 0)] - item_vecs[action][None, :]
  dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
  return jnp.any((recent >= 0) & (dist < beta))


class RecEnv:
  """Base class: subclasses write `_initial`, `_reward` and `_advance` (and their params)."""

  def __init__(self, history_len: int = 10, quit_window: int = 4):
    if history_len <= 0 or quit_window <= 0:
      raise ValueError("history_len and quit_window must be positive")
    self.history_len = history_len
    self.quit_window = quit_window

  # --- hooks ----------------------------------------------------------------------------------
  def _initial(self, key: jax.Array, params) -> tuple[jax.Array, jax.Array, Any]:
    """-> (user int32, first consumed item int32 or -1, model state)."""
    raise NotImplementedError

  def _reward(self, params, state: EnvState, action: jax.Array) -> jax.Array:
    raise NotImplementedError

  def _advance(self, params, state: EnvState, action: jax.Array) -> Any:
    """The model state after the user consumed `action`."""
    raise NotImplementedError

  def item_vectors(self, params) -> jax.Array:
    raise NotImplementedError

  def quit_params(self, params) -> QuitParams:
    return params.quit

  # --- API ------------------------------------------------------------------------------------
  def get_obs(self, state: EnvState) -> Observation:
    return Observation(history=state.history, user=state.user, step=state.t)

  def reset_env(self, key: jax.Array, params) -> tuple[Observation, EnvState]:
    user, first, model = self._initial(key, params)
    history = jnp.full((self.history_len,), -1, jnp.int32).at[-1].set(first)
    state = EnvState(history=history, recent=jnp.full((self.quit_window,), -1, jnp.int32),
                     user=user.astype(jnp.int32), t=jnp.int32(0), ret=jnp.float32(0.0),
                     model=model)
    return self.get_obs(state), state

  def step_env(self, key: jax.Array, state: EnvState, action: jax.Array, params):
    del key  # the response model is deterministic given the state; kept for the API
    action = action.astype(jnp.int32)
    q = self.quit_params(params)
    reward = self._reward(params, state, action).astype(jnp.float32)
    similar = too_similar(self.item_vectors(params), action, state.recent, q.beta)
    low = reward < q.min_reward
    t = state.t + 1
    truncated = t >= q.max_len
    done = low | similar | truncated
    ret = state.ret + reward
    new = EnvState(history=append(state.history, action), recent=append(state.recent, action),
                   user=state.user, t=t, ret=ret, model=self._advance(params, state, action))
    info = {"episode_return": ret, "episode_length": t, "quit_low_reward": low,
            "quit_similar": similar, "truncated": truncated}
    return self.get_obs(new), new, reward, done, info

  def reset(self, key: jax.Array, params) -> tuple[Observation, EnvState]:
    return self.reset_env(key, params)

  def step(self, key: jax.Array, state: EnvState, action: jax.Array, params):
    """One step with auto-reset: on done, the returned obs/state are a fresh episode's, while
    reward, done and info describe the finished step."""
    key_step, key_reset = jax.random.split(key)
    obs, new, reward, done, info = self.step_env(key_step, state, action, params)
    obs_re, state_re = self.reset_env(key_reset, params)
    pick = lambda a, b: jax.lax.select(jnp.broadcast_to(done, a.shape), a, b)
    state = jax.tree_util.tree_map(pick, state_re, new)
    obs = jax.tree_util.tree_map(pick, obs_re, obs)
    return obs, state, reward, done, info
