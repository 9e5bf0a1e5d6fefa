"""SA2C on SASRec in plain PyTorch: the reference of `python -m experiments.bench_offline`.

The same network as jaxrec.offline.networks.SupervisedQNet with the SASRec tracker (jaxrec.nets
StateEncoder, jaxrec.layers.CausalBlock: pre-LN blocks with ALiBi recency bias, the last block
computed for the newest position only, final LayerNorm, ce and Q heads over all items), its
params in the Flax layout (`load_flax` copies a JAX init across), and the same loss
(jaxrec/offline/sa2c.py: ce, double-Q TD loss, the negatives' TD losses, the clipped advantage
weight after the warm-up).

Trained the way the SA2C authors' code trains: a Python loop over minibatches; two network
copies, each with two Adam optimizers (opt1 for the warm-up loss, opt2 after it); each step a
random pick of the main copy; the target copy's Q and the main copy's Q at s' evaluated without
gradient; negatives drawn per step. The minibatches are gathered from tensors with a shuffled
index (the authors sample a pandas replay buffer, which is slower; that cost is not copied).
The encoder's dropout (--dropout, the SQN authors' 0.1) at the same places as the JAX
encoder's, in every training forward (the authors run all of them with is_training=True).
Eager PyTorch, no torch.compile (neither does the authors' code: theirs is TF1 graph mode).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

NEG_INF = -1e9
LN_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon


def layer_norm(x, p, name):
  return F.layer_norm(x, x.shape[-1:], p[f"{name}/scale"], p[f"{name}/bias"], LN_EPS)


def dense(x, p, name):
  return torch.addmm(p[f"{name}/bias"], x.reshape(-1, x.shape[-1]),
                     p[f"{name}/kernel"]).reshape(x.shape[:-1] + (-1,))


class FlaxNamed(torch.nn.Module):
  """A torch module whose parameters carry a Flax tree's paths ("encoder/items/embedding",
  kernels [in, out]), so JAX weights copy in by name (the benchmarks' same-weights checks)."""

  def register_flax(self, shapes: dict) -> None:
    """One zero parameter per path -> shape; ParameterDict keys may not hold "/" or ".", so
    the Flax path is kept in `names`."""
    self.names = sorted(shapes)
    self.p = torch.nn.ParameterDict(
        {n.replace("/", "__"): torch.nn.Parameter(torch.zeros(shapes[n])) for n in self.names})

  def param(self, name: str) -> torch.nn.Parameter:
    return self.p[name.replace("/", "__")]

  def params(self) -> dict:
    return {n: self.param(n) for n in self.names}

  def load_flax(self, flax_params) -> None:
    """Copies a Flax params tree with the same paths into this module."""
    from flax.traverse_util import flatten_dict
    flat = {"/".join(k): v for k, v in flatten_dict(flax_params["params"]).items()}
    if sorted(flat) != self.names:
      raise ValueError(f"param names differ: {sorted(set(flat) ^ set(self.names))}")
    with torch.no_grad():
      for n in self.names:
        self.param(n).copy_(torch.from_numpy(np.array(flat[n])))


class SupervisedQNet(FlaxNamed):
  """history [B, L] int64 (-1 = padding, right-aligned) -> (ce logits [B, I], Q [B, I]); the
  params are named as the Flax tree's paths ("encoder/block_0/qkv/kernel", kernels [in, out])."""

  def __init__(self, num_items: int, history_len: int, dim: int, num_layers: int,
               num_heads: int, dropout: float = 0.0):
    super().__init__()
    self.d, self.h, self.layers, self.window = dim, num_heads, num_layers, history_len
    self.dropout = dropout  # where the JAX encoder drops out; in training mode only
    shapes = {"encoder/items/embedding": (num_items, dim), "encoder/ln_f/scale": (dim,),
              "encoder/ln_f/bias": (dim,), "ce/kernel": (dim, num_items),
              "ce/bias": (num_items,), "q/kernel": (dim, num_items), "q/bias": (num_items,)}
    for i in range(num_layers):
      b = f"encoder/block_{i}"
      shapes |= {f"{b}/slopes": (num_heads,), f"{b}/qkv/kernel": (dim, 3 * dim),
                 f"{b}/qkv/bias": (3 * dim,)}
      for ln in ("ln_attn", "ln_ffn"):
        shapes |= {f"{b}/{ln}/scale": (dim,), f"{b}/{ln}/bias": (dim,)}
      for lin in ("out", "ff_in", "ff_out"):
        shapes |= {f"{b}/{lin}/kernel": (dim, dim), f"{b}/{lin}/bias": (dim,)}
    self.register_flax(shapes)

  def _attend(self, q, k, v, slopes, dist, allowed):
    """q [B, Tq, H, dh], k, v [B, T, H, dh], dist [Tq, T], allowed [B, Tq, T] -> [B, Tq, d]."""
    logits = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
    biased = logits - slopes[None, :, None, None] * dist[None, None].to(logits.dtype)
    attn = self._drop(torch.softmax(torch.where(allowed[:, None], biased, NEG_INF), dim=-1))
    y = torch.einsum("bhij,bjhd->bihd", attn, v)
    return y.reshape(y.shape[0], y.shape[1], self.d)

  def _block(self, x, valid, p, b, last: bool):
    """CausalBlock.__call__ (every position) or .last (the newest only): x [B, T, d]."""
    t, d, heads = x.shape[1], self.d, (self.h, self.d // self.h)
    hn = layer_norm(x, p, f"{b}/ln_attn")
    w, bias = p[f"{b}/qkv/kernel"], p[f"{b}/qkv/bias"]
    rows = hn[:, -1:] if last else hn
    q = (rows @ w[:, :d] + bias[:d]).reshape(rows.shape[:2] + heads)
    k, v = (hn @ w[:, d:] + bias[d:]).split(d, dim=-1)
    k, v = k.reshape(k.shape[:2] + heads), v.reshape(v.shape[:2] + heads)
    pos = torch.arange(t, device=x.device)
    dist = ((t - 1) - pos)[None, :] if last else pos[:, None] - pos[None, :]
    allowed = (dist >= 0) & (dist < self.window)
    allowed = allowed[None] & valid[:, None, :]
    y = self._attend(q, k, v, p[f"{b}/slopes"], dist, allowed)
    h = (x[:, -1:] if last else x) + dense(y, p, f"{b}/out")
    ff = self._drop(F.gelu(dense(layer_norm(h, p, f"{b}/ln_ffn"), p, f"{b}/ff_in"),
                           approximate="tanh"))
    return h + self._drop(dense(ff, p, f"{b}/ff_out"))

  def _drop(self, x):
    return F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x

  def forward(self, history):
    p = self.params()
    valid = history >= 0
    x = self._drop(p["encoder/items/embedding"][history.clamp(min=0)] * valid[..., None])
    for i in range(self.layers):
      x = self._block(x, valid, p, f"encoder/block_{i}", last=i == self.layers - 1)
    s = layer_norm(x[:, -1], p, "encoder/ln_f")
    return dense(s, p, "ce"), dense(s, p, "q")


def sa2c_loss(main: SupervisedQNet, target: SupervisedQNet, batch: dict, negatives,
              warm: bool, gamma: float, neg_reward: float, clip: float):
  """jaxrec/offline/sa2c.py's batch_loss with the negatives given [B, n]: -> (loss, metrics).
  batch: history, action, reward, next_history, done tensors."""
  logits, q = main(batch["history"])
  with torch.no_grad():
    _, q_next_selector = main(batch["next_history"])
    _, q_next_value = target(batch["next_history"])
    _, q_value = target(batch["history"])
  a = batch["action"]
  rows = torch.arange(a.shape[0], device=a.device)
  discount = gamma * (1.0 - batch["done"].to(q.dtype))
  # double Q: the main copy selects the action at s', the target copy evaluates it
  boot = q_next_value[rows, q_next_selector.argmax(dim=1)]
  td_pos = 0.5 * (batch["reward"] + discount * boot - q[rows, a]) ** 2
  # the negatives' targets bootstrap from s itself (snqn.negative_td_loss)
  neg_target = neg_reward + gamma * q_value[rows, q.detach().argmax(dim=1)]
  td_neg = (0.5 * (neg_target[:, None] - q.gather(1, negatives)) ** 2).sum(dim=1)
  ce = torch.logsumexp(logits, dim=1) - logits[rows, a]
  if warm:
    weight = torch.ones_like(ce)
  else:
    qd = q.detach()
    q_a = qd[rows, a]
    adv = q_a - (q_a + qd.gather(1, negatives).sum(dim=1)) / (1 + negatives.shape[1])
    weight = adv.clamp(clip, 10.0) if clip >= 0 else adv
  loss = (weight * ce + td_pos + td_neg).mean()
  return loss, {"ce_loss": (weight * ce).mean(), "q_loss": td_pos.mean(),
                "neg_q_loss": td_neg.mean(), "ce_weight": weight.mean()}


def sample_negatives(gen: torch.Generator, actions, num_items: int, n: int):
  """[B, n]: uniform over the items other than the logged one (as snqn.sample_negatives)."""
  u = torch.randint(0, num_items - 1, (actions.shape[0], n), generator=gen)
  return u + (u >= actions[:, None]).long()


class Trainer:
  """The authors' training structure (module docstring) over transitions held as tensors."""

  def __init__(self, data: dict, num_items: int, history_len: int, dim: int, num_layers: int,
               num_heads: int, batch_size: int, lr: float, lr_2: float, gamma: float, neg: int,
               neg_reward: float, warmup: int, clip: float, dropout: float = 0.0, seed: int = 0,
               init=None):
    """data: numpy arrays of jaxrec.offline.transitions.Transitions' fields; init: a stacked
    Flax params tree [2, ...] to start from (else torch's own random init)."""
    self.gen = torch.Generator().manual_seed(seed)
    self.rng = np.random.default_rng(seed)
    self.data = {k: torch.from_numpy(np.array(v)) for k, v in data.items()
                 if v is not None}  # aug_action: LEA's augmentation, not in this benchmark
    for k in ("history", "next_history", "action"):
      self.data[k] = self.data[k].long()
    self.n = self.data["action"].shape[0]
    # training mode throughout: every forward drops out, as the JAX learner's (loop.TrainingNet)
    self.nets = [SupervisedQNet(num_items, history_len, dim, num_layers, num_heads, dropout)
                 for _ in range(2)]
    for c, net in enumerate(self.nets):
      if init is not None:
        import jax
        net.load_flax(jax.tree_util.tree_map(lambda x, c=c: x[c], init))
      else:
        with torch.no_grad():
          for t in net.parameters():
            t.normal_(0.0, 0.05, generator=self.gen)
    self.opts = [(torch.optim.Adam(net.parameters(), lr=lr),
                  torch.optim.Adam(net.parameters(), lr=lr_2)) for net in self.nets]
    self.num_items, self.batch_size, self.neg = num_items, batch_size, neg
    self.gamma, self.neg_reward, self.warmup, self.clip = gamma, neg_reward, warmup, clip
    self.step = 0
    self._perm, self._at = self.rng.permutation(self.n), 0

  def _batch(self) -> dict:
    if self._at + self.batch_size > self.n:
      self._perm, self._at = self.rng.permutation(self.n), 0
    idx = torch.from_numpy(self._perm[self._at:self._at + self.batch_size])
    self._at += self.batch_size
    return {k: v[idx] for k, v in self.data.items()}

  def update(self) -> float:
    """One step: pick the main copy, its loss for the current phase, its phase's Adam."""
    batch = self._batch()
    pointer = int(self.rng.integers(2))
    main, target = self.nets[pointer], self.nets[1 - pointer]
    warm = self.step < self.warmup
    negatives = sample_negatives(self.gen, batch["action"], self.num_items, self.neg)
    loss, _ = sa2c_loss(main, target, batch, negatives, warm, self.gamma, self.neg_reward,
                        self.clip)
    opt = self.opts[pointer][0 if warm else 1]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    self.step += 1
    return loss

  def run(self, updates: int, start_step: int) -> float:
    """`updates` steps from update count start_step (its phase: the warm-up below --warmup)."""
    self.step = start_step
    loss = None
    for _ in range(updates):
      loss = self.update()
    return float(loss.detach())
