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

from typing import Any, Callable

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


def uniform_index(key: jax.Array, n: jax.Array | int) -> jax.Array:
  """An int32 in [0, n) from one draw of 32 random bits (modulo bias < n / 2**32).

  `jax.random.randint` draws twice to be exactly uniform; resets run every step for every
  session, and the PRNG is most of a cheap env step's cost.
  """
  return (jax.random.bits(key, (), jnp.uint32) % jnp.uint32(n)).astype(jnp.int32)


# The reward of the episode's first item (logged, never recommended) in a reward input:
# EasyRL4Rec's StateTracker sets the initial reward to 1 before normalising ("todo: define init
# reward as 1").
INIT_REWARD = 1.0


def normalise_rewards(reward: jax.Array, bounds: tuple[jax.Array, jax.Array]) -> jax.Array:
  """EasyRL4Rec's (r - min) / (max - min), capped at 1 (its initial reward can exceed max)."""
  lo, hi = bounds
  return jnp.minimum((reward - lo) / jnp.maximum(hi - lo, 1e-12), 1.0)


def reward_history(history_len: int, bounds) -> tuple[jax.Array, Callable]:
  """-> (a fresh episode's rewards [L], step(rewards, reward, done) -> rewards): the reward
  buffer beside the observed items, right-aligned like them; a fresh episode holds the
  normalised INIT_REWARD in its newest slot (its first, logged item)."""
  fresh = jnp.zeros((history_len,), jnp.float32).at[-1].set(
      normalise_rewards(jnp.float32(INIT_REWARD), bounds))

  def step(rewards: jax.Array, reward: jax.Array, done: jax.Array) -> jax.Array:
    """rewards [..., L], reward [...], done [...] -> the next observation's rewards."""
    r = normalise_rewards(reward, bounds)[..., None].astype(jnp.float32)
    cont = jnp.concatenate([rewards[..., 1:], r], axis=-1)
    return jnp.where(done[..., None], fresh, cont)

  return fresh, step


def history_input(env, env_params, with_rewards: bool) -> tuple[Callable, Callable]:
  """-> (first(items [N, L]) -> input, next(input, items, reward [N], done [N]) -> input): a
  network's input beside the observed items of `env`: the items themselves, or with
  `with_rewards` (items, their normalised rewards) with the reward buffer of reward_history
  (the env's bounds computed once, here). `done`: the step started a fresh episode."""
  if not with_rewards:
    return (lambda items: items), (lambda prev, items, reward, done: items)
  fresh, step = reward_history(env.history_len, env.reward_bounds(env_params))
  return ((lambda items: (items, jnp.broadcast_to(fresh, items.shape))),
          (lambda prev, items, reward, done: (items, step(prev[1], reward, done))))


WINDOW_RULES = ("last", "peer")


def leave_window(rule: str, window: int, t: jax.Array) -> jax.Array:
  """[W] bool: which slots of the right-aligned `recent` buffer the leave rule reads at step t
  (t = items recommended so far in the episode).

  last: the last W items. peer: EasyRL4Rec's `sequence_action[t - W:t]` with Python's slicing,
  whose negative start for t < W counts from the end of the t-item list, so the window holds
  min(t, W - t) items for t < W (t = 4, 5, 6 read 3, 2, 1 items at W = 7) and W from t = W on.
  """
  if rule == "last":
    count = jnp.minimum(t, window)
  elif rule == "peer":
    count = jnp.where(t < window, jnp.minimum(t, window - t), window)
  else:
    raise ValueError(f"window rule must be one of {WINDOW_RULES}, got {rule!r}")
  age = window - jnp.arange(window)  # slot W-1 holds the newest item (age 1)
  return age <= count


def too_similar(item_vecs: jax.Array, action: jax.Array, recent: jax.Array,
                beta: jax.Array, window: jax.Array | None = None) -> jax.Array:
  """True when `action` is within distance beta (strictly) of a valid item in `recent` [W]
  (and in `window` [W] bool, where given)."""
  diff = item_vecs[jnp.maximum(recent, 0)] - item_vecs[action][None, :]
  dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
  valid = recent >= 0 if window is None else (recent >= 0) & window
  return jnp.any(valid & (dist < beta))


