"""Timing helpers shared by the benchmark programs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import jax
import numpy as np

from jaxrec import cli
from jaxrec.errors import ConfigError


def best_time(fn, min_time: float) -> float:
  """Best seconds per call of fn() over repeated calls lasting >= min_time, after a warm-up
  call (compilation) that is not timed."""
  jax.block_until_ready(fn())
  best, start = np.inf, time.perf_counter()
  while True:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
    if time.perf_counter() - start > min_time:
      return best


MATMUL_N = 2048  # the reference product: an n x n f32 matmul


def matmul_gflop(n: int = MATMUL_N) -> float:
  """GFLOP of one n x n matmul (2 n^3 flops)."""
  return 2 * n ** 3 / 1e9


def matmul_gflops(n: int = MATMUL_N, min_time: float = 1.0) -> float:
  """The machine's f32 matmul GFLOP/s, measured with JAX (an n x n product)."""
  return matmul_gflop(n) / best_time(matmul_fn(n), min_time)


def best_times(fns: dict, rounds: int, min_time: float) -> dict:
  """Best seconds per call of each fn, timed in `rounds` interleaved rounds (each fn for
  min_time per round): on a machine whose speed drifts, every fn gets the same chances at
  its fast periods, so ratios between them (an env against the matmul reference) are fair."""
  best = {name: np.inf for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      best[name] = min(best[name], best_time(fn, min_time))
  return best


def check_rounds(rounds: int) -> None:
  """--rounds of a benchmark that interleaves its timings with the matmul reference: with
  none, nothing would be timed (every rate 0)."""
  if rounds < 1:
    raise ConfigError(f"--rounds must be >= 1; got {rounds}")


def best_times_with_matmul(fns: dict, rounds: int, min_time: float) -> tuple[dict, float]:
  """`best_times` of fns and of the reference matmul in the same interleaved rounds ->
  ({name: best seconds per call}, the matmul's GFLOP/s)."""
  secs = best_times(fns | {"_matmul": matmul_fn()}, rounds, min_time)
  return {name: secs[name] for name in fns}, matmul_gflop() / secs["_matmul"]


def matmul_fn(n: int = MATMUL_N):
  """A zero-argument call of an n x n f32 matmul (2 n^3 flops), compiled on first call."""
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  return lambda: f(a, b)


def random_policy_rollout(env, params, num_sessions: int, steps: int, key: jax.Array,
                          mesh=None):
  """-> a zero-argument call running `steps` random-policy auto-reset steps of num_sessions
  vmapped sessions in one jitted lax.scan, returning (state, total reward, episodes ended).

  With a mesh, the sessions (state, actions, per-session keys) are split over its `data` axis
  and the params replicated. Rewards and episode ends are summed per session inside the scan
  and over sessions once at the end: a per-step sum over sessions would be a cross-device
  all-reduce every step (measured: a quarter of a sharded step's time on 2 CPU devices),
  which the env does not need. Actions take one 32-bit draw each (randint draws twice): the
  policy should not be the measured cost."""
  import jax.numpy as jnp
  from jaxrec.train import sharding
  mesh = mesh or sharding.make_mesh(sharding.MeshConfig(1))
  sharding.check_sessions(mesh, num_sessions=num_sessions)
  params = sharding.replicate(params, mesh)
  pin = lambda x: sharding.constrain_sessions(x, mesh)
  vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def body(carry, k):
    state, reward_sum, done_sum = carry
    k_act, k_env = jax.random.split(k)
    action = pin((jax.random.bits(k_act, (num_sessions,), jnp.uint32) %
                  env.num_actions).astype(jnp.int32))
    _, state, reward, done, _ = vstep(pin(jax.random.split(k_env, num_sessions)), state,
                                      action, params)
    return (state, reward_sum + reward, done_sum + done), None

  def rollout(state, k):
    zeros = pin(jnp.zeros((num_sessions,), jnp.float32))
    (state, reward_sum, done_sum), _ = jax.lax.scan(
        body, (state, zeros, zeros.astype(jnp.int32)), jax.random.split(k, steps))
    return state, reward_sum.sum(), done_sum.sum()

  rep, ses = sharding.replicated(mesh), sharding.sessions(mesh)
  # device_put, not replicate(): replicate() goes through NumPy, which typed keys refuse.
  k_reset, k_run = jax.device_put(jax.random.split(key), rep)
  state = jax.jit(
      lambda k: jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k, num_sessions),
                                                       params)[1],
      out_shardings=ses)(k_reset)
  run = jax.jit(rollout, out_shardings=(ses, rep, rep))
  return lambda: run(state, k_run)


def env_step_flops(env, params, num_sessions: int, key: jax.Array) -> float:
  """XLA's flop count of one vmapped auto-reset step of num_sessions sessions (one device)."""
  import jax.numpy as jnp
  vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
  keys = jax.random.split(key, num_sessions)
  _, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
  actions = jnp.zeros((num_sessions,), jnp.int32)
  return xla_flops(vstep, keys, state, actions, params)


def xla_flops(fn, *args) -> float:
  """XLA's flop count of jit(fn)(*args), compiled for these arguments (a loop's body counts
  once, whatever its trip count)."""
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def run_device_worker(module: str, devices: int, out: str, args: list[str]) -> dict:
  """Runs `python -m module --worker_devices=D --out=OUT *args` in a process that sees D host
  devices (XLA_FLAGS=--xla_force_host_platform_device_count=D, read when the backend starts,
  hence a process per device count) and returns the JSON it wrote to OUT."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  cmd = [sys.executable, "-m", module, f"--worker_devices={devices}", f"--out={out}", *args]
  res = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if res.returncode != 0:
    raise RuntimeError(f"{module} worker on {devices} devices failed:\n{res.stderr[-3000:]}")
  with open(out) as f:
    return json.load(f)


def machine() -> dict:
  return {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
          "platform": platform.platform(), "jax": jax.__version__}


def default_env_dir(out: str) -> str:
  """The synthetic default env the training benchmarks share, built once beside --out."""
  from jaxrec.data import load_dataset
  from jaxrec.envs import build
  env_dir = os.path.join(os.path.dirname(os.path.abspath(out or ".")), ".bench_train_env")
  if not os.path.exists(env_dir):
    build.build_envs(load_dataset("synthetic"), build.BuildConfig(seq_steps=200), env_dir,
                     log=lambda s: None)
  return env_dir


def report(result: dict, out: str) -> None:
  """Prints the benchmark's JSON and, with --out, writes it atomically."""
  cli.emit_json(result, out)
