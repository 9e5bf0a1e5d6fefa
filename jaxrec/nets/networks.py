"""The agents' networks (Flax linen; the training loop only sees (params, state) pytrees).

G (paper Eq. 4): SASRec over the observed history [L] (item embedding, recency-biased causal
self-attention blocks from `jaxrec.layers`, final LayerNorm); the state s_t is the output at the
newest position. Heads over all items: the actor's logits (Eq. 5) and the critic's Q(s, .)
(Eq. 7). One encoder serves both heads, as in the paper's A2C.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec.layers import CausalBlock


@dataclasses.dataclass(frozen=True)
class NetConfig:
  num_items: int
  history_len: int = 10
  dim: int = 64  # embedding / hidden size of the papers
  num_layers: int = 2
  num_heads: int = 2
  num_tokens: int = 0  # input ids the encoder embeds (0 = num_items; more: user tokens)


class StateEncoder(nn.Module):
  """G: history [..., L] int32 (-1 = padding, right-aligned) -> state [..., d]."""
  cfg: NetConfig

  @nn.compact
  def __call__(self, history: jax.Array) -> jax.Array:
    c = self.cfg
    emb = nn.Embed(c.num_tokens or c.num_items, c.dim, embedding_init=nn.initializers.normal(0.1), name="items")
    blocks = [CausalBlock(c.dim, c.num_heads, c.history_len, name=f"block_{i}")
              for i in range(c.num_layers)]
    ln = nn.LayerNorm(name="ln_f")

    def one(h):
      valid = h >= 0
      x = emb(jnp.maximum(h, 0)) * valid[:, None]
      for block in blocks:
        x = block(x, valid)
      return ln(x[-1])

    flat = history.reshape((-1, history.shape[-1]))
    out = jax.vmap(one)(flat)
    return out.reshape(history.shape[:-1] + (c.dim,))


def init_params(net: nn.Module, key: jax.Array):
  """The params of any of these networks (their `cfg` a NetConfig), initialised on one empty
  history: the input every head takes."""
  return net.init(key, jnp.full((1, net.cfg.history_len), -1, jnp.int32))


class ActorCritic(nn.Module):
  """history -> (actor logits [..., I], Q values [..., I])."""
  cfg: NetConfig

  @nn.compact
  def __call__(self, history: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = StateEncoder(self.cfg, name="encoder")(history)
    logits = nn.Dense(self.cfg.num_items, name="actor")(s)
    q = nn.Dense(self.cfg.num_items, name="critic")(s)
    return logits, q


class ActorValue(nn.Module):
  """history -> (actor logits [..., I], state value V(s) [...]): the actor-critic of A2C as
  tianshou / EasyRL4Rec build it (a scalar critic), with the encoder and actor of ActorCritic
  under the same names."""
  cfg: NetConfig

  @nn.compact
  def __call__(self, history: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = StateEncoder(self.cfg, name="encoder")(history)
    logits = nn.Dense(self.cfg.num_items, name="actor")(s)
    v = nn.Dense(1, name="value")(s)[..., 0]
    return logits, v


class QNetwork(nn.Module):
  """history -> Q values [..., I] (DQN)."""
  cfg: NetConfig

  @nn.compact
  def __call__(self, history: jax.Array) -> jax.Array:
    s = StateEncoder(self.cfg, name="encoder")(history)
    return nn.Dense(self.cfg.num_items, name="q")(s)
