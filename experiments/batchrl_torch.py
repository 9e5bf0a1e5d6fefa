"""The batch-RL learners in plain PyTorch, updated as the peer updates them: the reference of
`python -m experiments.bench_batchrl`.

The network is jaxrec.batchrl.networks.MultiHead with the avg tracker (jaxrec.nets
StateEncoder: the mean of the last `window` item embeddings, each with its normalised logged
reward appended, a learned "empty" vector for a history with no item; then the MLP, ReLU per
layer; one linear head per output), its params in the Flax layout (`load_flax` copies a JAX
init across), the state computed inside the model from item ids and rewards.

The losses are the peer's `learn()` (EasyRL4Rec's fork yuyq18/tianshou,
`tianshou/policy/imitation/discrete_bcq.py`, `discrete_cql.py`, `discrete_crr.py`), batched as
tianshou writes them: BCQ's smooth-L1 + NLL + 0.01 mean(imitation^2) with the n-step target of
`_target_q` (online argmax over the likely actions, the target net's Q); CQL's QR-DQN quantile
Huber loss (tau_hat [1, N, 1], sum over the target quantiles, mean over the current ones) + 10
(logsumexp Q - Q(s, a)); CRR's 0.5 mse critic against the target actor's expectation of the
target critic, the actor's -log pi(a|s) exp(A / beta) clamped at 20 (the gradient flows through
the weight, as tianshou's; `detach_weight=True` stops it, as jaxrec's crr.py does), + 10 CQL.

`Trainer` updates as tianshou's `offline_trainer` -> `policy.update(64, buffer)` does: a Python
loop; per update a minibatch of 64 drawn with replacement on the host (NumPy), the target
network synced every `target_period` updates, the n-step target computed without gradient, one
backward, two Adams (the peer's `optim_state` over the tracker's embeddings, `optim_RL` over the
rest), the loss terms read back with `.item()` (the peer's learn returns them). Eager PyTorch,
no torch.compile (the peer's code uses none).

What it does not copy: the peer's state tracker (`src/core/state_tracker/Average.py`) rebuilds
each state by walking its tianshou buffer backwards (`buffer.prev`, `buffer[index]`, up to
window steps, NumPy) at every call, three calls per BCQ update; here the windows are stored
tensors gathered by index, so this reference costs less per update than the peer's run.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from experiments.sa2c_torch import FlaxNamed

TRACKER_PARAMS = ("encoder/items/embedding", "encoder/empty")  # the peer's optim_state


class MultiHead(FlaxNamed):
  """(items [B, L] int64 (-1 = padding, right-aligned), rewards [B, L] or None) -> one output
  [B, size] per entry of `sizes`; params named as the Flax tree's paths, kernels [in, out]."""

  def __init__(self, num_tokens: int, num_items: int, dim: int, window: int,
               hidden: tuple[int, ...], sizes: tuple[int, ...], with_rewards: bool = True):
    super().__init__()
    self.num_items, self.window, self.with_rewards = num_items, window, with_rewards
    self.hidden, self.sizes = tuple(hidden), tuple(sizes)
    width = dim + 1 if with_rewards else dim
    shapes = {"encoder/items/embedding": (num_tokens, dim), "encoder/empty": (width,)}
    for i, h in enumerate(self.hidden):
      shapes |= {f"encoder/mlp_{i}/kernel": (width, h), f"encoder/mlp_{i}/bias": (h,)}
      width = h
    for i, n in enumerate(self.sizes):
      shapes |= {f"head_{i}/kernel": (width, n), f"head_{i}/bias": (n,)}
    self.register_flax(shapes)

  def forward(self, items, rewards=None) -> tuple[torch.Tensor, ...]:
    flat = items[:, -self.window:]
    valid = flat >= 0
    x = self.param("encoder/items/embedding")[flat.clamp(min=0)] * valid[..., None]
    if self.with_rewards:  # user tokens (ids >= num_items) carry no reward
      r = torch.where(valid & (flat < self.num_items), rewards[:, -self.window:], 0.0)
      x = torch.cat([x, r[..., None].to(x.dtype)], dim=-1)
    count = valid.sum(dim=1, keepdim=True)
    s = torch.where(count > 0, x.sum(dim=1) / count.clamp(min=1),
                    self.param("encoder/empty"))
    for i in range(len(self.hidden)):
      s = F.relu(torch.addmm(self.param(f"encoder/mlp_{i}/bias"), s,
                             self.param(f"encoder/mlp_{i}/kernel")))
    return tuple(torch.addmm(self.param(f"head_{i}/bias"), s, self.param(f"head_{i}/kernel"))
                 for i in range(len(self.sizes)))


