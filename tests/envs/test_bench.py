"""The benchmark's measured rollout computes what it says (benchlib.random_policy_rollout), and
bench_envs' own flags fail in one line."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import benchlib
from jaxrec.envs import build


@pytest.mark.parametrize("kind", ["seq", "matrix"])
def test_rollout_totals_equal_a_python_loop_of_the_vmapped_step(kind, seq_env_dir,
                                                                 matrix_env_dir):
  env, params, _ = build.load_env(seq_env_dir if kind == "seq" else matrix_env_dir, "train")
  n, steps, key = 32, 7, jax.random.key(3)
  state, total, ended = benchlib.random_policy_rollout(env, params, n, steps, key)()
  assert state.t.shape == (n,)

  # The same draws, one jitted step at a time from Python, summed on the host.
  k_reset, k_run = jax.random.split(key)
  _, s = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, n), params)
  vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  rewards, dones = [], []
  for k in jax.random.split(k_run, steps):
    k_act, k_env = jax.random.split(k)
    action = (jax.random.bits(k_act, (n,), jnp.uint32) % env.num_actions).astype(jnp.int32)
    _, s, r, d, _ = vstep(jax.random.split(k_env, n), s, action, params)
    rewards.append(np.asarray(r))
    dones.append(np.asarray(d))
  assert int(ended) == int(np.sum(dones)) > 0  # episodes do end within 7 steps here
  np.testing.assert_allclose(float(total), np.sum(np.stack(rewards), dtype=np.float64),
                             rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(state.history), np.asarray(s.history))


def test_best_times_keeps_the_fastest_round_of_each():
  calls = {"a": 0, "b": 0}

  def fn(name):
    def call():
      calls[name] += 1
      return jnp.zeros(())
    return call

  best = benchlib.best_times({"a": fn("a"), "b": fn("b")}, rounds=3, min_time=0.0)
  assert set(best) == {"a", "b"} and all(0 <= v < 1 for v in best.values())
  assert calls["a"] >= 6 and calls["b"] >= 6  # per round: a warm-up call and a timed call


@pytest.mark.parametrize("flag", ["--shard_devices=1", "--shard_devices=3",
                                  "--shard_devices=two"])
def test_bench_envs_bad_shard_devices_is_one_line_error(flag, tmp_path):
  res = subprocess.run([sys.executable, "-m", "experiments.bench_envs", flag, "--sizes=4096",
                        f"--out={tmp_path / 'x.json'}"], capture_output=True, text=True,
                       timeout=120)
  lines = res.stderr.strip().splitlines()
  assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
  assert lines[0].startswith("error: --shard_devices must be auto, none or device counts > 1")
  assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("module", ["experiments.bench_envs", "experiments.bench_scale"])
def test_zero_rounds_is_one_line_error(module, tmp_path):
  """With no rounds nothing would be timed and every rate would be written as 0."""
  res = subprocess.run([sys.executable, "-m", module, "--rounds=0",
                        f"--out={tmp_path / 'x.json'}"], capture_output=True, text=True,
                       timeout=120)
  lines = res.stderr.strip().splitlines()
  assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
  assert lines[0] == "error: --rounds must be >= 1; got 0"
  assert not (tmp_path / "x.json").exists()
