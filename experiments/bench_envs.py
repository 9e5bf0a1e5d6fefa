"""python -m experiments.bench_envs --out=FILE.json

Random-policy env steps per second of both simulators, in one run:
  - JAX: `jax.vmap`ped auto-reset step inside one jitted `lax.scan`, num_sessions in --sizes;
  - reference: the same user model in plain NumPy, one Python session after the other (how
    EasyRL4Rec / tianshou step a DummyVectorEnv);
plus the machine's f32 matmul GFLOP/s measured with JAX and the sequential env's achieved
GFLOP/s (XLA's flop count of the compiled step / measured time). Prints and writes JSON.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import benchlib
from jaxrec import cli
from jaxrec.data import SyntheticConfig, load_dataset
from jaxrec.envs import build
from jaxrec.envs.reference import NumpyMatrixEnv, NumpySequentialEnv

OUT = flags.DEFINE_string("out", None, "JSON output file (also printed)")
SIZES = flags.DEFINE_list("sizes", ["1", "64", "1024", "4096", "16384"], "num_sessions values")
SCAN_STEPS = flags.DEFINE_integer("scan_steps", 200, "env steps per jitted scan call")
MIN_TIME = flags.DEFINE_float("min_time", 1.0, "seconds to time each configuration for")
LOOP_TIME = flags.DEFINE_float("loop_time", 3.0, "seconds to run the NumPy loop baseline for")
PRNG = flags.DEFINE_enum("prng_impl", "threefry2x32", ["threefry2x32", "rbg", "unsafe_rbg"],
                         "JAX PRNG of the per-session keys (the envs work with any)")
ENV_DIR = flags.DEFINE_string("env_dir", None, "benchmark this env dir instead of building "
                              "the synthetic default (sequential) and a matrix env")


def make_rollout(env, params, num_sessions: int, steps: int):
  """A jitted function running `steps` random-policy steps of `num_sessions` sessions."""
  vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def body(state, key):
    k_act, k_env = jax.random.split(key)
    # One 32-bit draw per action (randint draws twice): the policy should not be the cost.
    action = (jax.random.bits(k_act, (num_sessions,), jnp.uint32) % env.num_actions).astype(jnp.int32)
    _, state, reward, done, _ = vstep(jax.random.split(k_env, num_sessions), state, action,
                                      params)
    return state, (reward.sum(), done.sum())

  @jax.jit
  def rollout(state, key):
    state, (r, d) = jax.lax.scan(body, state, jax.random.split(key, steps))
    return state, r.sum(), d.sum()

  _, state = jax.vmap(env.reset, in_axes=(0, None))(
      jax.random.split(_key(0), num_sessions), params)
  return rollout, state, vstep


def _key(seed: int) -> jax.Array:
  return jax.random.key(seed, impl=PRNG.value)


def vmap_steps_per_s(env, params, num_sessions, steps, min_time):
  rollout, state, _ = make_rollout(env, params, num_sessions, steps)
  key = _key(1)
  secs = benchlib.best_time(lambda: rollout(state, key), min_time)
  return num_sessions * steps / secs


def loop_steps_per_s(ref_env, num_actions, seconds) -> float:
  """Per-session Python loop: the NumPy env stepped with random actions for `seconds`."""
  rng = np.random.default_rng(0)
  ref_env.reset(rng)
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    for _ in range(100):
      _, _, done = ref_env.step(int(rng.integers(num_actions)))
      if done:
        ref_env.reset(rng)
    steps += 100
  return steps / (time.perf_counter() - start)


def bench_env(name, env, params, ref_cls, sizes, result):
  for n in sizes:
    sps = vmap_steps_per_s(env, params, n, SCAN_STEPS.value, MIN_TIME.value)
    result[f"{name}_vmap_steps_per_s_{n}"] = sps
    print(f"  {name} vmap N={n}: {sps:,.0f} env-steps/s", flush=True)
  loop = loop_steps_per_s(ref_cls(env, params), env.num_actions, LOOP_TIME.value)
  result[f"{name}_loop_steps_per_s"] = loop
  print(f"  {name} NumPy per-session loop: {loop:,.0f} env-steps/s", flush=True)
  if 4096 in sizes:
    result[f"{name}_speedup_4096"] = result[f"{name}_vmap_steps_per_s_4096"] / loop


def build_default_envs(workdir: str) -> dict[str, str]:
  ds = load_dataset("synthetic", synthetic_cfg=SyntheticConfig())
  dirs = {}
  for kind in build.KINDS:
    out = os.path.join(workdir, kind)
    if not os.path.exists(out):
      # Speed does not depend on fit quality: short fits keep the benchmark quick.
      build.build_envs(ds, build.BuildConfig(kind=kind, seq_steps=200, mf_steps=400), out,
                       log=lambda s: None)
    dirs[kind] = out
  return dirs


def main(argv):
  cli.reject_extra_args(argv)
  sizes = [int(s) for s in SIZES.value]
  result = benchlib.machine() | {
            "scan_steps": SCAN_STEPS.value, "prng_impl": PRNG.value}
  result["matmul_gflops"] = benchlib.matmul_gflops(min_time=MIN_TIME.value)
  print(f"matmul: {result['matmul_gflops']:.1f} GFLOP/s", flush=True)
  if ENV_DIR.value:
    meta = build.read_meta(ENV_DIR.value)
    dirs = {meta["kind"]: ENV_DIR.value}
  else:
    dirs = build_default_envs(os.path.join(os.path.dirname(os.path.abspath(OUT.value or ".")),
                                           ".bench_envs"))
  refs = {"sequential": NumpySequentialEnv, "matrix": NumpyMatrixEnv}
  for kind, d in dirs.items():
    env, params, _ = build.load_env(d, "train")
    print(f"{kind} env ({env.num_actions} items):", flush=True)
    bench_env(kind, env, params, refs[kind], sizes, result)
    if kind == "sequential" and 4096 in sizes:
      flops = benchlib.env_step_flops(env, params, 4096, _key(0))
      result["sequential_flops_per_step_4096"] = flops
      result["sequential_gflops_4096"] = (
          flops * result["sequential_vmap_steps_per_s_4096"] / 4096 / 1e9)
      result["sequential_gflops_fraction_of_matmul"] = (
          result["sequential_gflops_4096"] / result["matmul_gflops"])
  benchlib.report(result, OUT.value)


if __name__ == "__main__":
  cli.run(main)
