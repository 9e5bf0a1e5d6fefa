"""python -m experiments.bench_scale --out=FILE.json [--devices=1,2,4,8 --num_sessions=4096]

Env steps per second with the sessions sharded over a `data` axis of 1, 2, 4, 8 devices
(jaxrec.train.sharding), the same global number of sessions on each:
  - steps_per_s_devices_D:      A2C training, the fused loop (act -> step -> update);
  - env_steps_per_s_devices_D:  the random-policy sequential env alone (vmapped auto-reset step
                                in one jitted scan, as experiments.bench_envs);
  - env_gflops_devices_D:       that env's achieved GFLOP/s (XLA's flop count of one step /
                                measured time), and its fraction of `matmul_gflops`, the
                                machine's f32 matmul rate: in each worker the env timing is
                                interleaved with matmul timings (--rounds rounds, best of
                                each, as experiments.bench_envs), and the reference is the
                                best matmul rate of the run (every process's is kept in
                                `matmul_gflops_by_process`);
plus memory (bytes per session of the RunnerState, replicated bytes, the DQN replay buffer, and
XLA's temporary bytes per device of one compiled A2C epoch) and a metric-equality check: each
device count trains the same seeded epoch, whose curve and final network outputs must match the
1-device run. On CPU the devices are forced host devices (XLA_FLAGS=
--xla_force_host_platform_device_count=D, read when jax is imported, so every device count runs
in its own subprocess); they share the machine's cores, so on a CPU this measures the
partitioning overhead and the cores one device leaves idle, not added hardware (the JSON's
`note` says which). On accelerators (one
process per host, --devices up to the local count) the same numbers are the scaling curve.
The env is the synthetic default (sequential) unless --env_dir is given. Prints and writes JSON.
"""

from __future__ import annotations

import json
import os
import tempfile

from absl import flags

from experiments import benchlib
from jaxrec import cli
from jaxrec.errors import ConfigError
from jaxrec.io import atomic_write_text

OUT = flags.DEFINE_string("out", None, "JSON output file (also printed)")
ENV_DIR = flags.DEFINE_string("env_dir", None, "env directory (default: build the synthetic one)")
DEVICES = flags.DEFINE_list("devices", ["1", "2", "4", "8"], "device counts to measure")
NUM_SESSIONS = flags.DEFINE_integer("num_sessions", 4096, "global sessions (all devices)")
ITERATIONS = flags.DEFINE_integer("iterations", 10, "A2C updates per timed scan call")
SCAN_STEPS = flags.DEFINE_integer("scan_steps", 50, "env steps per timed random-policy call")
MIN_TIME = flags.DEFINE_float("min_time", 2.0, "seconds to time each configuration for "
                              "(the env and matmul: per round)")
ROUNDS = flags.DEFINE_integer("rounds", 2, "interleaved env / matmul timing rounds per device "
                              "count")
DIM = flags.DEFINE_integer("dim", 64, "agent encoder width")
WORKER = flags.DEFINE_integer("worker_devices", 0, "internal: measure on this many devices "
                              "and write the JSON to --out")