def _obs(batch: dict, prefix: str = ""):
  return batch[f"{prefix}items"], batch.get(f"{prefix}rewards")


def bcq_loss(net, target, batch: dict, hp):
  """DiscreteBCQPolicy.learn with its n-step `_target_q` (module docstring) -> (loss,
  metrics). batch: items, rewards, action, nstep_return, boot_items, boot_rewards,
  boot_discount tensors [B, ...]."""
  def heads(model, prefix):
    q, imitation = model(*_obs(batch, prefix))
    if hp.head_softmax:  # the peer's Actor heads (softmax_output=True)
      q, imitation = F.softmax(q, dim=-1), F.softmax(imitation, dim=-1)
    return q, imitation

  log_tau = np.log(hp.unlikely_threshold) if hp.unlikely_threshold > 0 else -np.inf
  with torch.no_grad():
    q_b, im_b = heads(net, "boot_")
    unlikely = im_b - im_b.max(dim=-1, keepdim=True).values < log_tau
    act = torch.where(unlikely, -torch.inf, q_b).argmax(dim=-1)
    q_bt, _ = heads(target, "boot_")
    rows = torch.arange(act.shape[0])
    tgt = batch["nstep_return"] + batch["boot_discount"] * q_bt[rows, act]
  q, imitation = heads(net, "")
  a = batch["action"]
  q_loss = F.smooth_l1_loss(q[rows, a], tgt)
  i_loss = F.nll_loss(F.log_softmax(imitation, dim=-1), a)
  reg_loss = imitation.pow(2).mean()
  loss = q_loss + i_loss + hp.imitation_penalty * reg_loss
  return loss, {"q_loss": q_loss, "imitation_loss": i_loss, "reg_loss": reg_loss}


def cql_loss(net, target, batch: dict, hp):
  """DiscreteCQLPolicy.learn over QRDQN's n-step target (module docstring) -> (loss,
  metrics)."""
  n = hp.num_quantiles

  def dist(model, prefix):
    (out,) = model(*_obs(batch, prefix))
    return out.reshape(out.shape[0], -1, n)

  with torch.no_grad():
    act = dist(net, "boot_").mean(dim=2).argmax(dim=1)
    rows = torch.arange(act.shape[0])
    tgt = (batch["nstep_return"][:, None]
           + batch["boot_discount"][:, None] * dist(target, "boot_")[rows, act])  # [B, N]
  all_dist = dist(net, "")
  a = batch["action"]
  curr = all_dist[rows, a, :].unsqueeze(2)  # [B, N, 1]
  target_dist = tgt.unsqueeze(1)  # [B, 1, N]
  # tianshou broadcasts [B, 1, N] against [B, N, 1]; expanded here to say so (same values)
  diff = F.smooth_l1_loss(target_dist.expand(-1, n, -1), curr.expand(-1, -1, n),
                          reduction="none")
  tau_hat = ((torch.arange(n, dtype=curr.dtype) * 2 + 1) / (2 * n)).view(1, -1, 1)
  huber = (diff * (tau_hat - (target_dist - curr).detach().le(0.0).float()).abs()
           ).sum(-1).mean(1)
  qr_loss = huber.mean()
  q = all_dist.mean(dim=2)
  cql = q.logsumexp(1).mean() - q.gather(1, a.unsqueeze(1)).mean()
  return qr_loss + hp.min_q_weight * cql, {"qr_loss": qr_loss, "cql_loss": cql}


