"""python -m experiments.bench_batchrl --env=ENV --out=FILE.json [--agents=bcq,cql,crr
--updates=200 --threads=1 --rounds=3 --min_time=2]

Training throughput (updates/s, minibatches of 64) of jaxrec's batch-RL learners against the
peer's (EasyRL4Rec's run_DiscreteBCQ / CQL / CRR.py on tianshou), on the logged buffer of a
peer-protocol env directory (experiments.build_envs --protocol=peer), measured in one run:

  jax       jaxrec's fused loop: `--updates` updates in one jitted lax.scan (jaxrec.batchrl.loop
            make_train's train_epoch through driver.scan_epoch, what `python -m jaxrec.batchrl`
            runs per epoch, the per-update metrics read back), minibatches drawn on device
  torch     the peer's learn() in plain PyTorch (experiments/batchrl_torch.py: the same network,
            the losses as tianshou writes them, a Python loop per update, the minibatch drawn on
            the host, two Adams, the loss terms read back with .item())
  tianshou  only where tianshou 2.0.x is importable (the `peer` extra): the upstream algorithm
            classes DiscreteBCQ / DiscreteCQL (over QRDQNPolicy) / DiscreteCRR, each
            `algorithm.update(buffer, 64)` on a tianshou ReplayBuffer holding the same
            transitions, the observation being the env's (items, normalised rewards) window
            and the same torch network computing the avg-tracker state inside the model.

`peer_updates_per_s` is the tianshou rate where it ran, else the torch port's (`peer` says
which); `ratio` = jax / peer. Every side starts from the same JAX init; the peer's settings
throughout (BatchConfig's defaults: avg tracker over 3 items with rewards, d 32, MLP 64-64,
Adam 1e-3, batch 64, n-step 3, target every 320 updates, 20 quantiles). Compilation and each
side's first call are not timed (benchlib.best_time); rates are the best call over `--rounds`
interleaved rounds of `--min_time` s, beside a 2048^3 f32 matmul timed in the same rounds.

Threads: torch.set_num_threads(--threads). XLA's CPU pool is not set from here (its flags
would have to be set before JAX starts): run the program under `taskset -c N` so both sides
share the same core(s); `pinned_cpus` records the affinity and `load_average` the host's load
at the start and the end.

What the peer does that no side here copies: its state tracker rebuilds each state by walking
its buffer backwards in NumPy at every call (batchrl_torch's docstring), so both peer rates
are upper bounds on the peer's own.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import jax
import numpy as np
from absl import flags

from experiments import benchlib
from jaxrec import cli
from jaxrec.agents.optim import adam
from jaxrec.batchrl import buffer as logged_buffer
from jaxrec.batchrl.learners import LEARNERS
from jaxrec.batchrl.loop import make_train
from jaxrec.batchrl.networks import MultiHead
from jaxrec.batchrl.run import BatchConfig
from jaxrec.envs import build
from jaxrec.errors import ConfigError, DataError
from jaxrec.train import driver

SIDES = ("jax", "torch", "tianshou")
# The learners with a peer reference here (batchrl_torch.LOSSES, the tianshou classes); others
# in jaxrec.batchrl.learners (sqn) have none yet.
AGENTS = ("bcq", "cql", "crr")


def define_flags() -> None:
  """The CLI's flags, defined only when this module runs as the program: tests import it beside
  other experiments whose flags share names (--out)."""
  global ENV, OUT, AGENTS_FLAG, UPDATES, THREADS, ROUNDS, MIN_TIME
  ENV = flags.DEFINE_string("env", None, "peer-protocol env directory")
  OUT = flags.DEFINE_string("out", None, "JSON output file (also printed)")
  AGENTS_FLAG = flags.DEFINE_list("agents", list(AGENTS), "learners to time")
  UPDATES = flags.DEFINE_integer("updates", 200, "updates per timed call (each side)")
  THREADS = flags.DEFINE_integer("threads", 1, "torch.set_num_threads")
  ROUNDS = flags.DEFINE_integer("rounds", 3, "interleaved timing rounds (matmul included)")
  MIN_TIME = flags.DEFINE_float("min_time", 2.0, "seconds to time each function per round")


def tianshou_version() -> str | None:
  try:
    import tianshou
  except ImportError:
    return None
  return tianshou.__version__ if tianshou.__version__.startswith("2.0") else None


def load_buffer(env_dir: str, cfg: BatchConfig):
  """-> (the logged buffer as `python -m jaxrec.batchrl` builds it, the true env)."""
  test_env, test_params, meta = build.load_env(env_dir, "test")
  if meta.protocol != "peer":
    raise DataError(f"{env_dir}: a {meta.protocol!r}-protocol env; the benchmark needs one "
                    "built with experiments.build_envs --protocol=peer")
  ds = build.load_dataset_of(env_dir)
  data = logged_buffer.build_logged(ds, test_env, test_params, cfg.gamma, cfg.n_step,
                                    cfg.leave_split)
  return data, test_env


def jax_fn(cfg: BatchConfig, env, data, updates: int, seed: int = 0):
  """-> (zero-argument call of `updates` fused updates from one initial state, that state's
  params)."""
  module, hp = LEARNERS[cfg.agent].loss_module(), cfg.hparams()
  net_cfg = cfg.net(env.num_actions, env.history_len, env.num_tokens)
  net = MultiHead(net_cfg, module.head_sizes(env.num_actions, hp))
  init_state, train_epoch = make_train(
      lambda p, t, s: module.batch_loss(net.apply, p, t, s, hp),
      lambda k: net.init(k, net_cfg.example_input((1,))), adam(cfg.learning_rate, 0.0),
      cfg.batch_size, updates, cfg.target_period, net_cfg.with_rewards)
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  state0 = jax.jit(init_state)(init_key)
  epoch_fn = driver.scan_epoch(jax.jit(train_epoch), data, train_key, updates)
  return (lambda: epoch_fn(state0, 1)[0]), state0.params


def torch_net(cfg: BatchConfig, env, params):
  """batchrl_torch.MultiHead of cfg's learner with `params` (a Flax tree) copied in."""
  from experiments import batchrl_torch
  module, hp = LEARNERS[cfg.agent].loss_module(), cfg.hparams()
  net = batchrl_torch.MultiHead(env.num_tokens, env.num_actions, cfg.dim, cfg.window,
                                tuple(cfg.hidden_sizes), module.head_sizes(env.num_actions, hp),
                                cfg.reward_handle == "cat")
  net.load_flax(jax.device_get(params))
  return net