def _worker(env_dir: str, d: int) -> dict:
  """Measures on a mesh of d devices (this process was started with >= d devices)."""
  import jax
  import numpy as np

  from experiments import benchlib
  from jaxrec.agents.registry import AgentConfig, make_agent
  from jaxrec.envs import build
  from jaxrec.train import sharding
  from jaxrec.train.loop import LoopConfig, make_train

  n, iters = NUM_SESSIONS.value, ITERATIONS.value
  mesh = sharding.make_mesh(sharding.MeshConfig(d))
  sharding.check_sessions(mesh, num_sessions=n)
  env, params, meta = build.load_env(env_dir, "train")
  params = sharding.replicate(params, mesh)
  out = benchlib.machine() | {"devices": d, "env_kind": meta.kind,
                              "num_items": env.num_actions}

  # A2C training.
  agent = make_agent("a2c", AgentConfig(dim=DIM.value), env.num_actions, env.history_len)
  init_runner, train_epoch = make_train(
      LoopConfig(num_sessions=n, iterations_per_epoch=iters, strategy="categorical"),
      sharding.ShardedActing(agent, mesh), env)
  init, epoch, _ = sharding.jit_loop(mesh, init_runner, train_epoch, params)
  runner = init(jax.random.PRNGKey(0), params)
  epoch = epoch.lower(runner, params).compile()
  mem = epoch.memory_analysis()
  out["a2c_epoch_temp_bytes_per_device"] = int(getattr(mem, "temp_size_in_bytes", -1))
  secs = benchlib.best_time(lambda: epoch(runner, params), MIN_TIME.value)
  out["steps_per_s"] = n * agent.unroll_len * iters / secs
  # The equality check: one seeded epoch from the same init; its curve and the final net's
  # outputs on fixed histories.
  trained, curve = epoch(runner, params)
  probe = np.random.default_rng(0).integers(-1, env.num_actions, (32, env.history_len),
                                            dtype=np.int32)
  logits, q = agent.net.apply(jax.device_get(trained.agent.params), probe)
  curve = jax.device_get(curve)
  out["check"] = {"curve": {k: np.asarray(v, np.float64).tolist() for k, v in curve.items()},
                  "logits": np.asarray(logits, np.float64).ravel().tolist(),
                  "q": np.asarray(q, np.float64).ravel().tolist()}
  if d == 1:
    dqn = make_agent("dqn", AgentConfig(dim=DIM.value), env.num_actions, env.history_len)
    dqn_init, _ = make_train(LoopConfig(num_sessions=n), dqn, env)
    out["memory"] = {
        "a2c": sharding.runner_bytes(runner),
        "dqn": sharding.runner_bytes(jax.eval_shape(dqn_init, jax.random.PRNGKey(0), params))}

  # The random-policy env alone (the rollout bench_envs times, sessions over the mesh).
  run = benchlib.random_policy_rollout(env, params, n, SCAN_STEPS.value,
                                       jax.random.PRNGKey(1), mesh)
  secs, matmul = benchlib.best_times_with_matmul({"env": run}, ROUNDS.value, MIN_TIME.value)
  out["env_steps_per_s"] = n * SCAN_STEPS.value / secs["env"]
  out["matmul_gflops"] = matmul
  return out


def _compare(base: dict, other: dict) -> dict:
  """Largest differences of the equality-check numbers, absolute and relative to the largest
  magnitude of each (float noise is relative to the scale, not to values near zero)."""
  import numpy as np
  diffs = {}
  parts = {"logits": (base["logits"], other["logits"]), "q": (base["q"], other["q"])}
  parts |= {f"curve_{k}": (v, other["curve"][k]) for k, v in base["curve"].items()}
  worst = 0.0
  for name, (a, b) in parts.items():
    a, b = np.asarray(a), np.asarray(b)
    diff = float(np.max(np.abs(a - b)))
    scaled = diff / max(float(np.max(np.abs(a))), 1e-12)
    if name in ("logits", "q"):
      diffs[f"{name}_max_abs_diff"] = diff
    worst = max(worst, scaled)
  diffs["max_diff_over_scale"] = worst
  diffs["equal"] = bool(worst < 1e-4)
  return diffs


def _run_worker(d: int, env_dir: str, tmp: str) -> dict:
  return benchlib.run_device_worker(
      "experiments.bench_scale", d, os.path.join(tmp, f"devices_{d}.json"),
      [f"--env_dir={env_dir}", f"--num_sessions={NUM_SESSIONS.value}",
       f"--iterations={ITERATIONS.value}", f"--scan_steps={SCAN_STEPS.value}",
       f"--min_time={MIN_TIME.value}", f"--rounds={ROUNDS.value}", f"--dim={DIM.value}"])


