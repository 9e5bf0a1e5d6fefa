"""python -m experiments.references --env=DIR [--eval_mode=FB,NX_0,NX_10 --sessions=1024
    --seed=0 --which=test --out=FILE.json]

The reference policies of jaxrec.envs.policies (random, popularity, greedy, safe_greedy,
planner) evaluated in an env exactly as the agents are (jaxrec.train.evaluation: same
metrics, modes and diagnostics), so a results table reads against them: a method's
normalised score is (R - R_random) / (R_planner - R_random), 0 = random, 1 = planner, as
Atari reports human-normalised scores. Prints JSON {mode: {policy: metrics}}.

In the test env (the default) the rows NAME@train are the same policies reading the TRAIN env's
user model and quit rule while acting in the test env: what a policy that is perfect in the env
the agents learn in earns where they are evaluated (the sim-to-real ceiling of a learner; with
--protocol=peer the train env's reward is the fitted DeepFM, with the sequential envs the two
envs are fitted on different users).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from absl import flags

from jaxrec import cli
from jaxrec.envs import build, policies
from jaxrec.errors import ConfigError
from jaxrec.train.evaluation import env_popularity, eval_modes, evaluate_policy

ENV = flags.DEFINE_string("env", None, "env directory from experiments.build_envs")
MODES = flags.DEFINE_string("eval_mode", "FB", "comma-separated FB | NX_0 | NX_<k>")
SESSIONS = flags.DEFINE_integer("sessions", 1024, "episodes per policy (fresh sessions)")
SEED = flags.DEFINE_integer("seed", 0, "evaluation key")
WHICH = flags.DEFINE_enum("which", "test", ["test", "train"], "which env of --env")
OUT = flags.DEFINE_string("out", None, "also write the JSON here")
TRANSFER = ("greedy", "safe_greedy", "planner")  # also run from the train env's model


def normalised_score(r: float, r_random: float, r_planner: float) -> float:
  """0 = the random policy's return, 1 = the planner's (nan when they are equal)."""
  span = r_planner - r_random
  return float((r - r_random) / span) if span > 0 else float("nan")


def reference_metrics(env_dir: str, modes: str = "FB", sessions: int = 1024, seed: int = 0,
                      which: str = "test") -> dict:
  """{mode: {policy: metrics}} of every reference policy in the `which` env of env_dir."""
  if sessions <= 0:
    raise ConfigError(f"--sessions must be positive, got {sessions}")
  modes = eval_modes(modes)
  env, params, meta = build.load_env(env_dir, which)
  pop = env_popularity(env_dir)
  pop = None if pop is None else jnp.asarray(pop)
  max_len = meta.max_len
  makers = [(name, name, params) for name in policies.POLICIES]
  if which == "test":
    _, train_params, _ = build.load_env(env_dir, "train")
    makers += [(f"{name}@train", name, train_params) for name in TRANSFER]
  out = {}
  for mode in modes:
    rows = {}
    for row_name, name, policy_params in makers:
      policy = policies.make_policy(name, env, policy_params, popularity=pop)
      fn = jax.jit(lambda key, params, pop, policy=policy: evaluate_policy(
          policy, env, params, key, sessions, max_len, mode, pop))
      rows[row_name] = {k: float(v)
                        for k, v in fn(jax.random.PRNGKey(seed), params, pop).items()}
    for row in rows.values():
      row["normalised"] = normalised_score(row["R"], rows["random"]["R"], rows["planner"]["R"])
    out[mode] = rows
  return out


def main(argv):
  cli.reject_extra_args(argv)
  if not ENV.value:
    raise ConfigError("--env is required (a directory from experiments.build_envs)")
  result = reference_metrics(ENV.value, MODES.value, SESSIONS.value, SEED.value, WHICH.value)
  cli.emit_json(result, OUT.value)


if __name__ == "__main__":
  cli.run(main)
