"""MatrixEnv: the Coat simulator. The episode starts from a user drawn uniformly from the split;
the reward of recommending item a is the DeepFM rating r(user, a), precomputed for every pair
(one gather per step: the user model has no per-session state).

user_token: the paper's Coat simulator has "the user as the initial state" (Sec. 4.2.1): the
observed history then starts with the token num_items + user, kept in its first slot for the
whole episode while the recommended items scroll through the others, so a policy can
personalise. Off by default (the earlier envs' observations are items only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxrec.envs.base import QuitParams, RecEnv, append, uniform_index


@struct.dataclass
class MatrixParams:
  table: jax.Array  # [U, I] float32 predicted rating of each (user, item)
  item_vecs: jax.Array  # [I, d] distance space of the quit rule (DeepFM item embeddings)
  quit: QuitParams


class MatrixEnv(RecEnv):

  def __init__(self, num_items: int, history_len: int = 10, quit_window: int = 4,
               window_rule: str = "last", num_users: int = 0):
    """num_users > 0: user tokens in the history (module docstring); it must be the params'
    table's row count."""
    super().__init__(history_len, quit_window, window_rule)
    if num_users and history_len < 2:
      raise ValueError("user tokens need history_len >= 2 (the token and an item)")
    self._num_items = num_items
    self.num_users = num_users

  @property
  def num_tokens(self) -> int:
    return self._num_items + self.num_users

  def _initial(self, key, params: MatrixParams):
    user = uniform_index(key, params.table.shape[0])
    first = self._num_items + user if self.num_users else jnp.int32(-1)
    return user, jnp.asarray(first, jnp.int32), ()

  def _history_after(self, state, action):
    h = append(state.history, action)
    if not self.num_users:
      return h
    # The token leaves the last slot after the first step: drop it there, pin it at slot 0
    # (the oldest item, if any, makes room).
    h = jnp.where(h >= self._num_items, -1, h)
    return h.at[0].set(self._num_items + state.user)

  def _reward(self, params: MatrixParams, state, action):
    return params.table[state.user, action]

  def all_rewards(self, params: MatrixParams, state):
    return params.table[state.user]

  def reward_bounds(self, params: MatrixParams):
    return params.table.min(), params.table.max()

  def _advance(self, params, state, action):
    return ()

  def item_vectors(self, params: MatrixParams):
    return params.item_vecs

  @property
  def num_actions(self) -> int:
    return self._num_items