def crr_loss(net, target, batch: dict, hp, detach_weight: bool = False):
  """DiscreteCRRPolicy.learn, "exp" mode (module docstring) -> (loss, metrics). batch: items,
  rewards, action, reward, done, next_items, next_rewards tensors [B, ...]."""
  logits, q = net(*_obs(batch))
  a = batch["action"]
  qa = q.gather(1, a.unsqueeze(1))
  with torch.no_grad():
    logits_next, q_next = target(*_obs(batch, "next_"))
    expected = (q_next * F.softmax(logits_next, dim=-1)).sum(-1, keepdim=True)
    expected[batch["done"]] = 0.0
    tgt = batch["reward"].unsqueeze(1) + hp.gamma * expected
  critic = 0.5 * F.mse_loss(qa, tgt)
  log_pi = F.log_softmax(logits, dim=-1)
  advantage = qa - (q * log_pi.exp()).sum(-1, keepdim=True)
  weight = (advantage / hp.beta).exp().clamp(0, hp.ratio_max)
  weight = weight.detach() if detach_weight else weight
  actor = (-log_pi.gather(1, a.unsqueeze(1)) * weight).mean()
  cql = (q.logsumexp(1) - qa.squeeze(1)).mean()
  loss = actor + critic + hp.min_q_weight * cql
  return loss, {"actor_loss": actor, "critic_loss": critic, "cql_loss": cql,
                "weight": weight.mean()}


LOSSES = {"bcq": bcq_loss, "cql": cql_loss, "crr": crr_loss}
FIELDS = ("items", "rewards", "action", "reward", "done", "next_items", "next_rewards",
          "nstep_return", "boot", "boot_discount")


def gather(data: dict, idx: np.ndarray) -> dict:
  """The minibatch `idx` [B] of the stored transitions (jaxrec.batchrl.loop.sample_of's
  fields; boot_* = the next observation of the transition the n-step target bootstraps
  from)."""
  i = torch.from_numpy(idx)
  out = {k: data[k][i] for k in FIELDS if k != "boot" and k in data}
  boot = data["boot"][i]
  out["boot_items"] = data["next_items"][boot]
  if "next_rewards" in data:
    out["boot_rewards"] = data["next_rewards"][boot]
  return out


def torch_data(logged: dict, with_rewards: bool) -> dict:
  """numpy arrays of jaxrec.batchrl.buffer.Logged's fields -> the tensors `gather` reads."""
  out = {k: torch.from_numpy(np.array(logged[k])) for k in FIELDS}
  for k in ("items", "next_items", "action", "boot"):
    out[k] = out[k].long()
  out["done"] = out["done"].bool()
  if not with_rewards:
    del out["rewards"], out["next_rewards"]
  return out


class Trainer:
  """The peer's update structure (module docstring) over stored transitions."""

  def __init__(self, agent: str, net: MultiHead, data: dict, hp, batch_size: int, lr: float,
               target_period: int, seed: int = 0):
    """net: the online network (e.g. loaded from a JAX init); data: torch_data(...)."""
    self.loss_fn, self.net, self.data, self.hp = LOSSES[agent], net, data, hp
    self.target = copy.deepcopy(net)
    self.target.requires_grad_(False)
    tracker = [net.param(n) for n in TRACKER_PARAMS]
    rest = [net.param(n) for n in net.names if n not in TRACKER_PARAMS]
    self.opts = (torch.optim.Adam(rest, lr=lr), torch.optim.Adam(tracker, lr=lr))
    self.batch_size, self.target_period = batch_size, target_period
    self.n = int(data["action"].shape[0])
    self.rng = np.random.default_rng(seed)
    self.iter = 0

  def update(self) -> dict:
    if self.iter % self.target_period == 0:
      self.target.load_state_dict(self.net.state_dict())
    batch = gather(self.data, self.rng.choice(self.n, self.batch_size))
    loss, metrics = self.loss_fn(self.net, self.target, batch, self.hp)
    for opt in self.opts:
      opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in self.opts:
      opt.step()
    self.iter += 1
    return {"loss": loss.item()} | {k: v.item() for k, v in metrics.items()}

  def run(self, updates: int) -> dict:
    out = {}
    for _ in range(updates):
      out = self.update()
    return out
