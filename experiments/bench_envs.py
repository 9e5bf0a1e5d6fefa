"""python -m experiments.bench_envs --out=FILE.json

Random-policy env steps per second of both simulators, in one run:
  - JAX: the `jax.vmap`ped auto-reset step inside one jitted `lax.scan`
    (benchlib.random_policy_rollout), num_sessions in --sizes, on one device;
  - the same at 4,096 sessions with the sessions sharded over D devices (--shard_devices; on a
    CPU, D forced host devices in a subprocess started with XLA_FLAGS=
    --xla_force_host_platform_device_count=D): one XLA:CPU device runs most of a step's
    many small ops on one thread, one after the other, and leaves a core partly idle;
  - reference: the same user model in plain NumPy, one Python session after the other (how
    EasyRL4Rec / tianshou step a DummyVectorEnv);
plus the machine's f32 matmul GFLOP/s measured with JAX in the same run, and the sequential
env's achieved GFLOP/s (XLA's flop count of the compiled step / measured time).

Every 4,096-session timing is interleaved with matmul timings (--rounds rounds, best of each),
in the parent and in each worker, and `matmul_gflops` is the best of all of them: a machine
whose speed drifts gives the reference the same chances as the envs, and the fractions are
taken against the fastest reference seen. Headline keys (`{kind}_vmap_steps_per_s_4096`,
`sequential_gflops_4096`, the speed-ups) are the best device count, named in
`{kind}_devices_4096`; every device count's number is kept (`..._devices_D`). `targets` says
which of the simulator issue's targets this run met. Prints and writes JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import jax
import numpy as np
from absl import flags

from experiments import benchlib
from jaxrec import cli
from jaxrec.data import SyntheticConfig, load_dataset
from jaxrec.envs import build
from jaxrec.envs.reference import NumpyMatrixEnv, NumpySequentialEnv
from jaxrec.errors import ConfigError
from jaxrec.io import atomic_write_text

OUT = flags.DEFINE_string("out", None, "JSON output file (also printed)")
SIZES = flags.DEFINE_list("sizes", ["1", "64", "1024", "4096", "16384"], "num_sessions values")
SCAN_STEPS = flags.DEFINE_integer("scan_steps", 200, "env steps per jitted scan call")
MIN_TIME = flags.DEFINE_float("min_time", 1.0, "seconds to time each configuration for "
                              "(per round at 4,096 sessions)")
ROUNDS = flags.DEFINE_integer("rounds", 3, "interleaved env / matmul timing rounds at 4,096 "
                              "sessions")
LOOP_TIME = flags.DEFINE_float("loop_time", 3.0, "seconds to run the NumPy loop baseline for")
PRNG = flags.DEFINE_enum("prng_impl", "threefry2x32", ["threefry2x32", "rbg", "unsafe_rbg"],
                         "JAX PRNG of the per-session keys (the envs work with any)")
ENV_DIR = flags.DEFINE_string("env_dir", None, "benchmark this env dir instead of building "
                              "the synthetic default (sequential) and a matrix env")
SHARD = flags.DEFINE_list("shard_devices", ["auto"], "device counts to shard the 4,096 "
                          "sessions over, besides one device: auto = on a multi-core CPU, one "
                          "and two forced host devices per core; none = skip")
WORKER = flags.DEFINE_integer("worker_devices", 0, "internal: measure on this many devices")
WORKER_DIRS = flags.DEFINE_list("worker_env_dirs", [], "internal: the env dirs to measure")

HEADLINE = 4096  # the headline session count
MATMUL = "matmul"


def _key(seed: int) -> jax.Array:
  return jax.random.key(seed, impl=PRNG.value)


def _rollout(env, params, num_sessions, mesh=None):
  return benchlib.random_policy_rollout(env, params, num_sessions, SCAN_STEPS.value, _key(1),
                                        mesh)


def _headline_times(rollouts: dict) -> dict:
  """{name: zero-arg rollout at HEADLINE sessions} -> {name: env-steps/s, MATMUL: GFLOP/s},
  each timed in ROUNDS rounds interleaved with the matmul reference."""
  secs, matmul = benchlib.best_times_with_matmul(rollouts, ROUNDS.value, MIN_TIME.value)
  out = {name: HEADLINE * SCAN_STEPS.value / secs[name] for name in rollouts}
  out[MATMUL] = matmul
  return out


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


def bench_env(name, env, params, ref_cls, sizes, result, matmul_samples):
  for n in sizes:
    if n == HEADLINE:
      times = _headline_times({name: _rollout(env, params, n)})
      sps = times[name]
      matmul_samples["devices_1"] = max(matmul_samples.get("devices_1", 0.0), times[MATMUL])
    else:
      sps = n * SCAN_STEPS.value / benchlib.best_time(_rollout(env, params, n), MIN_TIME.value)
    result[f"{name}_vmap_steps_per_s_{n}_devices_1"] = sps
    print(f"  {name} vmap N={n}, 1 device: {sps:,.0f} env-steps/s", flush=True)
  loop = loop_steps_per_s(ref_cls(env, params), env.num_actions, LOOP_TIME.value)
  result[f"{name}_loop_steps_per_s"] = loop
  print(f"  {name} NumPy per-session loop: {loop:,.0f} env-steps/s", flush=True)


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


def shard_devices() -> list[int]:
  """--shard_devices -> the device counts (> 1) to measure besides one device."""
  spec = [v.strip().lower() for v in SHARD.value if v.strip()]
  if spec in ([], ["none"]):
    return []
  if spec == ["auto"]:
    cores = os.cpu_count() or 1
    return [cores, 2 * cores] if jax.default_backend() == "cpu" and cores > 1 else []
  try:
    counts = sorted({int(v) for v in spec})
  except ValueError:
    counts = []
  if not counts or counts[0] < 2 or any(HEADLINE % d for d in counts):
    raise ConfigError(f"--shard_devices must be auto, none or device counts > 1 that divide "
                      f"{HEADLINE}; got {','.join(SHARD.value)}")
  return counts


def _worker(env_dirs: list[str], d: int) -> dict:
  """In a process started with d devices: every env at HEADLINE sessions sharded over them."""
  from jaxrec.train import sharding
  mesh = sharding.make_mesh(sharding.MeshConfig(d))
  rollouts = {}
  for env_dir in env_dirs:
    env, params, meta = build.load_env(env_dir, "train")
    rollouts[meta.kind] = _rollout(env, params, HEADLINE, mesh)
  return _headline_times(rollouts)


def _run_worker(d: int, env_dirs: list[str], tmp: str) -> dict:
  return benchlib.run_device_worker(
      "experiments.bench_envs", d, os.path.join(tmp, f"devices_{d}.json"),
      [f"--worker_env_dirs={','.join(env_dirs)}", f"--scan_steps={SCAN_STEPS.value}",
       f"--min_time={MIN_TIME.value}", f"--rounds={ROUNDS.value}",
       f"--prng_impl={PRNG.value}"])


def main(argv):
  cli.reject_extra_args(argv)
  benchlib.check_rounds(ROUNDS.value)
  if WORKER.value:
    atomic_write_text(OUT.value, json.dumps(_worker(WORKER_DIRS.value, WORKER.value)) + "\n")
    return
  sizes = [int(s) for s in SIZES.value]
  sharded = shard_devices() if HEADLINE in sizes else []
  result = benchlib.machine() | {
      "scan_steps": SCAN_STEPS.value, "prng_impl": PRNG.value, "rounds": ROUNDS.value,
      "load_average_start": os.getloadavg()[0]}
  if ENV_DIR.value:
    meta = build.read_meta(ENV_DIR.value)  # a bad dir fails before anything is measured
    dirs = {meta.kind: ENV_DIR.value}
  else:
    dirs = build_default_envs(os.path.join(os.path.dirname(os.path.abspath(OUT.value or ".")),
                                           ".bench_envs"))
  matmul_samples = {"devices_1": benchlib.matmul_gflops(min_time=MIN_TIME.value)}
  print(f"matmul: {matmul_samples['devices_1']:.1f} GFLOP/s", flush=True)
  refs = {"sequential": NumpySequentialEnv, "matrix": NumpyMatrixEnv}
  flops = {}
  for kind, d in dirs.items():
    env, params, _ = build.load_env(d, "train")
    print(f"{kind} env ({env.num_actions} items):", flush=True)
    bench_env(kind, env, params, refs[kind], sizes, result, matmul_samples)
    if kind == "sequential" and HEADLINE in sizes:
      flops[kind] = benchlib.env_step_flops(env, params, HEADLINE, _key(0))
  with tempfile.TemporaryDirectory() as tmp:
    for d in sharded:
      run = _run_worker(d, list(dirs.values()), tmp)
      matmul_samples[f"devices_{d}"] = run.pop(MATMUL)
      for kind, sps in run.items():
        result[f"{kind}_vmap_steps_per_s_{HEADLINE}_devices_{d}"] = sps
        print(f"  {kind} vmap N={HEADLINE}, {d} devices: {sps:,.0f} env-steps/s", flush=True)
  result["matmul_gflops"] = max(matmul_samples.values())
  result["matmul_gflops_by_process"] = matmul_samples
  result["load_average_end"] = os.getloadavg()[0]
  if HEADLINE in sizes:
    _headlines(result, list(dirs), [1] + sharded, flops)
  benchlib.report(result, OUT.value)


def _headlines(result: dict, kinds: list[str], devices: list[int], flops: dict) -> None:
  """The issue's top-level keys, from the best device count, and its targets."""
  targets = {}
  for kind in kinds:
    by_d = {d: result[f"{kind}_vmap_steps_per_s_{HEADLINE}_devices_{d}"] for d in devices}
    best = max(by_d, key=by_d.get)
    sps, loop = by_d[best], result[f"{kind}_loop_steps_per_s"]
    result[f"{kind}_vmap_steps_per_s_{HEADLINE}"] = sps
    result[f"{kind}_devices_{HEADLINE}"] = best
    result[f"{kind}_speedup_{HEADLINE}"] = sps / loop
    result[f"{kind}_speedup_{HEADLINE}_devices_1"] = by_d[1] / loop
    targets[f"{kind}_100x_loop"] = sps / loop >= 100
    if kind in flops:
      result[f"{kind}_flops_per_step_{HEADLINE}"] = flops[kind]
      for d in devices:
        result[f"{kind}_gflops_{HEADLINE}_devices_{d}"] = flops[kind] * by_d[d] / HEADLINE / 1e9
      result[f"{kind}_gflops_{HEADLINE}"] = flops[kind] * sps / HEADLINE / 1e9
      result[f"{kind}_gflops_fraction_of_matmul"] = (
          result[f"{kind}_gflops_{HEADLINE}"] / result["matmul_gflops"])
  if "matrix" in kinds:
    targets["matrix_10M_steps_per_s_at_4096"] = result[f"matrix_vmap_steps_per_s_{HEADLINE}"] >= 1e7
  if "sequential" in flops:
    targets["sequential_30pct_of_matmul"] = result["sequential_gflops_fraction_of_matmul"] >= 0.3
  result["targets"] = targets


if __name__ == "__main__":
  cli.run(main)
