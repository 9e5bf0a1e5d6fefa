"""`train_and_evaluate(cfg, workdir)`: the one function behind `python -m jaxrec.train`.

Run directory (the lifecycle is jaxrec.train.driver's):
  flags.json      the TrainConfig
  metrics.jsonl   one row per evaluation in the test env (epoch 0 = before any update):
                  epoch, env_steps, R, Len, Ravg, R_std + the train curve and losses
  curve.jsonl     the learning curve: one row per update (mean of the last 20 finished
                  train episodes vs total env steps)
  checkpoints/    the driver's orbax layout: "state" = the whole loop state (params,
                  optimizer, replay buffer, env states, key), "log" = the rows above.

Agents (jaxrec.agents.registry): the baselines a2c, dqn, pg; llm_online (RQ3: the actor
proposes, the in-process oracle labeler picks); and, from a pre-training run
(`init_from`, see jaxrec.train.pretraining): ialp (the pre-trained policy, no updates: the
paper's iALP row), ialp_ft (A2C fine-tuned from it) and ialp_ap (frozen iALP mixed with a
learnable policy). Epoch 0's row is R@0 of the paper's Table 3.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh

from jaxrec.agents.a2c import default_unroll
from jaxrec.agents.registry import AGENTS, PRETRAINED, AgentConfig, make_agent
from jaxrec.agents.acting import check_strategy
from jaxrec.agents.types import STRATEGIES
from jaxrec.config import nested, option
from jaxrec.envs import build, dorl
from jaxrec.envs.store import EnvMeta
from jaxrec.errors import ConfigError
from jaxrec.train import driver, sharding
from jaxrec.train.evaluation import env_popularity, eval_modes
from jaxrec.train.loop import FINITE, LoopConfig, evaluate, make_train


TRAIN_REWARDS = ("plain", "dorl")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """`python -m jaxrec.train`'s config; its options (AgentConfig's too) are the flags."""
  agent: str = option("a2c", f"one of {', '.join(AGENTS)}")
  env: str = option("", "env directory from experiments.build_envs")
  num_sessions: int = option(256, "parallel sessions")
  total_steps: int = option(51_200, "env steps in all")
  steps_per_epoch: int = option(5_120, "env steps between test-env evaluations")
  explore: str = option("categorical", f"one of {', '.join(STRATEGIES)}")
  epsilon: float = option(0.1, "epsilon of the epsilon strategy")
  eval_sessions: int = option(1024, "test-env episodes per evaluation")
  eval_explore: str = option("", "test-time strategy (default --explore)")
  eval_mode: str = option("FB", "evaluation modes, comma-separated: FB, NX_0, NX_<k> (the "
                          "peer protocol's; the first one's metrics are R, Len, ..., the "
                          "others' are prefixed, e.g. NX_0_R)")
  seed: int = option(0, "seed of everything random in the run")
  agent_cfg: AgentConfig = nested(AgentConfig())
  keep_checkpoints: int = 2
  init_from: str = option("", "pre-training run directory (python -m jaxrec.pretrain) for "
                          "ialp, ialp_ft, ialp_ap")
  train_reward: str = option("plain", "the train env's reward: plain (the env directory's) or "
                             "dorl (DORL's shaping of a peer env built with --dorl_ensemble; "
                             "jaxrec.envs.dorl)", choices=TRAIN_REWARDS)
  lambda_variance: float = option(dorl.LAMBDA_VARIANCE, "dorl: weight of the ensemble-variance "
                                  "penalty")
  lambda_entropy: float = option(dorl.LAMBDA_ENTROPY, "dorl: weight of the logged-data entropy "
                                 "bonus")

  def validate(self) -> None:
    if self.agent not in AGENTS:
      raise ConfigError(f"--agent must be one of {', '.join(AGENTS)}; got {self.agent!r}")
    if self.agent in PRETRAINED and not self.init_from:
      raise ConfigError(f"--agent={self.agent} needs --init_from (a jaxrec.pretrain run "
                        "directory)")
    if self.init_from and self.agent not in PRETRAINED:
      raise ConfigError(f"--init_from applies to {', '.join(PRETRAINED)}, not --agent="
                        f"{self.agent}")
    if not self.env:
      raise ConfigError("--env is required (a directory from experiments.build_envs)")
    for f in ("num_sessions", "total_steps", "steps_per_epoch", "eval_sessions"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    if not 0.0 <= self.epsilon <= 1.0:
      raise ConfigError(f"--epsilon must be in [0, 1], got {self.epsilon}")
    check_strategy(self.explore)
    if self.eval_explore:
      check_strategy(self.eval_explore)
    eval_modes(self.eval_mode)
    if self.train_reward not in TRAIN_REWARDS:
      raise ConfigError(f"--train_reward must be one of {', '.join(TRAIN_REWARDS)}; got "
                        f"{self.train_reward!r}")
    for f in ("lambda_variance", "lambda_entropy"):
      if not (math.isfinite(getattr(self, f)) and getattr(self, f) >= 0.0):
        raise ConfigError(f"--{f} must be a finite number >= 0, got {getattr(self, f)}")
    self.agent_cfg.validate()
    a = self.agent_cfg
    if a.schedule == "collect":
      rollout = self.num_sessions * (a.unroll_len or default_unroll(a.critic))
      if self.steps_per_epoch % rollout:
        raise ConfigError(f"--steps_per_epoch ({self.steps_per_epoch}) must be a multiple of "
                          f"the collect length --num_sessions x unroll ({rollout})")
      if rollout % a.num_minibatches:
        raise ConfigError(f"--num_minibatches ({a.num_minibatches}) must divide the collect "
                          f"length --num_sessions x unroll ({rollout})")


def nonfinite_update(points: dict, epoch: int) -> str | None:
  """The NaN guard's finding: None, or where the first update of the epoch with non-finite
  params or losses is (points: the epoch's curve points, host arrays)."""
  ok = np.asarray(points[FINITE], bool)
  if ok.all():
    return None
  i = int(np.argmin(ok))
  return f"at env step {int(points['env_steps'][i])} (update {i + 1} of epoch {epoch})"


def resolved_agent_config(cfg: TrainConfig) -> AgentConfig:
  """cfg.agent_cfg with its run-dependent defaults filled (alpha_steps 0 = total_steps / 2)."""
  a = cfg.agent_cfg
  if a.alpha_steps == 0:
    a = dataclasses.replace(a, alpha_steps=max(1, cfg.total_steps // 2))
  return a


def train_env_of(cfg: TrainConfig):
  """-> (env, params, meta) of the run's train env: the env directory's, or DORL's shaping of
  it (--train_reward=dorl)."""
  if cfg.train_reward == "dorl":
    return dorl.load_train_env(cfg.env, cfg.lambda_variance, cfg.lambda_entropy)
  return build.load_env(cfg.env, "train")


def build_agent(cfg: TrainConfig, env, env_params, env_meta: EnvMeta | None = None,
                load_pretrained: bool = True):
  """The agent of a run, built exactly as `train_and_evaluate` builds it.

  load_pretrained=False skips reading `init_from` (the pre-trained agents then start from a
  random init of the same shapes): enough to restore a finished run's checkpoint.
  """
  agent_cfg = resolved_agent_config(cfg)
  pretrained = None
  if cfg.agent in PRETRAINED and load_pretrained:
    from jaxrec.train.policy import load_policy
    pretrained = load_policy(cfg.init_from, agent_cfg.net(env.num_actions, env.history_len,
                                                          env.num_tokens),
                             env_meta.fingerprint if env_meta else None)
  return make_agent(cfg.agent, agent_cfg, env.num_actions, env.history_len,
                    num_tokens=env.num_tokens,
                    num_sessions=cfg.num_sessions, env=env, env_params=env_params,
                    pretrained=pretrained)


def train_and_evaluate(cfg: TrainConfig, workdir: str, log=print,
                       mesh: Mesh | None = None) -> list[dict]:
  """Trains, evaluates every epoch, checkpoints; returns the metrics rows. mesh: sessions
  sharded over its `data` axis (jaxrec.train.sharding; default one device, or every device
  under jax.distributed); the numbers do not depend on it."""
  cfg.validate()
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.check_sessions(mesh, num_sessions=cfg.num_sessions, eval_sessions=cfg.eval_sessions)
  primary = jax.process_index() == 0  # one process writes the logs (orbax: every process)
  env, env_params, meta = train_env_of(cfg)
  test_env, test_params, _ = build.load_env(cfg.env, "test")
  max_len = meta.max_len
  agent = build_agent(cfg, env, env_params, meta)
  acting = sharding.ShardedActing(agent, mesh)
  env_params, test_params = (sharding.replicate(p, mesh) for p in (env_params, test_params))
  per_iteration = cfg.num_sessions * agent.unroll_len
  iterations = max(1, math.ceil(cfg.steps_per_epoch / per_iteration))
  num_epochs = max(1, math.ceil(cfg.total_steps / (iterations * per_iteration)))
  loop_cfg = LoopConfig(num_sessions=cfg.num_sessions, iterations_per_epoch=iterations,
                        strategy=cfg.explore, epsilon=cfg.epsilon)
  init_runner, train_epoch = make_train(loop_cfg, acting, env)
  init_runner, train_epoch, shardings = sharding.jit_loop(mesh, init_runner, train_epoch,
                                                          env_params)
  eval_strategy = cfg.eval_explore or cfg.explore
  popularity = sharding.replicate(env_popularity(cfg.env), mesh)

  def eval_all(params, root, epoch, test_params, popularity):
    key = jax.random.fold_in(root, epoch)
    rows = [evaluate(acting, params, test_env, test_params, key, cfg.eval_sessions, max_len,
                     eval_strategy, cfg.epsilon, mode, popularity)
            for mode in eval_modes(cfg.eval_mode)]
    return rows[0] | {f"{mode}_{k}": v for mode, row in zip(eval_modes(cfg.eval_mode)[1:],
                                                             rows[1:]) for k, v in row.items()}
  eval_jit = sharding.jit_replicated(eval_all, mesh)
  eval_fn = lambda params, root, epoch, test_params: eval_jit(params, root, epoch, test_params,
                                                              popularity)

  root = jax.random.PRNGKey(cfg.seed)
  eval_root, train_key = sharding.replicate(tuple(jax.random.split(root)), mesh)
  runner = init_runner(train_key, env_params)
  abstract_runner = sharding.abstract(jax.eval_shape(lambda: runner), shardings)

  def epoch_fn(runner, epoch):
    new_runner, points = train_epoch(runner, env_params)
    points = jax.tree_util.tree_map(np.asarray, jax.device_get(points))
    curve = [{k: float(v[i]) for k, v in points.items() if k != FINITE}
             for i in range(iterations)]
    stats = {"train_curve_return": curve[-1]["curve_return"],
             "train_curve_length": curve[-1]["curve_length"]}
    stats |= {k: curve[-1][k] for k in ("loss", "alpha") if k in curve[-1]}
    return new_runner, driver.Epoch(stats=stats, logs={"curve": curve},
                                    nonfinite=nonfinite_update(points, epoch))

  def progress(row):
    tail = f"test R {row['R']:.3f} Len {row['Len']:.2f} Ravg {row['Ravg']:.3f}"
    if "steps_per_s" not in row:
      return "", tail
    return f"{row['env_steps']} env steps, {row['steps_per_s']:,.0f} steps/s", tail

  job = driver.Job(name="train", workdir=workdir, config=cfg, num_epochs=num_epochs,
                   keep_checkpoints=cfg.keep_checkpoints, counter="env_steps",
                   count=lambda runner, epoch: int(runner.env_steps),
                   timing=lambda dt: {"steps_per_s": iterations * per_iteration / dt},
                   logs=("curve",), primary=primary)
  _, logs = driver.run_epochs(
      job, runner, abstract_runner, epoch_fn=epoch_fn, progress=progress, log=log,
      evaluate_fn=lambda runner, epoch: driver.scalars(
          eval_fn(agent.policy_params(runner.agent), eval_root, epoch, test_params)))
  return logs["metrics"]
