"""experiments.bench_offline: its PyTorch reference computes the same network and loss as the
JAX learner (weights copied across), and a tiny run writes every key. No timing is asserted."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the `hf` extra; the benchmark needs it

from experiments import bench_offline, sa2c_torch
from jaxrec.data.synthetic import SyntheticConfig
from jaxrec.offline import sa2c, snqn
from jaxrec.offline.learners import HParams
from jaxrec.offline.loop import take
from jaxrec.offline.networks import SupervisedQNet
from jaxrec.offline.run import OfflineConfig
from jaxrec.offline.transitions import Transitions

I, L, B, NEG = 30, 5, 12, 3


def random_batch(seed=0) -> Transitions:
  """B transitions with right-aligned histories of random lengths (0 .. L items)."""
  rng = np.random.default_rng(seed)
  items = rng.integers(0, I, (B, L + 1)).astype(np.int32)
  n = rng.integers(0, L + 1, B)  # items in the history
  pos = np.arange(L)[None, :]
  history = np.where(pos >= L - n[:, None], items[:, :L], -1).astype(np.int32)
  next_history = np.where(pos >= L - np.minimum(n + 1, L)[:, None],
                          np.concatenate([history[:, 1:], items[:, L:]], axis=1), -1)
  return Transitions(history=history, action=items[:, L].copy(),
                     reward=rng.uniform(0, 1, B).astype(np.float32),
                     next_history=next_history.astype(np.int32),
                     done=rng.uniform(size=B) < 0.3)


def torch_batch(b: Transitions) -> dict:
  out = {f: torch.from_numpy(np.array(getattr(b, f))) for f in b._fields
         if getattr(b, f) is not None}  # aug_action: LEA's, not in this benchmark
  for f in ("history", "next_history", "action"):
    out[f] = out[f].long()
  return out


@pytest.mark.parametrize("num_layers,num_heads,step,clip", [
    (1, 1, 0, 0.0),  # the LEA sizes' shape (last block only), warm-up: SNQN's loss
    (1, 1, 100, 0.0),  # after the warm-up: the clipped advantage weight
    (2, 2, 100, -1.0),  # a full block before the last, two heads, the advantage unclipped
])
def test_torch_loss_and_grads_equal_the_jax_learner(num_layers, num_heads, step, clip):
  cfg = OfflineConfig(agent="sa2c", history_len=L, dim=8, num_layers=num_layers,
                      num_heads=num_heads)
  net = SupervisedQNet(cfg.net(I), q_head=True)
  params = jax.vmap(lambda k: net.init(k, net.cfg.example_input((1,))))(
      jax.random.split(jax.random.PRNGKey(3), 2))
  # perturb the zero-initialised biases and unit scales so every param matters
  params = jax.tree_util.tree_map(
      lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(x.size), x.shape), params)
  main, target = take(params, 0), take(params, 1)
  hp = HParams(gamma=0.5, neg=NEG, neg_reward=0.2, warmup=50, clip=clip)
  batch = jax.tree_util.tree_map(jnp.asarray, Transitions(*random_batch()))
  key = jax.random.PRNGKey(7)
  (loss, metrics), grads = jax.value_and_grad(sa2c.batch_loss, argnums=1, has_aux=True)(
      net, main, target, batch, hp, key, jnp.int32(step))
  negatives = snqn.sample_negatives(key, batch.action, I, NEG)  # the draw batch_loss makes

  nets = []
  for p in (main, target):
    m = sa2c_torch.SupervisedQNet(I, L, 8, num_layers, num_heads)
    m.load_flax(jax.device_get(p))
    nets.append(m)
  t_loss, t_metrics = sa2c_torch.sa2c_loss(
      nets[0], nets[1], torch_batch(jax.device_get(batch)),
      torch.from_numpy(np.array(negatives)).long(), step < hp.warmup, hp.gamma,
      hp.neg_reward, hp.clip)
  t_loss.backward()
  np.testing.assert_allclose(float(t_loss.detach()), float(loss), rtol=1e-5)
  for k in ("ce_loss", "q_loss", "neg_q_loss", "ce_weight"):
    np.testing.assert_allclose(float(t_metrics[k].detach()), float(metrics[k]), rtol=1e-5,
                               err_msg=k)
  if step >= hp.warmup:
    assert float(metrics["ce_weight"]) != 1.0  # the advantage weight is in play
  from flax.traverse_util import flatten_dict
  flat = {"/".join(k): v for k, v in flatten_dict(grads["params"]).items()}
  tgrads = nets[0].params()
  assert sorted(flat) == sorted(tgrads)
  for name, g in flat.items():
    np.testing.assert_allclose(tgrads[name].grad.numpy(), np.asarray(g), rtol=1e-4,
                               atol=1e-6, err_msg=name)


def test_torch_trainer_learns_from_the_jax_init():
  """A few torch updates from copied weights move the main copy only and lower the loss."""
  b = random_batch(1)
  cfg = OfflineConfig(agent="sa2c", history_len=L, dim=8)
  net = SupervisedQNet(cfg.net(I), q_head=True)
  params = jax.vmap(lambda k: net.init(k, net.cfg.example_input((1,))))(
      jax.random.split(jax.random.PRNGKey(0), 2))
  trainer = sa2c_torch.Trainer(b._asdict(), I, L, 8, 1, 1, batch_size=B, lr=0.01, lr_2=0.001,
                               gamma=0.5, neg=NEG, neg_reward=0.0, warmup=15000, clip=0.0,
                               init=params)
  first = trainer.run(1, 0)
  last = trainer.run(30, 1)
  assert np.isfinite(last) and last < first


@pytest.mark.slow
def test_a_tiny_run_writes_every_key(tmp_path):
  cfg = bench_offline.bench_config(16, history_len=L, dim=8)
  result = bench_offline.run_bench(
      cfg, "synthetic", updates=2, rounds=1, min_time=0.0,
      synthetic=SyntheticConfig(num_users=60, num_items=40, mean_length=8.0))
  json.dumps(result)
  for side in bench_offline.SIDES:
    assert result[f"{side}_samples_per_s"] == result[f"{side}_sa2c_samples_per_s"] > 0
    assert result[f"{side}_warmup_samples_per_s"] > 0
  for k in ("jax_over_torch", "jax_over_pyloop", "pyloop_over_torch", "jax_over_torch_warmup",
            "matmul_gflops", "cores", "torch_threads", "batch_size", "history_len", "dim",
            "neg", "headline_phase", "compile_time_timed"):
    assert k in result, k
  assert result["torch_threads"] == result["cores"] == bench_offline.available_cores()
  # the work per update, counted on each side (XLA's cost analysis, elementwise work included;
  # torch's flop counter, matmul-class ops only: at these toy sizes XLA's is the larger, at the
  # LEA sizes they agree to 2%, docs/offline.md)
  jax_f, torch_f = result["jax_flops_per_update"], result["torch_flops_per_update"]
  assert jax_f > torch_f > 0, (jax_f, torch_f)
  assert result["jax_warmup_flops_per_update"] > 0
  for side in bench_offline.SIDES:
    assert result[f"{side}_share_of_matmul"] == pytest.approx(
        result[f"{side}_gflops"] / result["matmul_gflops"])
  assert result["share_of_matmul_for_3x_torch"] == pytest.approx(
      3 * result["torch_gflops"] / result["matmul_gflops"]
      * jax_f / torch_f)
  assert (result["batch_size"], result["history_len"], result["dim"]) == (16, L, 8)
