"""Plain-NumPy, one-session-at-a-time versions of the simulators.

They are what the peers run (EasyRL4Rec / tianshou step a DummyVectorEnv of Python envs, one
session after the other) and so the baseline of `experiments.bench_envs`; they are also the
independent reference that the JAX envs are tested against. Host-side Python: not jittable.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxrec.envs.matrix import MatrixParams
from jaxrec.envs.sequential import SequentialEnv, SequentialParams


def _np(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def _layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu(x):  # flax.linen.gelu's default tanh approximation
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _dense(x, p):
  return x @ p["kernel"] + p["bias"]


class _Session:
  """The quit rule and bookkeeping shared by both reference envs."""

  def __init__(self, history_len, quit_window, item_vecs, quit, window_rule="last"):
    self.history_len, self.quit_window = history_len, quit_window
    self.window_rule = window_rule
    self.item_vecs = item_vecs
    self.beta, self.min_reward = float(quit.beta), float(quit.min_reward)
    self.max_len = int(quit.max_len)

  def _start(self, first):
    self.history = [first] if first >= 0 else []
    self.recent = []
    self.sequence = []  # every item recommended in the episode
    self.t, self.ret = 0, 0.0

  def _window(self):
    if self.window_rule == "peer":  # EasyRL4Rec CoatEnv, literally (negative starts included)
      return [] if self.t == 0 else self.sequence[self.t - self.quit_window:self.t]
    return self.recent

  def _finish(self, action, reward):
    close = any(np.linalg.norm(self.item_vecs[action] - self.item_vecs[r]) < self.beta
                for r in self._window())
    self.t += 1
    self.ret += reward
    done = reward < self.min_reward or close or self.t >= self.max_len
    self.history = (self.history + [action])[-self.history_len:]
    self.recent = (self.recent + [action])[-self.quit_window:]
    self.sequence.append(action)
    return done

  def obs_history(self):
    h = np.full(self.history_len, -1, np.int32)
    if self.history:
      h[-len(self.history):] = self.history
    return h


class NumpySequentialEnv(_Session):
  """One session of SequentialEnv: reset(item) / step(action) -> (reward, done)."""

  def __init__(self, env: SequentialEnv, params: SequentialParams):
    super().__init__(env.history_len, env.quit_window, np.asarray(params.item_vecs), params.quit)
    c = env.model_cfg
    self.cfg = c
    p = _np(params.model)["params"]
    self.emb, self.bias_i = p["item_emb"]["embedding"], p["item_bias"]
    self.blocks = [p[f"blocks_{i}"] for i in range(c.num_layers)]
    self.ln_f = p["ln_f"]
    self.center, self.scale = float(params.center), float(params.scale)
    self.reward_max = float(params.reward_max)
    self.init_items = np.asarray(params.init_items)

  def reset(self, rng: np.random.Generator, item: int | None = None):
    if item is None:
      item = int(self.init_items[rng.integers(len(self.init_items))])
    self._start(item)
    c = self.cfg
    self.k = [[] for _ in range(c.num_layers)]  # per layer: list of [H, dh], oldest first
    self.v = [[] for _ in range(c.num_layers)]
    self._encode(item)
    return self.obs_history()

  def _encode(self, item):
    c = self.cfg
    heads, dh = c.num_heads, c.dim // c.num_heads
    x = self.emb[item]
    for li, p in enumerate(self.blocks):
      q, k, v = np.split(_dense(_layer_norm(x, p["ln_attn"]), p["qkv"]), 3)
      self.k[li] = (self.k[li] + [k.reshape(heads, dh)])[-c.window:]
      self.v[li] = (self.v[li] + [v.reshape(heads, dh)])[-c.window:]
      keys, vals = np.stack(self.k[li]), np.stack(self.v[li])  # [n, H, dh]
      dist = np.arange(len(keys))[::-1]
      logits = np.einsum("hd,jhd->hj", q.reshape(heads, dh), keys) / math.sqrt(dh)
      logits = logits - p["slopes"][:, None] * dist[None]
      w = np.exp(logits - logits.max(-1, keepdims=True))
      w /= w.sum(-1, keepdims=True)
      y = np.einsum("hj,jhd->hd", w, vals).reshape(c.dim)
      x = x + _dense(y, p["out"])
      x = x + _dense(_gelu(_dense(_layer_norm(x, p["ln_ffn"]), p["ff_in"])), p["ff_out"])
    self.h = _layer_norm(x, self.ln_f)

  def step(self, action: int):
    s = float(self.h @ self.emb[action] + self.bias_i[action])
    reward = self.reward_max / (1 + math.exp(-(s - self.center) / self.scale))
    done = self._finish(action, reward)
    self._encode(action)
    return self.obs_history(), reward, done


class NumpyMatrixEnv(_Session):
  """One session of MatrixEnv."""

  def __init__(self, env, params: MatrixParams):
    super().__init__(env.history_len, env.quit_window, np.asarray(params.item_vecs), params.quit,
                     env.window_rule)
    self.table = np.asarray(params.table)

  def reset(self, rng: np.random.Generator, user: int | None = None):
    self.user = int(rng.integers(self.table.shape[0])) if user is None else user
    self._start(-1)
    return self.obs_history()

  def step(self, action: int):
    reward = float(self.table[self.user, action])
    done = self._finish(action, reward)
    return self.obs_history(), reward, done
