"""SequentialEnv: the LFM / Industry simulator. The episode starts from an item drawn from the
split's interactions; the reward of recommending item a is the SASRec scorer's calibrated score
of a after the session's history; a becomes the next consumed item.

Reward mapping (a parameter, fitted at build time; see `jaxrec.envs.build`):
  r = reward_max * sigmoid((score - center) / scale)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxrec.envs.base import QuitParams, RecEnv, uniform_index
from jaxrec.usermodels.sequential import SeqConfig, SeqScorer, item_scores


@struct.dataclass
class SequentialParams:
  model: dict  # SeqScorer params
  center: jax.Array  # float: score mapped to reward_max / 2
  scale: jax.Array  # float > 0
  reward_max: jax.Array  # float
  quit: QuitParams
  init_items: jax.Array  # [M] int32 initial items, sampled uniformly (so by popularity)
  item_vecs: jax.Array  # [I, d] distance space of the quit rule


class SequentialEnv(RecEnv):
  """Static shapes only; every array lives in SequentialParams."""

  def __init__(self, model_cfg: SeqConfig, history_len: int = 10, quit_window: int = 4):
    super().__init__(history_len, quit_window)
    self.model_cfg = model_cfg
    self.model = SeqScorer(model_cfg)

  def make_params(self, model_params, center, scale, reward_max, quit: QuitParams,
                  init_items, item_vecs=None) -> SequentialParams:
    emb = model_params["params"]["item_emb"]["embedding"]
    return SequentialParams(
        model=model_params, center=jnp.float32(center), scale=jnp.float32(scale),
        reward_max=jnp.float32(reward_max), quit=quit,
        init_items=jnp.asarray(init_items, jnp.int32),
        item_vecs=emb if item_vecs is None else jnp.asarray(item_vecs))

  def _draw_item(self, key, params: SequentialParams):
    return params.init_items[uniform_index(key, params.init_items.shape[0])]

  def _initial(self, key, params: SequentialParams):
    item = self._draw_item(key, params)
    empty = self.model.apply(params.model, method=SeqScorer.empty_cache)
    return jnp.int32(-1), item, self.model.apply(params.model, empty, item, method=SeqScorer.step)

  def _advance_or_reset(self, key, params: SequentialParams, state, action, done):
    # One pass through the model either way: a finished session forgets its cache (valid=False
    # everywhere; masked slots are never read) and consumes a fresh initial item instead.
    first = self._draw_item(key, params)
    cache = state.model._replace(valid=state.model.valid & ~done)
    item = jnp.where(done, first, action)
    return (jnp.int32(-1), first,
            self.model.apply(params.model, cache, item, method=SeqScorer.step))

  def score(self, params: SequentialParams, h: jax.Array, action: jax.Array) -> jax.Array:
    return item_scores(params.model, h, action)

  def reward_of_score(self, params: SequentialParams, s: jax.Array) -> jax.Array:
    return params.reward_max * jax.nn.sigmoid((s - params.center) / params.scale)

  def _reward(self, params: SequentialParams, state, action):
    return self.reward_of_score(params, self.score(params, state.model.h, action))

  def reward_bounds(self, params: SequentialParams):
    return jnp.float32(0.0), params.reward_max

  def all_rewards(self, params: SequentialParams, state):
    p = params.model["params"]
    s = state.model.h @ p["item_emb"]["embedding"].T + p["item_bias"]
    return self.reward_of_score(params, s)

  def _advance(self, params: SequentialParams, state, action):
    return self.model.apply(params.model, state.model, action, method=SeqScorer.step)

  def item_vectors(self, params: SequentialParams):
    return params.item_vecs

  @property
  def num_actions(self) -> int:
    return self.model_cfg.num_items
