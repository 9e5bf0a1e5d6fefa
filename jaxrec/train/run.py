"""`train_and_evaluate(cfg, workdir)`: the one function behind `python -m jaxrec.train`.

Run directory:
  flags.json      the TrainConfig
  metrics.jsonl   one row per evaluation in the test env (epoch 0 = before any update):
                  epoch, env_steps, R, Len, Ravg, R_std + the train curve and losses
  curve.jsonl     the learning curve: one row per update (mean of the last 20 finished
                  train episodes vs total env steps)
  checkpoints/    orbax CheckpointManager: the whole loop state (params, optimizer, replay
                  buffer, env states, key) + the log rows, one step per epoch. A rerun of the
                  same command resumes from the latest and ends exactly as an uninterrupted run.

Agents (jaxrec.agents.registry): the baselines a2c, dqn, pg; llm_online (RQ3: the actor
proposes, the in-process oracle labeler picks); and, from a pre-training run
(`init_from`, see jaxrec.train.pretrain): ialp (the pre-trained policy, no updates: the paper's
iALP row), ialp_ft (A2C fine-tuned from it) and ialp_ap (frozen iALP mixed with a learnable
policy). Epoch 0's row is R@0 of the paper's Table 3.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from jaxrec.agents.registry import AGENTS, PRETRAINED, AgentConfig, make_agent
from jaxrec.agents.acting import check_strategy
from jaxrec.envs import build
from jaxrec import faults
from jaxrec.errors import ConfigError, NonFiniteError
from jaxrec.io import atomic_write_jsonl, atomic_write_text
from jaxrec.train import sharding
from jaxrec.train.evaluation import env_popularity, eval_modes
from jaxrec.train.loop import FINITE, LoopConfig, evaluate, make_train


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  agent: str = "a2c"
  env: str = ""
  num_sessions: int = 256
  total_steps: int = 51_200
  steps_per_epoch: int = 5_120
  explore: str = "categorical"
  epsilon: float = 0.1
  eval_sessions: int = 1024
  eval_explore: str = ""  # default: the training strategy
  eval_mode: str = "FB"  # comma-separated FB | NX_0 | NX_<k>; the first is the headline
  seed: int = 0
  agent_cfg: AgentConfig = AgentConfig()
  keep_checkpoints: int = 2
  init_from: str = ""  # a jaxrec.pretrain run directory (ialp, ialp_ft, ialp_ap)

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
    self.agent_cfg.validate()


def _scalars(tree) -> dict:
  return {k: float(np.asarray(v)) for k, v in tree.items()}


def check_finite(points: dict, epoch: int, where: str) -> None:
  """The NaN guard: raises NonFiniteError naming the first update of the epoch whose params or
  losses are not finite (points: the epoch's curve points, host arrays)."""
  ok = np.asarray(points[FINITE], bool)
  if ok.all():
    return
  i = int(np.argmin(ok))
  step = int(points["env_steps"][i])
  raise NonFiniteError(f"{where}: NaN or inf in the loss or parameters at env step {step} "
                       f"(update {i + 1} of epoch {epoch}); stopped before saving it, the last "
                       f"good checkpoint is epoch {epoch - 1}")


def resolved_agent_config(cfg: TrainConfig) -> AgentConfig:
  """cfg.agent_cfg with its run-dependent defaults filled (alpha_steps 0 = total_steps / 2)."""
  a = cfg.agent_cfg
  if a.alpha_steps == 0:
    a = dataclasses.replace(a, alpha_steps=max(1, cfg.total_steps // 2))
  return a


def build_agent(cfg: TrainConfig, env, env_params, env_meta: dict | None = None,
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
                             (env_meta or {}).get("fingerprint"))
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
  log = log if primary else (lambda s: None)
  env, env_params, meta = build.load_env(cfg.env, "train")
  test_env, test_params, _ = build.load_env(cfg.env, "test")
  max_len = int(meta["build"]["max_len"])
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

  os.makedirs(workdir, exist_ok=True)
  if primary:
    atomic_write_text(os.path.join(workdir, "flags.json"),
                      json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
  root = jax.random.PRNGKey(cfg.seed)
  eval_root, train_key = sharding.replicate(tuple(jax.random.split(root)), mesh)
  runner = init_runner(train_key, env_params)
  manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints),
      item_names=("runner", "log"))
  metrics, curve = [], []
  start = manager.latest_step()
  if start is not None:
    restored = manager.restore(start, args=ocp.args.Composite(
        runner=ocp.args.StandardRestore(sharding.abstract(jax.eval_shape(lambda: runner),
                                                          shardings)),
        log=ocp.args.JsonRestore()))
    runner, metrics, curve = restored.runner, restored.log["metrics"], restored.log["curve"]
    log(f"resumed from epoch {start} ({int(runner.env_steps)} env steps)")
  else:
    start = 0
    row = {"epoch": 0, "env_steps": 0} | _scalars(
        eval_fn(agent.policy_params(runner.agent), eval_root, 0, test_params))
    metrics.append(row)
    log(f"epoch 0: test R {row['R']:.3f} Len {row['Len']:.2f} Ravg {row['Ravg']:.3f}")

  def _train_one_epoch(epoch, num_epochs, start, t_start, runner, metrics, curve):
    t0 = time.perf_counter()
    new_runner, points = train_epoch(runner, env_params)
    points = jax.tree_util.tree_map(np.asarray, jax.device_get(points))
    dt = time.perf_counter() - t0
    check_finite(points, epoch, workdir)
    runner = new_runner
    curve = curve + [{k: float(v[i]) for k, v in points.items() if k != FINITE}
                     for i in range(iterations)]
    row = {"epoch": epoch, "env_steps": int(runner.env_steps)} | _scalars(
        eval_fn(agent.policy_params(runner.agent), eval_root, epoch, test_params))
    row |= {"train_curve_return": curve[-1]["curve_return"],
            "train_curve_length": curve[-1]["curve_length"],
            "steps_per_s": iterations * per_iteration / dt}
    row |= {k: curve[-1][k] for k in ("loss", "alpha") if k in curve[-1]}
    metrics = metrics + [row]
    manager.save(epoch, args=ocp.args.Composite(
        runner=ocp.args.StandardSave(runner),
        log=ocp.args.JsonSave({"metrics": metrics, "curve": curve})))
    faults.failpoint("train.saving")
    manager.wait_until_finished()
    faults.failpoint("train.saved")
    if primary:
      atomic_write_jsonl(os.path.join(workdir, "metrics.jsonl"), metrics)
      atomic_write_jsonl(os.path.join(workdir, "curve.jsonl"), curve)
    done_epochs = epoch - start
    eta = (time.perf_counter() - t_start) / done_epochs * (num_epochs - epoch)
    log(f"epoch {epoch}/{num_epochs}: {row['env_steps']} env steps, "
        f"{row['steps_per_s']:,.0f} steps/s, ETA {eta:.0f}s | test R {row['R']:.3f} "
        f"Len {row['Len']:.2f} Ravg {row['Ravg']:.3f}")
    return runner, metrics, curve

  t_start = time.perf_counter()
  # SIGTERM: finish the epoch in flight and its checkpoint, then stop (a SIGTERM during the
  # last epoch or the final writes lets the run finish).
  with faults.Preemption() as preemption:
    try:
      for epoch in range(start + 1, num_epochs + 1):
        runner, metrics, curve = _train_one_epoch(
            epoch, num_epochs, start, t_start, runner, metrics, curve)
        if preemption.requested and epoch < num_epochs:
          raise faults.Preempted(f"{workdir}: stopped after epoch {epoch} of {num_epochs}, "
                                 "its checkpoint is saved; rerun the same command to resume")
    finally:
      manager.close()
    if primary:
      atomic_write_jsonl(os.path.join(workdir, "metrics.jsonl"), metrics)
      atomic_write_jsonl(os.path.join(workdir, "curve.jsonl"), curve)
  return metrics
