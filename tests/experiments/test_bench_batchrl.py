"""experiments.bench_batchrl: its PyTorch reference (experiments/batchrl_torch.py) computes the
same network and each learner's loss as jaxrec.batchrl on copied weights, and a tiny run
writes every key. No timing is asserted."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the `hf` extra; the benchmark needs it

from experiments import batchrl_torch  # noqa: E402
from jaxrec.batchrl.learners import LEARNERS, HParams, Sample  # noqa: E402
from jaxrec.batchrl.networks import MultiHead  # noqa: E402
from jaxrec.nets.networks import NetConfig  # noqa: E402

I, L, B, D, W = 12, 5, 16, 8, 3


def random_data(seed=0) -> dict:
  """B transitions: right-aligned histories of random lengths (0 .. L), rewards in [0, 1],
  some episodes ended, n-step pieces pointing at random transitions."""
  rng = np.random.default_rng(seed)

  def history():
    items = rng.integers(0, I, (B, L)).astype(np.int32)
    n = rng.integers(0, L + 1, B)
    keep = np.arange(L)[None, :] >= L - n[:, None]
    return np.where(keep, items, -1), np.where(keep, rng.uniform(0, 1, (B, L)), 0.0)

  (items, rewards), (next_items, next_rewards) = history(), history()
  done = rng.uniform(size=B) < 0.3
  return {"items": items, "rewards": rewards.astype(np.float32),
          "action": rng.integers(0, I, B).astype(np.int32),
          "reward": rng.uniform(0, 5, B).astype(np.float32), "done": done,
          "next_items": next_items, "next_rewards": next_rewards.astype(np.float32),
          "nstep_return": rng.uniform(0, 5, B).astype(np.float32),
          "boot": rng.integers(0, B, B).astype(np.int32),
          "boot_discount": np.where(done, 0.0, 0.729).astype(np.float32)}


def jax_sample(d: dict) -> Sample:
  obs = lambda p: (jnp.asarray(d[f"{p}items"]), jnp.asarray(d[f"{p}rewards"]))
  boot = d["boot"]
  return Sample(obs=obs(""), action=jnp.asarray(d["action"]),
                reward=jnp.asarray(d["reward"]), done=jnp.asarray(d["done"]),
                next_obs=obs("next_"), nstep_return=jnp.asarray(d["nstep_return"]),
                boot_obs=(jnp.asarray(d["next_items"][boot]),
                          jnp.asarray(d["next_rewards"][boot])),
                boot_discount=jnp.asarray(d["boot_discount"]))


@pytest.mark.parametrize("agent,head_softmax", [
    ("bcq", False), ("bcq", True), ("cql", False), ("crr", False)])
def test_torch_loss_and_grads_equal_the_jax_learner(agent, head_softmax):
  hp = HParams(head_softmax=head_softmax, num_quantiles=4, unlikely_threshold=0.3)
  module = LEARNERS[agent].loss_module()
  sizes = module.head_sizes(I, hp)
  cfg = NetConfig(num_items=I, history_len=L, dim=D, tracker="avg", window=W,
                  hidden=(16, 16), reward_handle="cat")
  net = MultiHead(cfg, sizes)
  params, target = (net.init(k, cfg.example_input((1,)))
                    for k in jax.random.split(jax.random.PRNGKey(1), 2))
  # perturb the zero-initialised biases so every param matters
  params = jax.tree_util.tree_map(
      lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(x.size), x.shape), params)
  data = random_data()
  (loss, metrics), grads = jax.value_and_grad(
      lambda p: module.batch_loss(net.apply, p, target, jax_sample(data), hp), has_aux=True)(
          params)

  nets = []
  for p in (params, target):
    m = batchrl_torch.MultiHead(I, I, D, W, (16, 16), sizes)
    m.load_flax(jax.device_get(p))
    nets.append(m)
  batch = batchrl_torch.gather(batchrl_torch.torch_data(data, True), np.arange(B))
  fn = batchrl_torch.LOSSES[agent]
  kw = {"detach_weight": True} if agent == "crr" else {}  # jaxrec's weight is a constant
  t_loss, t_metrics = fn(nets[0], nets[1], batch, hp, **kw)
  t_loss.backward()
  np.testing.assert_allclose(float(t_loss.detach()), float(loss), rtol=1e-5)
  for k, v in t_metrics.items():
    np.testing.assert_allclose(float(v.detach()), float(metrics[k]), rtol=1e-5, err_msg=k)
  from flax.traverse_util import flatten_dict
  flat = {"/".join(k): v for k, v in flatten_dict(grads["params"]).items()}
  assert sorted(flat) == nets[0].names
  for name, g in flat.items():
    np.testing.assert_allclose(nets[0].param(name).grad.numpy(), np.asarray(g), rtol=1e-4,
                               atol=1e-6, err_msg=name)
  if agent == "crr":  # the peer's actor loss lets the gradient through the weight: same value
    peer_loss, _ = fn(nets[0], nets[1], batch, hp)
    np.testing.assert_allclose(float(peer_loss.detach()), float(loss), rtol=1e-5)


def test_torch_trainer_learns_from_the_jax_init():
  """A few updates of the peer's structure from copied weights lower BCQ's loss and sync the
  target network at update 0 only (target period 100)."""
  hp = HParams()
  cfg = NetConfig(num_items=I, history_len=L, dim=D, tracker="avg", window=W,
                  hidden=(16, 16), reward_handle="cat")
  net = MultiHead(cfg, (I, I))
  params = net.init(jax.random.PRNGKey(0), cfg.example_input((1,)))
  m = batchrl_torch.MultiHead(I, I, D, W, (16, 16), (I, I))
  m.load_flax(params)
  trainer = batchrl_torch.Trainer("bcq", m, batchrl_torch.torch_data(random_data(2), True),
                                  hp, batch_size=B, lr=0.01, target_period=100)
  first = trainer.run(1)["loss"]
  last = trainer.run(40)["loss"]
  assert np.isfinite(last) and last < first
  emb = "encoder/items/embedding"
  assert not torch.equal(trainer.target.param(emb), m.param(emb))
  assert trainer.iter == 41


def test_a_tiny_run_writes_every_key():
  from experiments import bench_batchrl
  from jaxrec.batchrl.buffer import Logged
  from jaxrec.batchrl.run import BatchConfig
  d = random_data(3)
  data = Logged(**{k: jnp.asarray(v) for k, v in d.items()}, env_reward=jnp.zeros(B))
  cfg = BatchConfig(env="unused", dim=4, hidden_sizes=(8, 8), num_quantiles=4)
  result = bench_batchrl.bench_logged(data, bench_batchrl.Shape(I, L, I), cfg, ("crr",),
                                      updates=3, rounds=1, min_time=0.0, threads=1)
  assert json.loads(json.dumps(result)) == result
  row = result["learners"]["crr"]
  assert row["jax_updates_per_s"] > 0 and row["torch_updates_per_s"] > 0
  np.testing.assert_allclose(row["ratio"], row["jax_updates_per_s"] / row["peer_updates_per_s"])
  want = "tianshou_updates_per_s" if result["tianshou"] else "torch_updates_per_s"
  assert row["peer_updates_per_s"] == row[want]
  for k in ("torch", "jax", "torch_threads", "batch_size", "load_average", "peer",
            "matmul_gflops", "transitions", "pinned_cpus", "compile_time_timed"):
    assert k in result, k
  assert result["torch_threads"] == 1 and result["batch_size"] == 64
  assert (result["transitions"], result["num_items"], result["dim"]) == (B, I, 4)


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["bcq", "cql", "crr"])
def test_the_tianshou_side_updates_each_learner(agent):
  """With tianshou 2.0 (the `peer` extra), its algorithm classes train the copied network on the
  same transitions (finite losses; the losses equal to jaxrec's are the torch port's test)."""
  pytest.importorskip("tianshou")
  from experiments import bench_batchrl
  from jaxrec.batchrl.buffer import Logged
  from jaxrec.batchrl.run import BatchConfig
  d = random_data(4)
  d["boot"] = np.minimum(np.arange(B) + 2, B - 1).astype(np.int32)
  data = Logged(**{k: jnp.asarray(v) for k, v in d.items()}, env_reward=jnp.zeros(B))
  cfg = BatchConfig(env="unused", agent=agent, dim=4, hidden_sizes=(8, 8), num_quantiles=4)
  shape = bench_batchrl.Shape(I, L, I)
  _, params = bench_batchrl.jax_fn(cfg, shape, data, 1)
  call = bench_batchrl.tianshou_fn(cfg, shape, bench_batchrl.tianshou_buffer(data, L), 5,
                                   params)
  stats = call()
  assert np.isfinite(stats.loss)