def torch_fn(cfg: BatchConfig, env, data, updates: int, params, seed: int = 0):
  from experiments import batchrl_torch
  tdata = batchrl_torch.torch_data(jax.device_get(data._asdict()), cfg.reward_handle == "cat")
  trainer = batchrl_torch.Trainer(cfg.agent, torch_net(cfg, env, params), tdata, cfg.hparams(),
                                  cfg.batch_size, cfg.learning_rate, cfg.target_period, seed)
  return lambda: trainer.run(updates)


def tianshou_buffer(data, history_len: int):
  """A tianshou ReplayBuffer of the logged transitions in episode order; obs = [items (as
  floats), normalised rewards] [N, 2L] float32 (exact: item ids are small integers)."""
  from tianshou.data import ReplayBuffer
  d = jax.device_get(data._asdict())
  obs = lambda p: np.concatenate([d[f"{p}items"], d[f"{p}rewards"]], axis=1).astype(np.float32)
  done = np.asarray(d["done"], bool)
  return ReplayBuffer.from_data(obs(""), np.asarray(d["action"], np.int64),
                                np.asarray(d["reward"], np.float32), done,
                                np.zeros_like(done), done, obs("next_"))


def tianshou_fn(cfg: BatchConfig, env, buf, updates: int, params, seed: int = 0):
  """-> zero-argument call of `updates` `algorithm.update(buf, batch_size)` of tianshou 2.0's
  algorithm for cfg.agent, on the torch network loaded with `params`."""
  import gymnasium as gym
  import torch
  from tianshou.algorithm import DiscreteBCQ, DiscreteCQL, DiscreteCRR
  from tianshou.algorithm.imitation.discrete_bcq import DiscreteBCQPolicy
  from tianshou.algorithm.modelfree.qrdqn import QRDQNPolicy
  from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
  from tianshou.algorithm.optim import AdamOptimizerFactory
  from tianshou.utils.torch_utils import policy_within_training_step

  net, hp, L = torch_net(cfg, env, params), cfg.hparams(), env.history_len

  class Head(torch.nn.Module):
    """obs [B, 2L] -> (head i's output, state) (`tuple_out`) or the output alone; the
    network is shared by the heads as the peer's actor and imitator share their `Net`."""

    def __init__(self, i: int, tuple_out: bool = True, reshape: int = 0):
      super().__init__()
      self.net, self.i, self.tuple_out, self.reshape = net, i, tuple_out, reshape

    def forward(self, obs, state=None, info=None):
      x = torch.as_tensor(obs, dtype=torch.float32)
      out = self.net(x[:, :L].long(), x[:, L:])[self.i]
      if self.reshape:
        out = out.reshape(out.shape[0], -1, self.reshape)
      return (out, state) if self.tuple_out else out

  space = gym.spaces.Discrete(env.num_actions)
  optim = AdamOptimizerFactory(lr=cfg.learning_rate)
  common = {"gamma": cfg.gamma, "target_update_freq": cfg.target_period}
  if cfg.agent == "bcq":
    policy = DiscreteBCQPolicy(model=Head(0), imitator=Head(1),
                               target_update_freq=cfg.target_period,
                               unlikely_action_threshold=cfg.unlikely_threshold,
                               action_space=space)
    algo = DiscreteBCQ(policy=policy, optim=optim, n_step_return_horizon=cfg.n_step,
                       imitation_logits_penalty=cfg.imitation_penalty, **common)
  elif cfg.agent == "cql":
    policy = QRDQNPolicy(model=Head(0, reshape=hp.num_quantiles), action_space=space)
    algo = DiscreteCQL(policy=policy, optim=optim, min_q_weight=cfg.min_q_weight,
                       num_quantiles=cfg.num_quantiles, n_step_return_horizon=cfg.n_step,
                       **common)
  elif cfg.agent == "crr":
    policy = DiscreteActorPolicy(actor=Head(0), action_space=space)
    algo = DiscreteCRR(policy=policy, critic=Head(1, tuple_out=False), optim=optim,
                       min_q_weight=cfg.min_q_weight, beta=cfg.beta,
                       ratio_upper_bound=cfg.ratio_max, **common)
  else:
    raise ConfigError(f"no tianshou 2.0 algorithm for --agents={cfg.agent}")
  torch.manual_seed(seed)
  np.random.seed(seed)  # tianshou's buffer.sample draws from NumPy's global generator

  def call():
    for _ in range(updates):  # as tianshou's OfflineTrainer._training_step calls it
      with policy_within_training_step(algo.policy):
        stats = algo.update(sample_size=cfg.batch_size, buffer=buf)
    return stats

  return call


