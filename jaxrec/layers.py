"""Building blocks shared by the user models and the agents' encoders (Flax linen).

`CausalBlock` is a pre-LN transformer block whose attention is banded-causal (position i sees
i-window+1 .. i) with a per-head recency bias (ALiBi) instead of absolute position embeddings.
That choice makes a streaming encoder exact: a key/value computed for an item never changes when
the window slides, so an environment can keep a per-session KV cache and encode one new item per
step (`step`) with the same result as re-encoding the whole window (`__call__`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

NEG_INF = -1e9


def alibi_slopes(num_heads: int) -> jnp.ndarray:
  """[H] the geometric slopes of ALiBi (Press et al. 2022)."""
  return jnp.asarray([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)])


class CausalBlock(nn.Module):
  """One transformer block: x + MHA(LN(x)), then x + FFN(LN(x)).

  dropout > 0 (SASRec's, Kang & McAuley 2018, as the SQN authors' SASRec applies it): on the
  attention weights and after each of the feed-forward's two layers, only in a call given a
  PRNG key `rng` (training); without one, or with dropout 0 (the default), the block computes
  exactly what it did before the option existed. The key is an argument, not a Flax rng
  stream, so a caller that vmaps the block over examples gives each its own key."""
  dim: int
  num_heads: int
  window: int
  ffn_mult: int = 1  # SASRec: a point-wise d -> d -> d feed-forward
  dropout: float = 0.0

  def setup(self):
    if self.dim % self.num_heads:
      raise ValueError(f"dim {self.dim} not divisible by num_heads {self.num_heads}")
    self.ln_attn = nn.LayerNorm()
    self.qkv = nn.Dense(3 * self.dim)
    self.out = nn.Dense(self.dim)
    self.ln_ffn = nn.LayerNorm()
    self.ff_in = nn.Dense(self.ffn_mult * self.dim)
    self.ff_out = nn.Dense(self.dim)
    self.slopes = self.param("slopes", lambda _: alibi_slopes(self.num_heads))

  def _split(self, x):
    q, k, v = jnp.split(self.qkv(self.ln_attn(x)), 3, axis=-1)
    shape = x.shape[:-1] + (self.num_heads, self.dim // self.num_heads)
    return q.reshape(shape), k.reshape(shape), v.reshape(shape)

  def _drop(self, x: jax.Array, rng: jax.Array | None) -> jax.Array:
    if self.dropout == 0 or rng is None:
      return x
    keep = jax.random.bernoulli(rng, 1.0 - self.dropout, x.shape)
    return jnp.where(keep, x / (1.0 - self.dropout), 0.0)

  def _keys(self, rng: jax.Array | None) -> tuple:
    """(attention, feed-forward 1, feed-forward 2) dropout keys, or Nones."""
    if self.dropout == 0 or rng is None:
      return None, None, None
    return tuple(jax.random.split(rng, 3))

  def _weights(self, logits: jax.Array, dist: jax.Array, allowed: jax.Array,
               rng: jax.Array | None = None) -> jax.Array:
    """Attention weights from query-key logits [H, ..., J]: the ALiBi bias -slope_h * dist
    [..., J] (key age), keys not `allowed` [..., J] masked, softmax over the keys."""
    slopes = self.slopes.reshape((-1,) + (1,) * dist.ndim)
    biased = logits - slopes * dist[None].astype(logits.dtype)
    return self._drop(jax.nn.softmax(jnp.where(allowed[None], biased, NEG_INF), axis=-1), rng)

  def _ffn(self, x, rngs=(None, None)):
    h = self._drop(nn.gelu(self.ff_in(self.ln_ffn(x))), rngs[0])
    return x + self._drop(self.ff_out(h), rngs[1])

  def __call__(self, x: jax.Array, valid: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """x: [T, d]; valid: [T] bool (False = padding); rng: dropout key (training) or None.
    Returns [T, d]."""
    k_attn, *k_ffn = self._keys(rng)
    t = x.shape[0]
    q, k, v = self._split(x)  # [T, H, dh]
    dist = jnp.arange(t)[:, None] - jnp.arange(t)[None, :]  # i - j
    allowed = (dist >= 0) & (dist < self.window) & valid[None, :]
    attn = self._weights(jnp.einsum("ihd,jhd->hij", q, k) / math.sqrt(q.shape[-1]), dist,
                         allowed, k_attn)
    y = jnp.einsum("hij,jhd->ihd", attn, v).reshape(t, self.dim)
    return self._ffn(x + self.out(y), k_ffn)

  def last(self, x: jax.Array, valid: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """`__call__(x, valid)[-1]` computed for the newest position only: keys and values of all
    T positions, the query, attention, output projection and FFN of the last (the same params,
    the query's columns of the fused projection applied to one row). x: [T, d]; returns [d]."""
    t, d = x.shape[0], self.dim
    k_attn, *k_ffn = self._keys(rng)
    h = self.ln_attn(x)
    self.qkv(h[-1:])  # creates the projection's params at init; dead code (removed) otherwise
    w, b = self.qkv.variables["params"]["kernel"], self.qkv.variables["params"]["bias"]
    heads = (self.num_heads, d // self.num_heads)
    q = (h[-1] @ w[:, :d] + b[:d]).reshape(heads)  # the newest position's query only
    k, v = jnp.split(h @ w[:, d:] + b[d:], 2, axis=-1)
    k, v = k.reshape((t,) + heads), v.reshape((t,) + heads)
    dist = (t - 1) - jnp.arange(t)
    allowed = (dist < self.window) & valid
    attn = self._weights(jnp.einsum("hd,jhd->hj", q, k) / math.sqrt(q.shape[-1]), dist,
                         allowed, k_attn)
    y = jnp.einsum("hj,jhd->hd", attn, v).reshape(self.dim)
    return self._ffn(x[-1] + self.out(y), k_ffn)

  def step(self, x: jax.Array, k_cache: jax.Array, v_cache: jax.Array, valid: jax.Array,
           slot: jax.Array):
    """Encodes one new item against a ring-buffer cache of the previous window-1 items.

    x: [d] the new item's input; k_cache, v_cache: [H, W, dh] ring buffers; valid: [W] bool
    (True where a slot holds an item, the new one's included); slot: int32, where the new
    item's key and value go. A slot's age is (slot - j) mod W, so the ALiBi bias needs no
    ordered cache: writing one slot in place of shifting the window, and keeping heads
    outermost (the batched dots' layout), is what makes a vmapped step cheap.
    Returns (y [d], k_cache, v_cache).
    """
    q, k, v = self._split(x)  # [H, dh]
    here = (jnp.arange(self.window) == slot)[None, :, None]
    k_cache = jnp.where(here, k[:, None], k_cache)
    v_cache = jnp.where(here, v[:, None], v_cache)
    dist = ((slot - jnp.arange(self.window)) % self.window).astype(x.dtype)
    attn = self._weights(jnp.einsum("hd,hjd->hj", q, k_cache) / math.sqrt(q.shape[-1]), dist,
                         valid)
    y = jnp.einsum("hj,hjd->hd", attn, v_cache).reshape(self.dim)
    return self._ffn(x + self.out(y)), k_cache, v_cache
