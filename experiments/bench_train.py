"""python -m experiments.bench_train --out=FILE.json

Training throughput (env steps per second, all sessions, updates included), in one run:
  - scan:   the fused loop of jaxrec.train.loop (act -> step -> store -> update in one jitted
            lax.scan per epoch);
  - pyloop: the same jitted act / vmapped env step / update functions called once per env step
            from a Python loop (the structure of the peers' trainers).
For A2C at each --sizes value, and DQN at the largest. The env is built from the synthetic
default (sequential) unless --env_dir is given. Prints and writes JSON.
"""

from __future__ import annotations


import jax
from absl import flags

from experiments import benchlib
from jaxrec import cli
from jaxrec.agents.registry import AgentConfig, make_agent
from jaxrec.agents.types import Transition
from jaxrec.envs import build
from jaxrec.train.loop import LoopConfig, make_train

OUT = flags.DEFINE_string("out", None, "JSON output file (also printed)")
ENV_DIR = flags.DEFINE_string("env_dir", None, "env directory (default: build the synthetic one)")
SIZES = flags.DEFINE_list("sizes", ["1", "256", "4096"], "num_sessions values for A2C")
ITERATIONS = flags.DEFINE_integer("iterations", 20, "updates per timed scan call")
MIN_TIME = flags.DEFINE_float("min_time", 2.0, "seconds to time each configuration for")
DIM = flags.DEFINE_integer("dim", 64, "agent encoder width")


def scan_steps_per_s(agent, env, params, n, iterations, min_time):
  init_runner, train_epoch = make_train(
      LoopConfig(num_sessions=n, iterations_per_epoch=iterations, strategy="categorical"),
      agent, env)
  runner = jax.jit(init_runner)(jax.random.PRNGKey(0), params)
  epoch = jax.jit(train_epoch)
  secs = benchlib.best_time(lambda: epoch(runner, params), min_time)
  return n * agent.unroll_len * iterations / secs


def pyloop_steps_per_s(agent, env, params, n, iterations, min_time):
  """Same functions, one Python iteration per env step."""
  act = jax.jit(lambda p, h, k: agent.act(p, h, k, "categorical", 0.1))
  vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  update = jax.jit(agent.update)
  split = jax.jit(lambda k: jax.random.split(k, n + 2))
  obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(
      jax.random.split(jax.random.PRNGKey(0), n), params)
  agent_state = agent.init(jax.random.PRNGKey(1))

  def run():
    nonlocal obs, state, agent_state
    key = jax.random.PRNGKey(2)
    for _ in range(iterations):
      steps = []
      for _ in range(agent.unroll_len):
        keys = split(key)
        key, k_act, k_env = keys[0], keys[1], keys[2:]
        action = act(agent.policy_params(agent_state), obs.history, k_act)
        new_obs, state, reward, done, _ = vstep(k_env, state, action, params)
        steps.append(Transition(obs.history, action, reward, done, new_obs.history))
        obs = new_obs
      batch = jax.tree_util.tree_map(lambda *x: jax.numpy.stack(x), *steps)
      agent_state, _ = update(agent_state, batch, key)
    return agent_state.step

  secs = benchlib.best_time(run, min_time)
  return n * agent.unroll_len * iterations / secs


def main(argv):
  cli.reject_extra_args(argv)
  env_dir = ENV_DIR.value or benchlib.default_env_dir(OUT.value)
  env, params, meta = build.load_env(env_dir, "train")
  sizes = [int(s) for s in SIZES.value]
  result = benchlib.machine() | {
            "env_kind": meta.kind, "num_items": env.num_actions, "agent_dim": DIM.value}
  cfg = AgentConfig(dim=DIM.value)
  for name, ns in (("a2c", sizes), ("dqn", sizes[-1:])):
    agent = make_agent(name, cfg, env.num_actions, env.history_len)
    for n in ns:
      iters = ITERATIONS.value
      scan = scan_steps_per_s(agent, env, params, n, iters, MIN_TIME.value)
      loop = pyloop_steps_per_s(agent, env, params, n, iters, MIN_TIME.value)
      result[f"{name}_scan_steps_per_s_{n}"] = scan
      result[f"{name}_pyloop_steps_per_s_{n}"] = loop
      result[f"{name}_scan_over_pyloop_{n}"] = scan / loop
      print(f"{name} N={n}: scan {scan:,.0f} steps/s, python loop {loop:,.0f} steps/s "
            f"({scan / loop:.2f}x)", flush=True)
  largest = sizes[-1]
  result["a2c_pyloop_steps_per_s"] = result[f"a2c_pyloop_steps_per_s_{largest}"]
  benchlib.report(result, OUT.value)


if __name__ == "__main__":
  cli.run(main)