def check_args(agents, updates: int, rounds: int, threads: int) -> None:
  """One-line ConfigErrors for the flags, before anything is loaded."""
  unknown = [a for a in agents if a not in AGENTS]
  if unknown or not agents:
    raise ConfigError(f"--agents must name some of {', '.join(AGENTS)} (the learners with a "
                      f"peer reference); got {','.join(agents)}")
  for name, v in (("updates", updates), ("threads", threads)):
    if v <= 0:
      raise ConfigError(f"--{name} must be positive, got {v}")
  benchlib.check_rounds(rounds)


class Shape(NamedTuple):
  """What the networks read of the env: its items, history length and input ids."""
  num_actions: int
  history_len: int
  num_tokens: int


def run_bench(env_dir: str, agents, updates: int, rounds: int, min_time: float, threads: int,
              out: str | None = None) -> dict:
  """The benchmark's JSON (module docstring) on env_dir's logged buffer."""
  check_args(agents, updates, rounds, threads)
  base = BatchConfig(env=env_dir)
  base.validate()
  data, env = load_buffer(env_dir, base)
  result = bench_logged(data, Shape(env.num_actions, env.history_len, env.num_tokens), base,
                        agents, updates, rounds, min_time, threads)
  result = {"env": os.path.abspath(env_dir)} | result
  benchlib.report(result, out)
  return result


def bench_logged(data, env: Shape, base: BatchConfig, agents, updates: int, rounds: int,
                 min_time: float, threads: int) -> dict:
  """run_bench's JSON on a given buffer (jaxrec.batchrl.buffer.Logged) and config."""
  try:
    import torch
  except ImportError:
    raise ConfigError("experiments.bench_batchrl needs PyTorch for its reference (the `hf` "
                      "extra: pip install -e .[hf])") from None
  check_args(agents, updates, rounds, threads)
  load_start = os.getloadavg()
  torch.set_num_threads(threads)
  ts = tianshou_version()
  buf = tianshou_buffer(data, env.history_len) if ts else None
  fns = {}
  for agent in agents:
    cfg = dataclasses.replace(base, agent=agent)
    fns[f"jax_{agent}"], params = jax_fn(cfg, env, data, updates)
    fns[f"torch_{agent}"] = torch_fn(cfg, env, data, updates, params)
    if ts:
      fns[f"tianshou_{agent}"] = tianshou_fn(cfg, env, buf, updates, params)
  secs, matmul = benchlib.best_times_with_matmul(fns, rounds, min_time)
  learners = {}
  for agent in agents:
    row = {f"{side}_updates_per_s": updates / secs[f"{side}_{agent}"]
           for side in SIDES if f"{side}_{agent}" in secs}
    row["peer_updates_per_s"] = row["tianshou_updates_per_s" if ts else "torch_updates_per_s"]
    row["ratio"] = row["jax_updates_per_s"] / row["peer_updates_per_s"]
    row["jax_over_torch"] = row["jax_updates_per_s"] / row["torch_updates_per_s"]
    learners[agent] = row
  return benchlib.machine() | {
      "transitions": data.size, "num_items": env.num_actions, "agents": list(agents),
      "batch_size": base.batch_size, "updates_per_call": updates, "tracker": base.tracker,
      "window": base.window, "dim": base.dim, "hidden_sizes": list(base.hidden_sizes),
      "num_quantiles": base.num_quantiles, "n_step": base.n_step,
      "target_period": base.target_period, "threads": threads,
      "torch_threads": torch.get_num_threads(),
      "pinned_cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
      else None,
      "torch": torch.__version__, "tianshou": ts,
      "peer": f"tianshou {ts}" if ts else "torch port (experiments/batchrl_torch.py)",
      "rounds": rounds, "min_time_s": min_time, "matmul_gflops": matmul,
      "compile_time_timed": False,
      "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
      "learners": learners}


def main(argv):
  cli.reject_extra_args(argv)
  if not ENV.value:
    raise ConfigError("--env is required (a directory from experiments.build_envs "
                      "--protocol=peer)")
  run_bench(ENV.value, tuple(AGENTS_FLAG.value), UPDATES.value, ROUNDS.value, MIN_TIME.value,
            THREADS.value, OUT.value)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
