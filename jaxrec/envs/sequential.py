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

from jaxrec.envs.base import QuitParams, RecEnv
from jaxrec.usermodels.sequential import SeqCache, SeqConfig, SeqScorer, item_scores


@struct.dataclass
class SequentialParams:
  model: dict  # SeqScorer params
  center: jax.Array  # float: score mapped to reward_max / 2
  scale: jax.Array  # float > 0
  reward_max: jax.Array  # float
  quit: QuitParams
  init_items: jax.Array  # [M] int32 initial items, sampled uniformly (so by popularity)
  init_k: jax.Array  # [I, layers, H, dh] the KV of a session that consumed only item i
  init_v: jax.Array  # [I, layers, H, dh]
  init_h: jax.Array  # [I, d]
  item_vecs: jax.Array  # [I, d] distance space of the quit rule


class SequentialEnv(RecEnv):
  """Static shapes only; every array lives in SequentialParams."""

  def __init__(self, model_cfg: SeqConfig, history_len: int = 10, quit_window: int = 4):
    super().__init__(history_len, quit_window)
    self.model_cfg = model_cfg
    self.model = SeqScorer(model_cfg)

  def make_params(self, model_params, center, scale, reward_max, quit: QuitParams,
                  init_items, item_vecs=None) -> SequentialParams:
    """Precomputes the one-item caches so a reset is a gather, not a pass through the model."""
    empty = self.model.apply(model_params, method=SeqScorer.empty_cache)
    first = jax.jit(jax.vmap(
        lambda i: self.model.apply(model_params, empty, i, method=SeqScorer.step)))(
            jnp.arange(self.model_cfg.num_items))
    emb = model_params["params"]["item_emb"]["embedding"]
    return SequentialParams(
        model=model_params, center=jnp.float32(center), scale=jnp.float32(scale),
        reward_max=jnp.float32(reward_max), quit=quit,
        init_items=jnp.asarray(init_items, jnp.int32),
        init_k=first.k[:, :, -1], init_v=first.v[:, :, -1], init_h=first.h,
        item_vecs=emb if item_vecs is None else jnp.asarray(item_vecs))

  def _initial(self, key, params: SequentialParams):
    item = params.init_items[jax.random.randint(key, (), 0, params.init_items.shape[0])]
    c = self.model_cfg
    shape = (c.num_layers, c.window, c.num_heads, c.dim // c.num_heads)
    cache = SeqCache(
        k=jnp.zeros(shape).at[:, -1].set(params.init_k[item]),
        v=jnp.zeros(shape).at[:, -1].set(params.init_v[item]),
        valid=jnp.zeros((c.window,), bool).at[-1].set(True),
        h=params.init_h[item])
    return jnp.int32(-1), item, cache

  def score(self, params: SequentialParams, h: jax.Array, action: jax.Array) -> jax.Array:
    return item_scores(params.model, h, action)

  def reward_of_score(self, params: SequentialParams, s: jax.Array) -> jax.Array:
    return params.reward_max * jax.nn.sigmoid((s - params.center) / params.scale)

  def _reward(self, params: SequentialParams, state, action):
    return self.reward_of_score(params, self.score(params, state.model.h, action))

  def _advance(self, params: SequentialParams, state, action):
    return self.model.apply(params.model, state.model, action, method=SeqScorer.step)

  def item_vectors(self, params: SequentialParams):
    return params.item_vecs

  @property
  def num_actions(self) -> int:
    return self.model_cfg.num_items
