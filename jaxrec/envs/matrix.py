"""MatrixEnv: the Coat simulator. The episode starts from a user drawn uniformly from the split;
the reward of recommending item a is the DeepFM rating r(user, a), precomputed for every pair
(one gather per step: the user model has no per-session state)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxrec.envs.base import QuitParams, RecEnv, uniform_index


@struct.dataclass
class MatrixParams:
  table: jax.Array  # [U, I] float32 predicted rating of each (user, item)
  item_vecs: jax.Array  # [I, d] distance space of the quit rule (DeepFM item embeddings)
  quit: QuitParams


class MatrixEnv(RecEnv):

  def __init__(self, num_items: int, history_len: int = 10, quit_window: int = 4,
               window_rule: str = "last"):
    super().__init__(history_len, quit_window, window_rule)
    self._num_items = num_items

  def _initial(self, key, params: MatrixParams):
    user = uniform_index(key, params.table.shape[0])
    return user, jnp.int32(-1), ()

  def _reward(self, params: MatrixParams, state, action):
    return params.table[state.user, action]

  def all_rewards(self, params: MatrixParams, state):
    return params.table[state.user]

  def _advance(self, params, state, action):
    return ()

  def item_vectors(self, params: MatrixParams):
    return params.item_vecs

  @property
  def num_actions(self) -> int:
    return self._num_items
