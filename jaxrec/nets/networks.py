"""The agents' networks (Flax linen; the training loop only sees (params, state) pytrees).

G (paper Eq. 4) maps the observed history [L] to the state s_t. The state trackers EasyRL4Rec
offers its learners (`--which_tracker`), selected by `NetConfig.tracker`:

  sasrec  SASRec (the paper's): item embedding, recency-biased causal self-attention blocks
          from `jaxrec.layers`, final LayerNorm; the state is the output at the newest position.
  avg     the mean of the last `window` item embeddings (EasyRL4Rec's `StateTrackerAvg`, its
          default; a history with no item maps to one learned "empty" vector, as the peer's
          extra embedding row).
  gru     a GRU over the last `window` items (GRU4Rec; the peer's `StateTracker_GRU`); padding
          steps leave the hidden state unchanged; the state is the last hidden state.
  caser   Caser (the peer's `StateTracker_Caser`): over the window's items, oldest first and
          zero-padded at the end as the peer lays them out, 16 horizontal filters of each
          height 2, 3, 4 spanning the embedding (ReLU, max over time) and one vertical filter
          over the window (ReLU); the state is both, concatenated (d + 48). The peer's dropout
          (0.1, training only) is not applied: jaxrec's networks are deterministic.
  nextitnet  NextItNet (the peer's `StateTracker_NextItNet`): residual blocks of two causal
          dilated convolutions (kernel 3, dilations r and 2r for r in 1, 2, 1, 2, 1, 2), each
          followed by LayerNorm and ReLU, over the same oldest-first layout, masked after each
          block; the state is the output at the newest item (zeros for a history with none).

Rewards as an input (`reward_handle="cat"`, EasyRL4Rec's `--reward_handle cat`): the network
then takes `(items [..., L] int32, rewards [..., L] float32)` instead of the item array, the
rewards the history's items earned, normalised to [0, 1] by the env's reward bounds
(`jaxrec.envs.base.reward_history`). Each position's input is its item embedding with its reward appended: avg
averages the [d + 1] vectors (the peer's state of dim + 1), gru reads them as its input, and
sasrec, whose blocks need width d, adds a learned d-vector times the reward (concatenation
followed by the embedding's linear map). User-token positions carry no reward.

`hidden` adds an MLP (Dense + ReLU per entry) on top of the tracker, as tianshou's
`Net(state_dim, hidden_sizes)` sits between the peer's tracker and its heads. Heads over all
items: the actor's logits (Eq. 5) and the critic's Q(s, .) (Eq. 7) or a state value; one
encoder serves every head, as in the paper's A2C.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.layers import CausalBlock

TRACKERS = ("sasrec", "avg", "gru", "caser", "nextitnet")
# Caser: the peer's defaults (filter_sizes=[2, 3, 4], num_filters=16); NextItNet: its
# dilations "[1, 2, 1, 2, 1, 2]" and kernel_size=3.
CASER_HEIGHTS, CASER_FILTERS = (2, 3, 4), 16
NEXTITNET_DILATIONS, NEXTITNET_KERNEL = (1, 2, 1, 2, 1, 2), 3
REWARD_HANDLES = ("none", "cat")


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
  reward_handle: str = "none"  # one of REWARD_HANDLES

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

  @property
  def with_rewards(self) -> bool:
    return self.reward_handle == "cat"

  def example_input(self, batch: tuple[int, ...] = ()):
    """An empty history (the input every network takes), with rewards where they are read."""
    items = jnp.full(batch + (self.history_len,), -1, jnp.int32)
    return (items, jnp.zeros(items.shape, jnp.float32)) if self.with_rewards else items


class StateEncoder(nn.Module):
  """G: history [..., L] int32 (-1 = padding, right-aligned), or (history, rewards [..., L])
  with `reward_handle="cat"` -> state [..., d] (or [..., hidden[-1]] with an MLP).

  dropout (sasrec only; the offline learners' --dropout, the SQN authors' SASRec): on the
  embedded input and inside each block (jaxrec.layers.CausalBlock), applied only when the
  call is given a PRNG key `rng` (training), each example its own mask. The other trackers
  ignore it (the authors' GRU has none). The default 0, or a call without a key, computes
  exactly what the encoder computed before the option existed (the online agents')."""
  cfg: NetConfig
  dropout: float = 0.0

  @nn.compact
  def __call__(self, history, rng: jax.Array | None = None) -> jax.Array:
    c = self.cfg
    if c.tracker not in TRACKERS:
      raise ValueError(f"tracker must be one of {', '.join(TRACKERS)}, got {c.tracker!r}")
    if c.reward_handle not in REWARD_HANDLES:
      raise ValueError(f"reward_handle must be one of {', '.join(REWARD_HANDLES)}, got "
                       f"{c.reward_handle!r}")
    if isinstance(history, tuple) != c.with_rewards:
      raise ValueError(f"reward_handle={c.reward_handle!r} takes "
                       f"{'(items, rewards)' if c.with_rewards else 'the item array'}")
    history, rewards = history if c.with_rewards else (history, None)
    emb = nn.Embed(c.num_tokens or c.num_items, c.dim,
                   embedding_init=nn.initializers.normal(0.1), name="items")
    flat = history.reshape((-1, history.shape[-1]))[:, -c.span:]  # [B, W]
    valid = flat >= 0
    x = emb(jnp.maximum(flat, 0)) * valid[..., None]  # [B, W, d]
    if rewards is not None:  # user tokens (ids >= num_items) carry no reward
      r = rewards.reshape((-1, rewards.shape[-1]))[:, -c.span:]
      r = jnp.where(valid & (flat < c.num_items), r, 0.0)[..., None].astype(x.dtype)
      if c.tracker == "sasrec":
        x = x + r * self.param("reward", nn.initializers.normal(0.1), (c.dim,))
      else:
        x = jnp.concatenate([x, r], axis=-1)  # [B, W, d + 1]
    width = x.shape[-1]
    if c.tracker == "sasrec" and self.dropout > 0 and rng is not None:
      k_in, rng = jax.random.split(rng)
      keep = jax.random.bernoulli(k_in, 1.0 - self.dropout, x.shape)
      x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
    else:
      rng = None
    if c.tracker == "sasrec":
      s = _sasrec(c, x, valid, self.dropout, rng)
    elif c.tracker == "avg":
      count = valid.sum(axis=-1, keepdims=True)
      empty = self.param("empty", nn.initializers.normal(0.01), (width,))
      s = jnp.where(count > 0, x.sum(axis=1) / jnp.maximum(count, 1), empty)
    elif c.tracker == "caser":
      s = _caser(self, *_oldest_first(x, valid))
    elif c.tracker == "nextitnet":
      s = _nextitnet(*_oldest_first(x, valid))
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


def _oldest_first(x: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[B, W, C] right-aligned (padding first) -> (the valid rows moved to the front in their
  order, padding zeros after them [B, W, C]; the count of valid rows [B]): the peer's layout
  (`convert_to_k_state_embedding`: reversed to oldest first, zero-padded at the end)."""
  # Each valid row's destination is its rank among the valid ones; padding rows are dropped
  # (zeros). A [W, W] one-hot permutation per session applied as a batched matmul: XLA's CPU
  # sort and gather of many tiny rows cost more than the whole avg tracker.
  w = x.shape[1]
  dest = jnp.where(valid, jnp.cumsum(valid, axis=1) - 1, w)  # w: nowhere
  perm = (dest[:, None, :] == jnp.arange(w)[None, :, None]).astype(x.dtype)  # [B, to, from]
  return jnp.einsum("bts,bsc->btc", perm, x), valid.sum(axis=1)


class TapConv(nn.Module):
  """A 1-D convolution over time [B, W, C] -> [B, W', F] as a sum of k matmuls of shifted
  views (one per tap), with nn.Conv's parameter layout (kernel [k, C, F], bias [F]).
  `causal`: (k - 1) * dilation zero rows in front, W' = W; else VALID, W' = W - (k - 1) *
  dilation. XLA's CPU convolution of these tiny shapes (and its gradient) ran at under 1% of
  the matmul rate; the taps are plain GEMMs."""
  features: int
  taps: int
  dilation: int = 1
  causal: bool = False
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, dil = self.taps, self.dilation
    kernel = self.param("kernel", self.kernel_init, (k, x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    span = (k - 1) * dil
    if self.causal:
      x = jnp.pad(x, ((0, 0), (span, 0), (0, 0)))
    out_len = x.shape[1] - span
    return sum(x[:, j * dil:j * dil + out_len] @ kernel[j] for j in range(k)) + bias


def _caser(module: nn.Module, x: jax.Array, count: jax.Array) -> jax.Array:
  """[B, W, C] oldest-first -> [B, C + 48]: horizontal and vertical convolutions (module
  docstring), the peer's init (Xavier normal weights, biases 0.1)."""
  del count  # the peer convolves the zero padding too
  w = x.shape[1]
  if w < max(CASER_HEIGHTS):
    raise ValueError(f"tracker caser needs a window of at least {max(CASER_HEIGHTS)} items "
                     f"(its tallest filter), got {w}")
  init = dict(kernel_init=nn.initializers.xavier_normal(),
              bias_init=nn.initializers.constant(0.1))
  pooled = [nn.relu(TapConv(CASER_FILTERS, h, name=f"caser_h{h}", **init)(x)).max(axis=1)
            for h in CASER_HEIGHTS]
  # Conv2d(1, 1, (W, 1)): one weight per window position, shared by every channel (Xavier
  # normal: fan in = fan out = W).
  v_w = module.param("caser_v_kernel", nn.initializers.normal(np.sqrt(1.0 / w)), (w,))
  v_b = module.param("caser_v_bias", nn.initializers.constant(0.1), ())
  vertical = nn.relu(jnp.einsum("btc,t->bc", x, v_w) + v_b)
  return jnp.concatenate(pooled + [vertical], axis=-1)


def _nextitnet(x: jax.Array, count: jax.Array) -> jax.Array:
  """[B, W, C] oldest-first -> [B, C]: the residual causal dilated convolutions (module
  docstring), the output at the newest item."""
  width, mask = x.shape[-1], (jnp.arange(x.shape[1]) < count[:, None])[..., None]
  for i, r in enumerate(NEXTITNET_DILATIONS):
    h = x
    for j, dil in enumerate((r, 2 * r)):
      h = TapConv(width, NEXTITNET_KERNEL, dil, causal=True,
                  name=f"nextitnet_{i}_conv{j + 1}")(h)
      h = nn.relu(nn.LayerNorm(epsilon=1e-5, name=f"nextitnet_{i}_ln{j + 1}")(h))
    x = (x + h) * mask
  last = jnp.take_along_axis(x, jnp.maximum(count - 1, 0)[:, None, None], axis=1)[:, 0]
  return jnp.where(count[:, None] > 0, last, 0.0)


def _sasrec(c: NetConfig, x: jax.Array, valid: jax.Array, dropout: float = 0.0,
            rng: jax.Array | None = None) -> jax.Array:
  """[B, W, d] embedded items -> [B, d] the last position's output. Blocks before the last
  encode every position; the last one only the newest (`CausalBlock.last`: the state reads
  nothing else), which is exact and saves the FFN and output projection of W - 1 positions.
  rng: dropout key (training; split per example and block) or None."""
  blocks = [CausalBlock(c.dim, c.num_heads, c.history_len, dropout=dropout, name=f"block_{i}")
            for i in range(c.num_layers)]
  ln = nn.LayerNorm(name="ln_f")

  def one(h, v, k=None):
    if not blocks:
      return ln(h[-1])
    keys = [None] * len(blocks) if k is None else list(jax.random.split(k, len(blocks)))
    for block, kb in zip(blocks[:-1], keys):
      h = block(h, v, kb)
    return ln(blocks[-1].last(h, v, keys[-1]))

  if rng is None:
    return jax.vmap(one)(x, valid)
  return jax.vmap(one)(x, valid, jax.random.split(rng, x.shape[0]))


def init_params(net: nn.Module, key: jax.Array):
  """The params of any of these networks (their `cfg` a NetConfig), initialised on one empty
  history: the input every head takes."""
  return net.init(key, net.cfg.example_input((1,)))


class ActorCritic(nn.Module):
  """history -> (actor logits [..., I], Q values [..., I])."""
  cfg: NetConfig

  @nn.compact
  def __call__(self, history) -> tuple[jax.Array, jax.Array]:
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
  def __call__(self, history) -> tuple[jax.Array, jax.Array]:
    s = StateEncoder(self.cfg, name="encoder")(history)
    logits = nn.Dense(self.cfg.num_items, name="actor")(s)
    v = nn.Dense(1, name="value")(s)[..., 0]
    return logits, v


class QNetwork(nn.Module):
  """history -> Q values [..., I] (DQN)."""
  cfg: NetConfig

  @nn.compact
  def __call__(self, history) -> jax.Array:
    s = StateEncoder(self.cfg, name="encoder")(history)
    return nn.Dense(self.cfg.num_items, name="q")(s)
