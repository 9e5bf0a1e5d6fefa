"""python -m experiments.bench_train --out=FILE.json [--env_dir=ENV --sizes=100,4096]

Training throughput of whole training (act -> env step -> store -> update, the fused
`jaxrec.train.loop` scan), in env steps per second over all sessions, and the achieved GFLOP/s
(XLA's flop count of the acting forward, the env step and the update, per transition, times
the rate) against an f32 matmul timed in the same run, interleaved. For each configuration:

  paper             the paper's A2C step: SASRec d64, Q critic, an update after every env step
  default           `jaxrec.train --agent=a2c`'s defaults: SASRec, value critic, 10-step unroll
  easyrl4rec        `--config=easyrl4rec`: EasyRL4Rec's Coat A2C (avg tracker over 3 items with
                    their rewards, d32, MLP 64-64, collect 30 steps of each session then 3
                    minibatches)
  easyrl4rec_gru    the same with the GRU tracker
  easyrl4rec_sasrec the same with the SASRec tracker (window 3, as the peer's --window_size)
  easyrl4rec_caser  the same with the Caser tracker over 10 items (its filters need >= 4)
  easyrl4rec_nextitnet  the same with the NextItNet tracker (window 3)

plus `easyrl4rec_10M_s`: the time 10M env steps take at the measured rate (training only: the
evaluations and checkpoints of a real run come on top; docs/performance.md has whole runs), and
the ratio to EasyRL4Rec's own rate on this CPU (`PEER_STEPS_PER_S`, measured with its code, not
in this run: its repository cannot be installed here). --pyloop adds the same jitted pieces
driven by a Python loop per env step (the peers' trainer structure) for the paper config.

The env: --env_dir, else the synthetic default sequential env built beside --out. For the
equal-work comparison with the peer use a Coat-sized peer-protocol env (docs/performance.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from absl import flags

from experiments import benchlib
from jaxrec import cli
from jaxrec.agents.registry import AgentConfig, make_agent
from jaxrec.agents.types import Transition
from jaxrec.envs import build
from jaxrec.envs.base import history_input
from jaxrec.errors import ConfigError
from jaxrec.train import presets
from jaxrec.train.loop import LoopConfig, make_train, reads_rewards

OUT = flags.DEFINE_string("out", None, "JSON output file (also printed)")
ENV_DIR = flags.DEFINE_string("env_dir", None, "env directory (default: build the synthetic one)")
SIZES = flags.DEFINE_list("sizes", ["100", "4096"], "num_sessions values")
CONFIGS = flags.DEFINE_list("configs", ["paper", "default", "easyrl4rec", "easyrl4rec_gru",
                                        "easyrl4rec_sasrec", "easyrl4rec_caser",
                                        "easyrl4rec_nextitnet"], "configurations to time")
STEPS = flags.DEFINE_integer("steps", 30, "env steps of each session per timed call (rounded "
                             "up to whole updates)")
MIN_TIME = flags.DEFINE_float("min_time", 2.0, "seconds to time each configuration per round")
ROUNDS = flags.DEFINE_integer("rounds", 2, "interleaved timing rounds (matmul included)")
PYLOOP = flags.DEFINE_bool("pyloop", False, "also time the paper config driven by a Python "
                           "loop")

# EasyRL4Rec's unmodified A2C on Coat (100 envs, its Coat script), on this 2-core CPU, torch
# with 2 threads, measured side by side with jaxrec (issue "Training throughput on equal work").
PEER_STEPS_PER_S = 2477.0
TEN_MILLION = 10_000_000


def preset_agent_config(**override) -> AgentConfig:
  fields = {f.name for f in dataclasses.fields(AgentConfig)}
  fixed = {k: v for k, (v, _) in presets.EASYRL4REC_FIXED.items() if k in fields}
  return AgentConfig(**(fixed | override))


def agent_configs() -> dict[str, AgentConfig]:
  return {
      "paper": AgentConfig(critic="q", unroll_len=1, entropy_coef=0.0),
      "default": AgentConfig(),
      "easyrl4rec": preset_agent_config(),
      "easyrl4rec_gru": preset_agent_config(tracker="gru"),
      "easyrl4rec_sasrec": preset_agent_config(tracker="sasrec", num_heads=1),
      # Caser's tallest filter needs 4 items: the peer's Caser default window (10).
      "easyrl4rec_caser": preset_agent_config(tracker="caser", window=10),
      "easyrl4rec_nextitnet": preset_agent_config(tracker="nextitnet"),
  }


def flops_per_transition(agent, env, params, n: int) -> float:
  """XLA's flops of one transition: the acting forward and env step of one session-step plus
  its share of one update over a [T, n] rollout (a scan's body is counted once by XLA, so the
  pieces are counted separately)."""
  t = agent.unroll_len
  state = agent.init(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(1)
  hist = agent.cfg.net.example_input((n,))
  act = (lambda p, h, k: agent.act_value(p, h, k, "categorical")) if getattr(
      agent, "acts_with_values", False) else (lambda p, h, k: agent.act(p, h, k, "categorical"))
  rollout = agent.cfg.net.example_input((t, n))
  batch = Transition(rollout, jnp.zeros((t, n), jnp.int32), jnp.zeros((t, n)),
                     jnp.zeros((t, n), bool), rollout,
                     jnp.zeros((t, n)) if getattr(agent, "acts_with_values", False) else None)
  per_step = (benchlib.xla_flops(act, agent.policy_params(state), hist, key)
              + benchlib.env_step_flops(env, params, n, key))
  return (per_step * t + benchlib.xla_flops(agent.update, state, batch, key)) / (t * n)


def scan_fn(agent, env, params, n: int, steps: int):
  iterations = -(-steps // agent.unroll_len)
  init_runner, train_epoch = make_train(
      LoopConfig(num_sessions=n, iterations_per_epoch=iterations, strategy="categorical"),
      agent, env)
  runner = jax.jit(init_runner)(jax.random.PRNGKey(0), params)
  epoch = jax.jit(train_epoch)
  return (lambda: epoch(runner, params)), n * agent.unroll_len * iterations


def pyloop_fn(agent, env, params, n: int, steps: int):
  """The same jitted act / vmapped env step / update, one Python iteration per env step."""
  act = jax.jit(lambda p, h, k: agent.act(p, h, k, "categorical", 0.1))
  vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  update = jax.jit(agent.update)
  split = jax.jit(lambda k: jax.random.split(k, n + 2))
  obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(
      jax.random.split(jax.random.PRNGKey(0), n), params)
  agent_state = agent.init(jax.random.PRNGKey(1))
  iterations = -(-steps // agent.unroll_len)
  first, next_input = history_input(env, params, reads_rewards(agent))  # as the fused loop
  history, next_input = first(obs.history), jax.jit(next_input)

  def run():
    nonlocal history, state, agent_state
    key = jax.random.PRNGKey(2)
    for _ in range(iterations):
      batch = []
      for _ in range(agent.unroll_len):
        keys = split(key)
        key, k_act, k_env = keys[0], keys[1], keys[2:]
        action = act(agent.policy_params(agent_state), history, k_act)
        new_obs, state, reward, done, _ = vstep(k_env, state, action, params)
        new_history = next_input(history, new_obs.history, reward, done)
        batch.append(Transition(history, action, reward, done, new_history))
        history = new_history
      batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *batch)
      agent_state, _ = update(agent_state, batch, key)
    return agent_state.step

  return run, n * agent.unroll_len * iterations


def main(argv):
  cli.reject_extra_args(argv)
  benchlib.check_rounds(ROUNDS.value)
  env_dir = ENV_DIR.value or benchlib.default_env_dir(OUT.value)
  env, params, meta = build.load_env(env_dir, "train")
  sizes = [int(s) for s in SIZES.value]
  configs = agent_configs()
  unknown = sorted(set(CONFIGS.value) - set(configs))
  if unknown:
    raise ConfigError(f"--configs: unknown {unknown}; known: {', '.join(configs)}")
  fns, work, flops = {}, {}, {}
  for name in CONFIGS.value:
    agent = make_agent("a2c", configs[name], env.num_actions, env.history_len,
                       num_tokens=env.num_tokens)
    for n in sizes:
      key = f"{name}_{n}"
      fns[key], work[key] = scan_fn(agent, env, params, n, STEPS.value)
      flops[key] = flops_per_transition(agent, env, params, n)
      if PYLOOP.value and name == "paper":
        fns[f"{key}_pyloop"], work[f"{key}_pyloop"] = pyloop_fn(agent, env, params, n,
                                                                STEPS.value)
        flops[f"{key}_pyloop"] = flops[key]
  secs, matmul = benchlib.best_times_with_matmul(fns, ROUNDS.value, MIN_TIME.value)
  result = benchlib.machine() | {
      "env_dir": env_dir, "env_kind": meta.kind, "num_items": env.num_actions,
      "history_len": env.history_len, "matmul_gflops": matmul,
      "peer_steps_per_s": PEER_STEPS_PER_S}
  for key, s in secs.items():
    rate = work[key] / s
    gflops = rate * flops[key] / 1e9
    result[f"{key}_steps_per_s"] = rate
    result[f"{key}_mflop_per_transition"] = flops[key] / 1e6
    result[f"{key}_gflops"] = gflops
    result[f"{key}_frac_of_matmul"] = gflops / matmul
    print(f"{key}: {rate:,.0f} env steps/s, {flops[key] / 1e6:.3f} MFLOP/transition, "
          f"{gflops:.1f} GFLOP/s ({gflops / matmul:.1%} of the matmul's {matmul:.1f})",
          flush=True)
  for n in sizes:
    rate = result.get(f"easyrl4rec_{n}_steps_per_s")
    if rate:
      result[f"easyrl4rec_{n}_over_peer"] = rate / PEER_STEPS_PER_S
      result[f"easyrl4rec_{n}_10M_s"] = TEN_MILLION / rate
  benchlib.report(result, OUT.value)


if __name__ == "__main__":
  cli.run(main)
