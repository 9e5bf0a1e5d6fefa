"""The agents' networks (Flax linen; the training loop only sees (params, state) pytrees).

G (paper Eq. 4) maps the observed history [L] to the state s_t. Three state trackers, the ones
EasyRL4Rec offers its learners (`--which_tracker`), selected by `NetConfig.tracker`:

  sasrec  SASRec (the paper's): item embedding, recency-biased causal self-attention blocks
          from `jaxrec.layers`, final LayerNorm; the state is the output at the newest position.
  avg     the mean of the last `window` item embeddings (EasyRL4Rec's `StateTrackerAvg`, its
          default; a history with no item maps to one learned "empty" vector, as the peer's
          extra embedding row).
  gru     a GRU over the last `window` items (GRU4Rec; the peer's `StateTracker_GRU`); padding
          steps leave the hidden state unchanged; the state is the last hidden state.

`hidden` adds an MLP (Dense + ReLU per entry) on top of the tracker, as tianshou's
`Net(state_dim, hidden_sizes)` sits between the peer's tracker and its heads. Heads over all
items: the actor's logits (Eq. 5) and the critic's Q(s, .) (Eq. 7) or a state value; one
encoder serves every head, as in the paper's A2C.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec.layers import CausalBlock

TRACKERS = ("sasrec", "avg", "gru")


@dataclasses.dataclass(frozen=True)
class NetConfig:
  num_items: int
  history_len: int = 10
  dim: int = 64  # embedding / hidden size of the papers
  num_layers: int = 2
  num_heads: int = 2
  num_tokens: int = 0  # input ids the encoder embeds (0 = num_items; more: user tokens)
  tracker: str = "sasrec"  # one of TRACKERS
  window: int = 0  # newest history items the tracker reads (0 = all history_len)
  hidden: tuple[int, ...] = ()  # MLP widths between the tracker and the heads

  @classmethod
  def from_dict(cls, d: dict) -> "NetConfig":
    """From its `dataclasses.asdict` (a JSON round trip turns tuples into lists); fields a
    file written before they existed lacks keep their defaults."""
    tuples = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, tuple)}
    return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})

  @property
  def span(self) -> int:
    """History positions the tracker reads."""
    return min(self.window or self.history_len, self.history_len)


class StateEncoder(nn.Module):
  """G: history [..., L] int32 (-1 = padding, right-aligned) -> state [..., d] (or
  [..., hidden[-1]] with an MLP)."""
  cfg: NetConfig

  @nn.compact
  def __call__(self, history: jax.Array) -> jax.Array:
    c = self.cfg
    if c.tracker not in TRACKERS:
      raise ValueError(f"tracker must be one of {', '.join(TRACKERS)}, got {c.tracker!r}")
    emb = nn.Embed(c.num_tokens or c.num_items, c.dim,
                   embedding_init=nn.initializers.normal(0.1), name="items")
    flat = history.reshape((-1, history.shape[-1]))[:, -c.span:]  # [B, W]
    valid = flat >= 0
    x = emb(jnp.maximum(flat, 0)) * valid[..., None]  # [B, W, d]
    if c.tracker == "sasrec":
      s = _sasrec(c, x, valid)
    elif c.tracker == "avg":
      count = valid.sum(axis=-1, keepdims=True)
      empty = self.param("empty", nn.initializers.normal(0.01), (c.dim,))
      s = jnp.where(count > 0, x.sum(axis=1) / jnp.maximum(count, 1), empty)
    else:
      cell = nn.GRUCell(c.dim, name="gru")
      h = jnp.zeros((flat.shape[0], c.dim), x.dtype)
      for t in range(flat.shape[1]):  # the window is short (<= history_len): unrolled
        h_new, _ = cell(h, x[:, t])
        h = jnp.where(valid[:, t, None], h_new, h)
      s = h
    for i, width in enumerate(c.hidden):
      s = nn.relu(nn.Dense(width, name=f"mlp_{i}")(s))
    return s.reshape(history.shape[:-1] + s.shape[-1:])


def _sasrec(c: NetConfig, x: jax.Array, valid: jax.Array) -> jax.Array:
  """[B, W, d] embedded items -> [B, d] the last position's output. Blocks before the last
  encode every position; the last one only the newest (`CausalBlock.last`: the state reads
  nothing else), which is exact and saves the FFN and output projection of W - 1 positions."""
  blocks = [CausalBlock(c.dim, c.num_heads, c.history_len, name=f"block_{i}")
            for i in range(c.num_layers)]
  ln = nn.LayerNorm(name="ln_f")

  def one(h, v):
    if not blocks:
      return ln(h[-1])
    for block in blocks[:-1]:
      h = block(h, v)
    return ln(blocks[-1].last(h, v))

  return jax.vmap(one)(x, valid)


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