class RecEnv:
  """Base class: subclasses write `_initial`, `_reward` and `_advance` (and their params)."""

  def __init__(self, history_len: int = 10, quit_window: int = 4, window_rule: str = "last"):
    if history_len <= 0 or quit_window <= 0:
      raise ValueError("history_len and quit_window must be positive")
    if window_rule not in WINDOW_RULES:
      raise ValueError(f"window_rule must be one of {WINDOW_RULES}, got {window_rule!r}")
    self.history_len = history_len
    self.quit_window = quit_window
    self.window_rule = window_rule

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

  def all_rewards(self, params, state: EnvState) -> jax.Array:
    """[I] the reward every item would earn in `state` (one session): what the reference
    policies (greedy, planner) read from the true user model."""
    raise NotImplementedError

  def reward_bounds(self, params) -> tuple[jax.Array, jax.Array]:
    """(min, max) of the rewards the env can pay: what a reward input is normalised by (the
    peer's train_min / train_max, test_min / test_max). Not for per-step use where costly."""
    raise NotImplementedError

  def quit_params(self, params) -> QuitParams:
    return params.quit

  @property
  def num_tokens(self) -> int:
    """Ids an observed history can hold: the items, plus one token per user in envs whose
    sessions start from the user (MatrixEnv(user_token=True)); agents embed this many."""
    return self.num_actions

  def _history_after(self, state: EnvState, action: jax.Array) -> jax.Array:
    """The observed history once `action` is consumed."""
    return append(state.history, action)

  # --- API ------------------------------------------------------------------------------------
  def get_obs(self, state: EnvState) -> Observation:
    return Observation(history=state.history, user=state.user, step=state.t)

  def _fresh(self, user, first, model) -> EnvState:
    history = jnp.full((self.history_len,), -1, jnp.int32).at[-1].set(first)
    return EnvState(history=history, recent=jnp.full((self.quit_window,), -1, jnp.int32),
                    user=jnp.asarray(user, jnp.int32), t=jnp.int32(0), ret=jnp.float32(0.0),
                    model=model)

  def reset_env(self, key: jax.Array, params) -> tuple[Observation, EnvState]:
    state = self._fresh(*self._initial(key, params))
    return self.get_obs(state), state

  def _respond(self, params, state: EnvState, action: jax.Array):
    """The user's response to `action`: reward, done, info and the continued state (model not
    yet advanced)."""
    q = self.quit_params(params)
    reward = self._reward(params, state, action).astype(jnp.float32)
    similar = too_similar(self.item_vectors(params), action, state.recent, q.beta,
                          leave_window(self.window_rule, self.quit_window, state.t))
    low = reward < q.min_reward
    t = state.t + 1
    truncated = t >= q.max_len
    done = low | similar | truncated
    ret = state.ret + reward
    cont = state.replace(history=self._history_after(state, action),
                         recent=append(state.recent, action), t=t, ret=ret)
    info = {"episode_return": ret, "episode_length": t, "quit_low_reward": low,
            "quit_similar": similar, "truncated": truncated}
    return reward, done, info, cont

  def step_env(self, key: jax.Array, state: EnvState, action: jax.Array, params):
    """One step without reset (the episode goes on past done)."""
    del key  # the response model is deterministic given the state; kept for the API
    action = action.astype(jnp.int32)
    reward, done, info, cont = self._respond(params, state, action)
    new = cont.replace(model=self._advance(params, state, action))
    return self.get_obs(new), new, reward, done, info

  def _advance_or_reset(self, key, params, state: EnvState, action, done):
    """-> (user, first item, model state) of the next step: a fresh episode's where done.

    Generic: compute both and select. Envs whose model step can start an episode itself
    override this to do one pass instead of two (SequentialEnv)."""
    user, first, model = self._initial(key, params)
    advanced = self._advance(params, state, action)
    pick = lambda a, b: jax.lax.select(jnp.broadcast_to(done, a.shape), a, b)
    return user, first, jax.tree_util.tree_map(pick, model, advanced)

  def reset(self, key: jax.Array, params) -> tuple[Observation, EnvState]:
    return self.reset_env(key, params)

  def step(self, key: jax.Array, state: EnvState, action: jax.Array, params):
    """One step with auto-reset: on done, the returned obs/state are a fresh episode's, while
    reward, done and info describe the finished step. `key` only feeds the reset."""
    action = action.astype(jnp.int32)
    reward, done, info, cont = self._respond(params, state, action)
    user, first, model = self._advance_or_reset(key, params, state, action, done)
    fresh = self._fresh(user, first, None)
    pick = lambda a, b: jnp.where(done, a, b)
    new = EnvState(history=pick(fresh.history, cont.history),
                   recent=pick(fresh.recent, cont.recent), user=pick(fresh.user, cont.user),
                   t=pick(fresh.t, cont.t), ret=pick(fresh.ret, cont.ret), model=model)
    return self.get_obs(new), new, reward, done, info
