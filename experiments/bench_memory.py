"""python -m experiments.bench_memory [--env=DIR] [--sessions=256,4096,16384] [--agent=a2c]

Peak host memory of `python -m jaxrec.train` against the number of parallel sessions, on the
synthetic default env (built beside --out unless --env is given). Each size runs in its own
process (one epoch of `--num_sessions` x unroll_len x 2 env steps plus its evaluations) and its
peak resident set size comes from wait4(2). Prints JSON: per size the peak RSS, the
bytes per session fitted over the sizes (least squares), the base (intercept), and the
bound README states (BOUND_*) with whether every size is under it.

The reference measured in the same run is the smallest size: its RSS is the fixed cost (the
interpreter, JAX, XLA's compiled programs, the user models); the slope is what a session costs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import flags

from experiments import benchlib
from jaxrec import cli
from jaxrec.errors import ConfigError

# The bound README states for `python -m jaxrec.train` (the paper's A2C: Q critic, an update
# after every env step; SASRec d64, synthetic default env, CPU): peak RSS <= BOUND_BASE_BYTES +
# BOUND_BYTES_PER_SESSION x num_sessions. Measured (see README, "Memory"), then rounded up with
# headroom for allocator noise. The value critic (the default) updates on 10 steps per session
# at once: --critic=v measures it, against the same bound x its unroll.
BOUND_BASE_BYTES = 1_024 * 2**20
BOUND_BYTES_PER_SESSION = 180 * 2**10

ENV = flags.DEFINE_string("env", "", "env directory (default: the synthetic default env, built "
                          "once beside --out)")
SESSIONS = flags.DEFINE_list("sessions", ["256", "4096", "16384"], "session counts to measure")
AGENT = flags.DEFINE_string("agent", "a2c", "agent (a2c, dqn, pg)")
CRITIC = flags.DEFINE_enum("critic", "q", ["q", "v"], "a2c: q = the paper's (unroll 1, the "
                           "bound's configuration); v = the default value critic (unroll 10)")
EVAL = flags.DEFINE_integer("eval_sessions", 1024, "test-env sessions per evaluation")
OUT = flags.DEFINE_string("out", "", "also write the JSON here")


def peak_rss(env_dir: str, agent: str, sessions: int, eval_sessions: int,
             workdir: str, critic: str = "q") -> tuple[int, float]:
  """Peak RSS (bytes) and wall seconds of one jaxrec.train process with `sessions`."""
  import time
  steps = sessions * 2  # two updates of a2c --critic=q / dqn (unroll 1); else one unroll
  paper = ["--critic=q", "--unroll_len=1"] if agent == "a2c" and critic == "q" else []
  args = [sys.executable, "-m", "jaxrec.train", f"--agent={agent}", f"--env={env_dir}",
          f"--num_sessions={sessions}", f"--total_steps={steps}", f"--steps_per_epoch={steps}",
          f"--eval_sessions={eval_sessions}", f"--workdir={workdir}", *paper]
  t0 = time.perf_counter()
  proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=os.environ | {"JAX_PLATFORMS": "cpu"})
  _, status, usage = os.wait4(proc.pid, 0)
  stderr = proc.stderr.read().decode(errors="replace")
  proc.stderr.close()
  if os.waitstatus_to_exitcode(status) != 0:
    raise ConfigError(f"jaxrec.train with {sessions} sessions failed: "
                      f"{stderr.strip().splitlines()[-1:] or status}")
  return usage.ru_maxrss * 1024, time.perf_counter() - t0  # Linux: KiB


def bound(sessions: int, unroll: int = 1) -> int:
  """The stated bound; the per-session part scales with the steps one update sees."""
  return BOUND_BASE_BYTES + BOUND_BYTES_PER_SESSION * unroll * sessions


def measure(env_dir: str, agent: str, sizes: list[int], eval_sessions: int,
            critic: str = "q") -> dict:
  from jaxrec.agents.a2c import default_unroll
  unroll = default_unroll(critic) if agent == "a2c" else 1
  rows = []
  with tempfile.TemporaryDirectory(prefix="jaxrec-memory-") as tmp:
    for n in sizes:
      rss, wall = peak_rss(env_dir, agent, n, eval_sessions, os.path.join(tmp, str(n)), critic)
      rows.append({"sessions": n, "peak_rss_bytes": rss, "peak_rss_mib": round(rss / 2**20, 1),
                   "bound_bytes": bound(n, unroll), "under_bound": rss <= bound(n, unroll),
                   "wall_s": round(wall, 1)})
  result = {"agent": agent, "critic": critic if agent == "a2c" else None, "env": env_dir,
            "eval_sessions": eval_sessions, "sizes": rows,
            "bound": {"base_bytes": BOUND_BASE_BYTES,
                      "bytes_per_session": BOUND_BYTES_PER_SESSION * unroll},
            "all_under_bound": all(r["under_bound"] for r in rows)}
  if len(sizes) >= 2:
    x = np.array(sizes, float)
    y = np.array([r["peak_rss_bytes"] for r in rows], float)
    slope, base = np.polyfit(x, y, 1)
    result["fit"] = {"bytes_per_session": round(float(slope)), "base_bytes": round(float(base)),
                     "reference": f"{sizes[0]} sessions: "
                                  f"{rows[0]['peak_rss_mib']} MiB (fixed cost)"}
  return result


def main(argv):
  cli.reject_extra_args(argv)
  try:
    sizes = sorted({int(s) for s in SESSIONS.value})
  except ValueError:
    raise ConfigError(f"--sessions must be integers, got {SESSIONS.value}") from None
  if not sizes or sizes[0] <= 0:
    raise ConfigError("--sessions must be positive")
  env_dir = ENV.value or benchlib.default_env_dir(OUT.value)
  benchlib.report(measure(env_dir, AGENT.value, sizes, EVAL.value, CRITIC.value) | {
      "machine": benchlib.machine()}, OUT.value)


if __name__ == "__main__":
  cli.run(main)
