"""`train_and_evaluate(cfg, workdir)`: the one function behind `python -m jaxrec.batchrl`.

Batch RL on the EasyRL4Rec / DORL protocol: the learner reads only the logged interactions of
a peer-protocol env directory (buffer.py: each user's sequence walked through the true env,
split where its leave rule fires, the logged ratings as rewards) and is evaluated after every
epoch in the directory's test ("true") env in each of `--eval_mode` (FB, NX_0, NX_10 by
default) with jaxrec.train.evaluation.evaluate_policy. The fitted user model (the train env)
is never read.

Run directory (the lifecycle is jaxrec.train.driver's: resume, NaN guard, SIGTERM):
  flags.json      the BatchConfig
  metrics.jsonl   one row per epoch (epoch 0 = the random init): the first mode's R, Len,
                  Ravg, ... and the others' prefixed (NX_0_R, ...), the epoch's mean losses,
                  updates/s
  results.json    after the last epoch: per mode the last epoch's metrics and the mean of the
                  last quarter of the epochs (the peer's convention), the uniformly random
                  policy's metrics in the same modes, and the buffer's counts with the logged
                  behaviour's own episodes replayed in the true env (buffer.summary)
  checkpoints/    orbax: "state" = params, target params, Adam state, update count
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.agents import acting
from jaxrec.agents.optim import adam
from jaxrec.batchrl import buffer as logged_buffer
from jaxrec.batchrl.learners import LEARNERS, HParams
from jaxrec.batchrl.loop import make_train
from jaxrec.batchrl.networks import MultiHead
from jaxrec.batchrl.sqn import WHICH_HEADS
from jaxrec.config import option
from jaxrec.envs import build
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import atomic_write_text
from jaxrec.nets.networks import REWARD_HANDLES, TRACKERS, NetConfig
from jaxrec.train import driver
from jaxrec.train.evaluation import env_popularity, eval_modes, evaluate_policy


@dataclasses.dataclass(frozen=True)
class BatchConfig:
  """`python -m jaxrec.batchrl`'s config; its options are the flags. Defaults: EasyRL4Rec's
  published Coat runs (visual_results/result_script/Coat.sh and the args in the logs of
  visual_results/result_logs/1-batchRL/Coat/), each named in its help; the learners'
  modules (bcq.py, cql.py, crr.py, sqn.py) name theirs. A learner-specific flag set for a learner
  that does not read it is refused."""
  agent: str = option("bcq", "batch learner: bcq (discrete BCQ), cql (discrete CQL on "
                      "QR-DQN), crr (discrete CRR), sqn (EasyRL4Rec's SQN: BCQ's loss, "
                      "--which_head's action)", choices=tuple(LEARNERS))
  env: str = option("", "peer-protocol env directory (experiments.build_envs --protocol=peer)")
  tracker: str = option("avg", "state tracker (Coat.sh --which_tracker avg)", choices=TRACKERS)
  window: int = option(3, "newest history items the tracker reads (Coat.sh --window_size 3)")
  dim: int = option(32, "item embedding width (get_args_all --embedding_dim 32)")
  num_layers: int = option(1, "sasrec tracker: blocks")
  num_heads: int = option(1, "sasrec tracker: heads (get_args_all --num_heads 1)")
  hidden_sizes: tuple[int, ...] = option((64, 64), "MLP widths between the tracker and the "
                                         "heads (get_args_all --hidden-sizes 64 64)")
  reward_handle: str = option("cat", "each history item's normalised logged reward as an input "
                              "(Coat.sh --reward_handle cat)", choices=REWARD_HANDLES)
  learning_rate: float = option(1e-3, "Adam learning rate (the logs' lr 0.001; the peer runs a "
                                "second Adam at the same rate for the tracker)")
  batch_size: int = option(64, "minibatch drawn with replacement (the logs' batch_size 64)")
  epochs: int = option(100, "epochs (Coat.sh --epoch 100)")
  updates_per_epoch: int = option(1000, "gradient steps per epoch (Coat.sh --step-per-epoch "
                                  "1000)")
  gamma: float = option(0.9, "discount (get_args_all --gamma 0.9)")
  target_period: int = option(320, "updates between target-network copies (run_Discrete*.py "
                              "--target-update-freq 320)")
  n_step: int = option(3, "bcq, cql: steps of the n-step target (run_Discrete*.py --n-step 3)")
  unlikely_threshold: float = option(0.5, "bcq: tau of the unlikely-action mask (the Coat "
                                     "log's 0.5; Coat.sh passes 0.6)")
  imitation_penalty: float = option(0.01, "bcq: weight of the mean squared imitation output "
                                    "(--imitation-logits-penalty 0.01)")
  head_softmax: bool = option(False, "bcq: softmax on the Q and imitation heads, as the peer's "
                              "tianshou Actor heads output (bcq.py)")
  num_quantiles: int = option(20, "cql: quantiles (run_DiscreteCQL.py --num-quantiles 20)")
  min_q_weight: float = option(10.0, "cql, crr: weight of the conservative term "
                               "(--min-q-weight 10; tianshou CRR's default 10)")
  beta: float = option(1.0, "crr: temperature of the exp advantage weight (tianshou 1.0)")
  ratio_max: float = option(20.0, "crr: upper bound of the weight (tianshou 20)")
  which_head: str = option("shead", "sqn: the head that picks the action, to act and to "
                           "bootstrap: qhead, shead (supervised) or bcq (Coat.sh --which_head "
                           "shead; run_SQN.py's default qhead)", choices=WHICH_HEADS)
  leave_split: bool = option(True, "split each logged sequence where the true env's leave "
                             "rule fires, as the peer's buffer does (buffer.py); off: one "
                             "episode per user")
  eval_sessions: int = option(100, "test-env episodes per evaluation and mode (--test-num 100)")
  eval_mode: str = option("FB,NX_0,NX_10", "evaluation modes, comma-separated (the peer's "
                          "FB, NX_0, NX_{force_length=10}); the first one's metrics are R, "
                          "Len, ..., the others' prefixed")
  seed: int = option(0, "seed of the init, the minibatches and the evaluation")
  keep_checkpoints: int = 2

  def validate(self) -> None:
    if self.agent not in LEARNERS:
      raise ConfigError(f"--agent must be one of {', '.join(LEARNERS)}; got {self.agent!r}")
    if not self.env:
      raise ConfigError("--env is required (a directory from experiments.build_envs "
                        "--protocol=peer)")
    if self.tracker not in TRACKERS:
      raise ConfigError(f"--tracker must be one of {', '.join(TRACKERS)}; got "
                        f"{self.tracker!r}")
    if self.which_head not in WHICH_HEADS:
      raise ConfigError(f"--which_head must be one of {', '.join(WHICH_HEADS)}; got "
                        f"{self.which_head!r}")
    if self.reward_handle not in REWARD_HANDLES:
      raise ConfigError(f"--reward_handle must be one of {', '.join(REWARD_HANDLES)}; got "
                        f"{self.reward_handle!r}")
    for f in ("window", "dim", "num_heads", "batch_size", "epochs", "updates_per_epoch",
              "target_period", "n_step", "num_quantiles", "eval_sessions", "keep_checkpoints"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    if self.num_layers < 0:
      raise ConfigError(f"--num_layers must be >= 0, got {self.num_layers}")
    if self.dim % self.num_heads:
      raise ConfigError(f"--dim ({self.dim}) must be a multiple of --num_heads "
                        f"({self.num_heads})")
    if any(h <= 0 for h in self.hidden_sizes):
      raise ConfigError(f"--hidden_sizes must be positive integers, got {self.hidden_sizes}")
    if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
      raise ConfigError(f"--learning_rate must be positive, got {self.learning_rate}")
    if not 0.0 <= self.gamma <= 1.0:
      raise ConfigError(f"--gamma must be in [0, 1], got {self.gamma}")
    if not 0.0 <= self.unlikely_threshold < 1.0:
      raise ConfigError(f"--unlikely_threshold must be in [0, 1), got "
                        f"{self.unlikely_threshold}")
    for f in ("imitation_penalty", "min_q_weight"):
      if not (getattr(self, f) >= 0 and math.isfinite(getattr(self, f))):
        raise ConfigError(f"--{f} must be >= 0, got {getattr(self, f)}")
    for f in ("beta", "ratio_max"):
      if not (getattr(self, f) > 0 and math.isfinite(getattr(self, f))):
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    eval_modes(self.eval_mode)

  def hparams(self) -> HParams:
    return HParams(gamma=self.gamma, unlikely_threshold=self.unlikely_threshold,
                   imitation_penalty=self.imitation_penalty, head_softmax=self.head_softmax,
                   num_quantiles=self.num_quantiles, min_q_weight=self.min_q_weight,
                   beta=self.beta, ratio_max=self.ratio_max, which_head=self.which_head)

  def net(self, num_items: int, history_len: int, num_tokens: int) -> NetConfig:
    return NetConfig(num_items=num_items, history_len=history_len, dim=self.dim,
                     num_layers=self.num_layers, num_heads=self.num_heads,
                     num_tokens=num_tokens, tracker=self.tracker, window=self.window,
                     hidden=tuple(self.hidden_sizes), reward_handle=self.reward_handle)


def last_quarter(rows: list[dict], key: str) -> float:
  """The mean of `key` over the last quarter of the epochs 1..E (at least one), the peer's
  convention for its tables."""
  rows = [r for r in rows if r["epoch"] > 0]
  n = max(1, len(rows) // 4)
  return float(np.mean([r[key] for r in rows[-n:]]))


def train_and_evaluate(cfg: BatchConfig, workdir: str, log=print) -> list[dict]:
  """Trains cfg.epochs epochs (resuming from workdir's latest checkpoint), evaluating in the
  true env after each; returns the metrics rows. Every input is checked before anything is
  written."""
  cfg.validate()
  test_env, test_params, meta = build.load_env(cfg.env, "test")
  if meta.protocol != "peer":
    raise DataError(f"{cfg.env}: a {meta.protocol!r}-protocol env; batch RL needs one built "
                    "with experiments.build_envs --protocol=peer (a true env and logged data)")
  ds = build.load_dataset_of(cfg.env)
  learner = LEARNERS[cfg.agent]
  hp = cfg.hparams()
  data = logged_buffer.build_logged(ds, test_env, test_params, cfg.gamma, cfg.n_step,
                                    cfg.leave_split)
  counts = logged_buffer.summary(data)
  net_cfg = cfg.net(test_env.num_actions, test_env.history_len, test_env.num_tokens)
  module = learner.loss_module()
  net = MultiHead(net_cfg, module.head_sizes(test_env.num_actions, hp))
  with_rewards = net_cfg.with_rewards
  optimizer = adam(cfg.learning_rate, 0.0)  # the peer clips no gradient
  init_state, train_epoch = make_train(
      lambda p, t, s: module.batch_loss(net.apply, p, t, s, hp),
      lambda k: net.init(k, net_cfg.example_input((1,))), optimizer, cfg.batch_size,
      cfg.updates_per_epoch, cfg.target_period, with_rewards)
  train_epoch = jax.jit(train_epoch)
  init_key, train_root, eval_root = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
  state = jax.jit(init_state)(init_key)
  abstract_state = jax.eval_shape(lambda: state)
  modes = eval_modes(cfg.eval_mode)
  popularity = env_popularity(cfg.env)
  popularity = None if popularity is None else jnp.asarray(popularity)
  max_len = meta.max_len

  def evaluate_all(policy, key, test_params, popularity):
    rows = [evaluate_policy(policy, test_env, test_params, jax.random.fold_in(key, i),
                            cfg.eval_sessions, max_len, mode, popularity, with_rewards)
            for i, mode in enumerate(modes)]
    return rows[0] | {f"{mode}_{k}": v for mode, row in zip(modes[1:], rows[1:])
                      for k, v in row.items()}

  @jax.jit
  def evaluate(params, key, test_params, popularity):
    def policy(k, history, env_state, allowed):
      del env_state
      return acting.select(k, module.scores(net.apply, params, history, hp),
                           learner.strategy, 0.0, allowed)
    return evaluate_all(policy, key, test_params, popularity)

  @jax.jit
  def evaluate_random(key, test_params, popularity):
    def policy(k, history, env_state, allowed):
      del history, env_state
      zeros = jnp.zeros((cfg.eval_sessions, test_env.num_actions))
      return acting.select(k, zeros, "categorical", 0.0, allowed)
    return evaluate_all(policy, key, test_params, popularity)

  log(f"{cfg.agent} on {cfg.env}: {counts['transitions']} logged transitions in "
      f"{counts['episodes']} episodes (mean length {counts['episode_len']:.2f}, leave rule "
      f"{'applied' if cfg.leave_split else 'not applied'}; in the true env R "
      f"{counts['behaviour']['R']:.2f}, Ravg {counts['behaviour']['Ravg']:.3f}), "
      f"{test_env.num_actions} items; "
      f"{cfg.epochs} epochs x {cfg.updates_per_epoch} updates of {cfg.batch_size}")

  epoch_fn = driver.scan_epoch(train_epoch, data, train_root, cfg.updates_per_epoch)

  def evaluate_fn(state, epoch):
    return driver.scalars(evaluate(state.params, jax.random.fold_in(eval_root, epoch),
                                   test_params, popularity))

  def progress(row):
    tail = f"true env R {row['R']:.3f} Len {row['Len']:.2f} Ravg {row['Ravg']:.3f}"
    if "loss" not in row:
      return "", tail
    return f"loss {row['loss']:.4f}, {row['updates_per_s']:,.0f} updates/s", tail

  job = driver.Job(name="batchrl", workdir=workdir, config=cfg, num_epochs=cfg.epochs,
                   keep_checkpoints=cfg.keep_checkpoints, counter="updates",
                   count=lambda state, epoch: epoch * cfg.updates_per_epoch,
                   timing=lambda dt: {"updates_per_s": cfg.updates_per_epoch / dt})
  _, logs = driver.run_epochs(job, state, abstract_state, epoch_fn=epoch_fn,
                              evaluate_fn=evaluate_fn, progress=progress, log=log)
  rows = logs["metrics"]
  random = driver.scalars(evaluate_random(jax.random.fold_in(eval_root, 0), test_params,
                                          popularity))
  results = {"agent": cfg.agent, "env": os.path.abspath(cfg.env), "dataset": meta.dataset,
             "fingerprint": meta.fingerprint, "epochs": rows[-1]["epoch"], "buffer": counts,
             "last_quarter_epochs": max(1, (len(rows) - 1) // 4), "modes": {}}
  for i, mode in enumerate(modes):
    prefix = "" if i == 0 else f"{mode}_"
    results["modes"][mode] = {
        "last": {k: rows[-1][prefix + k] for k in ("R", "Len", "Ravg")},
        "last_quarter": {k: last_quarter(rows, prefix + k) for k in ("R", "Len", "Ravg")},
        "random": {k: random[prefix + k] for k in ("R", "Len", "Ravg")}}
  atomic_write_text(os.path.join(workdir, "results.json"), json.dumps(results, indent=2) + "\n")
  return rows
