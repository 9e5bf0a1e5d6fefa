"""Timing helpers shared by the benchmark programs."""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np

from jaxrec.io import atomic_write_text


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


def matmul_gflops(n: int = 2048, min_time: float = 1.0) -> float:
  """The machine's f32 matmul GFLOP/s, measured with JAX (an n x n product)."""
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  return 2 * n ** 3 / best_time(lambda: f(a, b), min_time) / 1e9


def env_step_flops(env, params, num_sessions: int, key: jax.Array) -> float:
  """XLA's flop count of one vmapped auto-reset step of num_sessions sessions (one device)."""
  import jax.numpy as jnp
  vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
  keys = jax.random.split(key, num_sessions)
  _, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
  actions = jnp.zeros((num_sessions,), jnp.int32)
  cost = jax.jit(vstep).lower(keys, state, actions, params).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


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
  text = json.dumps(result, indent=2)
  print(text)
  if out:
    atomic_write_text(out, text + "\n")