def main(argv):
  cli.reject_extra_args(argv)
  if WORKER.value:
    result = _worker(ENV_DIR.value, WORKER.value)
    atomic_write_text(OUT.value, json.dumps(result) + "\n")
    return
  try:
    devices = sorted({int(x) for x in DEVICES.value})
  except ValueError:
    raise ConfigError(f"--devices must be a list of positive integers; got {DEVICES.value}")
  if not devices or devices[0] <= 0:
    raise ConfigError(f"--devices must be a list of positive integers; got {DEVICES.value}")
  benchlib.check_rounds(ROUNDS.value)
  for d in devices:
    if NUM_SESSIONS.value % d:
      raise ConfigError(f"--num_sessions ({NUM_SESSIONS.value}) must be a multiple of every "
                        f"--devices value; {d} is not a divisor")
  env_dir = ENV_DIR.value or benchlib.default_env_dir(OUT.value)
  load_start = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as tmp:
    runs = {}
    for d in devices:
      runs[d] = _run_worker(d, env_dir, tmp)
      print(f"{d} device(s): A2C training {runs[d]['steps_per_s']:,.0f} env-steps/s, "
            f"random-policy env {runs[d]['env_steps_per_s']:,.0f} env-steps/s", flush=True)
  # Measured in this process, which has the machine's default devices (one on CPU, whose
  # matmul uses every core): one more matmul sample and the env's flops per session-step.
  import jax
  from jaxrec.envs import build
  env, params, _ = build.load_env(env_dir, "train")
  flops_per_step = benchlib.env_step_flops(env, params, NUM_SESSIONS.value,
                                           jax.random.key(0)) / NUM_SESSIONS.value
  by_process = {"parent": benchlib.matmul_gflops(min_time=MIN_TIME.value)}
  by_process |= {f"devices_{d}": runs[d]["matmul_gflops"] for d in devices}
  matmul = max(by_process.values())
  first = runs[devices[0]]
  result = {k: first[k] for k in ("device", "cpu_count", "platform", "jax", "env_kind",
                                  "num_items")}
  result |= {"num_sessions": NUM_SESSIONS.value, "agent": "a2c", "agent_dim": DIM.value,
             "iterations": ITERATIONS.value, "scan_steps": SCAN_STEPS.value,
             "load_average": [load_start, os.getloadavg()[0]]}  # 1-min, at start and end
  for d in devices:
    result[f"steps_per_s_devices_{d}"] = runs[d]["steps_per_s"]
    result[f"env_steps_per_s_devices_{d}"] = runs[d]["env_steps_per_s"]
    result[f"a2c_epoch_temp_bytes_per_device_{d}"] = runs[d]["a2c_epoch_temp_bytes_per_device"]
  result["matmul_gflops"] = matmul
  result["matmul_gflops_by_process"] = by_process
  result["env_flops_per_session_step"] = flops_per_step
  for d in devices:
    gflops = flops_per_step * runs[d]["env_steps_per_s"] / 1e9
    result[f"env_gflops_devices_{d}"] = gflops
    result[f"env_gflops_fraction_of_matmul_devices_{d}"] = gflops / matmul
  if "memory" in first:
    result["memory"] = first["memory"]
  result["metric_equality"] = {
      f"devices_{d}_vs_{devices[0]}": _compare(first["check"], runs[d]["check"])
      for d in devices[1:]}
  result["metrics_equal"] = all(v["equal"] for v in result["metric_equality"].values())
  if "cpu" in first["device"].lower():
    last = devices[-1]
    ratio = lambda k: result[f"{k}_devices_{last}"] / result[f"{k}_devices_{devices[0]}"]
    result["note"] = (
        f"CPU with {first['cpu_count']} cores: the devices are forced host devices "
        "(--xla_force_host_platform_device_count) that share those cores, so no compute is "
        f"added. {last} vs {devices[0]} device(s): A2C training x{ratio('steps_per_s'):.2f}, "
        f"random-policy env x{ratio('env_steps_per_s'):.2f}. Below 1 is partitioning and "
        "collective overhead; above 1 is more host threads (one per device) using an idle core "
        "or taking a larger share of a CPU that other jobs load (see load_average), not a "
        "speed-up from hardware. Scaling numbers need real devices (GPUs, TPUs, hosts).")
  benchlib.report(result, OUT.value)


if __name__ == "__main__":
  cli.run(main)
