"""`train_and_evaluate(cfg, workdir)`: the one function behind `python -m jaxrec.offline`.

Offline next-item learning on a dataset's logged sequences: the dataset is loaded and
preprocessed as every jaxrec CLI does (jaxrec.data), split into train / test users by the split
the env builder uses (`jaxrec.data.preprocess.split`; with the defaults, the same users as an
env directory built from the same dataset with its default --split and --seed), and every
interaction becomes a transition (jaxrec.offline.transitions). Each epoch is one jitted
`lax.scan` over shuffled minibatches of the train transitions (jaxrec.offline.loop), then HR@k
and NDCG@k over every position of the test sequences (jaxrec.offline.metrics), ranked by the
supervised head (or the Q head: --eval_head=q).

Run directory (the lifecycle is jaxrec.train.driver's: resume, NaN guard, SIGTERM):
  flags.json      the OfflineConfig
  metrics.jsonl   one row per epoch (epoch 0 = the random init): HR@k, NDCG@k on the test
                  split, the popularity reference's (popularity_HR@k, ...: train-split next-item
                  counts, the same every row), the epoch's mean losses and samples/s
  results.json    after the last epoch: the final metrics and the popularity reference
                  (with --augment: how many train transitions have an augmented action)
  checkpoints/    orbax: "state" = params + Adam states of every copy + update count
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec.config import option
from jaxrec.data import registry
from jaxrec.data.dataset import Dataset
from jaxrec.data.preprocess import split as split_dataset
from jaxrec.data.synthetic import SyntheticConfig
from jaxrec.envs.store import fingerprint
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import atomic_write_text
from jaxrec.nets.networks import NetConfig
from jaxrec.offline import metrics as rank_metrics
from jaxrec.offline.augment import load_augmentation
from jaxrec.offline.learners import LEARNERS, HParams
from jaxrec.offline.loop import make_train, take, two_phase
from jaxrec.offline.sa2c import ADVANTAGE_MAX
from jaxrec.offline.networks import BACKBONES, SupervisedQNet
from jaxrec.offline.transitions import build_transitions
from jaxrec.agents.optim import adam
from jaxrec.train import driver

EVAL_HEADS = ("ce", "q")


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
  """`python -m jaxrec.offline`'s config; its options are the flags (the dataset flags are
  jaxrec.data.flags', copied into the plain fields below). Learner defaults: the authors' code
  (jaxrec/offline/sqn.py, sac.py, snqn.py, sa2c.py name each); sizes: LEA Sec. 5.1 (sequence
  10, dim 64). The learner-specific options (learners.LEARNERS[...].reads) are refused on the
  command line for a learner that does not read them."""
  agent: str = option("normal", "offline learner: normal (cross-entropy only), sqn (plus "
                      "double-Q on a Q head), sac (sqn, then the ce weighted by Q), snqn (sqn "
                      "plus sampled negatives), sa2c (snqn, then the ce weighted by the "
                      "advantage)", choices=tuple(LEARNERS))
  backbone: str = option("sasrec", "sequence encoder: SASRec or GRU4Rec (jaxrec.nets "
                         "StateEncoder)", choices=tuple(BACKBONES))
  history_len: int = option(10, "L: items a state holds (LEA, SQN: 10)")
  dim: int = option(64, "embedding and hidden size (LEA, SQN: 64)")
  num_layers: int = option(1, "SASRec blocks (SQN code --num_blocks 1)")
  num_heads: int = option(1, "SASRec attention heads (SQN code --num_heads 1)")
  dropout: float = option(0.1, "SASRec dropout in training (SQN code --dropout_rate 0.1: the "
                          "embedded input, attention weights, feed-forward outputs); never in "
                          "evaluation; the GRU backbone has none (nor has the authors')")
  learning_rate: float = option(0.01, "Adam learning rate (SQN code --lr 0.01; LEA: 1e-3 on "
                                "LFM)")
  batch_size: int = option(256, "minibatch (SQN code --batch_size 256; LEA: 100)")
  epochs: int = option(50, "passes over the train transitions (SQN code --epoch 50)")
  gamma: float = option(0.5, "sqn, sac, snqn, sa2c: discount of the TD target (SQN code "
                        "--discount 0.5)")
  neg: int = option(10, "snqn, sa2c: negative items sampled per transition (SA2C code --neg 10)")
  neg_reward: float = option(0.0, "snqn, sa2c: reward of a negative item in the TD loss (SA2C "
                             "code --r_negative 0)")
  warmup: int = option(15000, "sac, sa2c: updates trained with the sqn / snqn loss before the "
                       "weighted ce (SAC / SA2C code: total_step < 15000)")
  lr_2: float = option(0.001, "sa2c: Adam learning rate after the warm-up, a fresh optimizer "
                       "(SA2C code --lr_2 0.001)")
  clip: float = option(0.0, "sa2c: the advantage is clipped to [clip, 10]; negative: not "
                       "clipped (SA2C code --clip 0.0)")
  eval_head: str = option("ce", "the head whose scores rank the test items: ce (supervised, "
                          "the protocol's) or q (sqn)", choices=EVAL_HEADS)
  topk: tuple[int, ...] = option(rank_metrics.KS, "k of HR@k and NDCG@k")
  eval_chunk: int = option(1024, "test positions scored per step of the evaluation")
  split: str = option("user", "train / test split, the env builder's: user (80/20 by user) "
                      "or chrono (50/50 by time)", choices=("user", "chrono"))
  train_frac: float | None = option(None, "train share (default 0.8 user, 0.5 chrono)")
  split_seed: int = option(0, "seed of the user split (experiments.build_envs --seed: the "
                           "same users)")
  seed: int = option(0, "seed of the init, the shuffles and the double-Q role swaps")
  augment: str = option("", "LEA augmentation directory: requests/ (python -m "
                        "jaxrec.offline.augment) and labels/ (python -m llm_labeler.label); "
                        "each labeled item is an extra positive (jaxrec/offline/lea.py)")
  w_ah: float = option(0.1, "--augment: weight of the augmented cross-entropy L_ah (LEA Eq. "
                       "16; its best, Sec. 5.3: 0.1)")
  w_aq: float = option(0.01, "--augment: weight of the augmented Q loss L_aq (LEA Eq. 16; its "
                       "best, Sec. 5.3: 0.01)")
  augment_start: int = option(0, "--augment: the first update (counted over the whole run) "
                              "that uses the augmented actions")
  dataset: str = "synthetic"
  data_dir: str = ""
  synthetic: SyntheticConfig = SyntheticConfig()
  prep: registry.PrepConfig = registry.PrepConfig()
  keep_checkpoints: int = 2

  def validate(self) -> None:
    if self.agent not in LEARNERS:
      raise ConfigError(f"--agent must be one of {', '.join(LEARNERS)}; got {self.agent!r}")
    if self.backbone not in BACKBONES:
      raise ConfigError(f"--backbone must be one of {', '.join(BACKBONES)}; got "
                        f"{self.backbone!r}")
    if self.eval_head not in EVAL_HEADS:
      raise ConfigError(f"--eval_head must be one of {', '.join(EVAL_HEADS)}; got "
                        f"{self.eval_head!r}")
    if self.eval_head == "q" and not LEARNERS[self.agent].q_head:
      raise ConfigError(f"--eval_head=q needs a learner with a Q head; --agent={self.agent} "
                        "has none")
    for f in ("history_len", "dim", "num_heads", "batch_size", "epochs", "eval_chunk",
              "keep_checkpoints"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    if self.num_layers < 0:
      raise ConfigError(f"--num_layers must be >= 0, got {self.num_layers}")
    if self.dim % self.num_heads:
      raise ConfigError(f"--dim ({self.dim}) must be a multiple of --num_heads "
                        f"({self.num_heads})")
    if not self.learning_rate > 0:
      raise ConfigError(f"--learning_rate must be positive, got {self.learning_rate}")
    if not 0.0 <= self.dropout < 1.0:
      raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
    if self.neg <= 0:
      raise ConfigError(f"--neg must be positive, got {self.neg}")
    if self.warmup < 0:
      raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
    if not self.lr_2 > 0:
      raise ConfigError(f"--lr_2 must be positive, got {self.lr_2}")
    if not self.clip <= ADVANTAGE_MAX:
      raise ConfigError(f"--clip must be at most {ADVANTAGE_MAX:g} (the advantage's upper "
                        f"bound), got {self.clip}")
    if not np.isfinite(self.neg_reward):
      raise ConfigError(f"--neg_reward must be finite, got {self.neg_reward}")
    if not 0.0 <= self.gamma <= 1.0:
      raise ConfigError(f"--gamma must be in [0, 1], got {self.gamma}")
    if not self.topk or any(k <= 0 for k in self.topk):
      raise ConfigError(f"--topk must be positive integers, got {self.topk}")
    for f in ("w_ah", "w_aq"):
      if not (np.isfinite(getattr(self, f)) and getattr(self, f) >= 0):
        raise ConfigError(f"--{f} must be finite and >= 0, got {getattr(self, f)}")
    if self.augment_start < 0:
      raise ConfigError(f"--augment_start must be >= 0, got {self.augment_start}")
    if self.train_frac is not None and not 0.0 < self.train_frac < 1.0:
      raise ConfigError(f"--train_frac must be in (0, 1), got {self.train_frac}")
    if self.prep.max_seq_len is not None and self.prep.max_seq_len < 2:
      raise ConfigError(f"--max_seq_len must be >= 2: next-item learning needs two items per "
                        f"user, got {self.prep.max_seq_len}")

  def hparams(self) -> HParams:
    return HParams(gamma=self.gamma, neg=self.neg, neg_reward=self.neg_reward,
                   warmup=self.warmup, clip=self.clip, w_ah=self.w_ah, w_aq=self.w_aq,
                   augment_start=self.augment_start)

  def optimizer(self) -> optax.GradientTransformation:
    """Adam at --learning_rate; for a learner with a warm-up, a second fresh Adam (at the
    learner's second_lr option) from update --warmup on (loop.two_phase)."""
    learner = LEARNERS[self.agent]
    first = adam(self.learning_rate, 0.0)
    if not learner.warmup:
      return first
    return two_phase(first, adam(getattr(self, learner.second_lr), 0.0), self.warmup)

  def net(self, num_items: int) -> NetConfig:
    return NetConfig(num_items=num_items, history_len=self.history_len, dim=self.dim,
                     num_layers=self.num_layers, num_heads=self.num_heads,
                     tracker=BACKBONES[self.backbone])

  @property
  def method(self) -> str:
    """The results' method name (issue 20's naming: sasrec-normal, gru-sqn)."""
    return f"{self.backbone}-{self.agent}"


def load_splits(cfg: OfflineConfig, ds: Dataset | None = None) -> tuple[Dataset, Dataset,
                                                                         Dataset]:
  """(dataset, train, test): `ds` or the configured dataset, split as the env builder does."""
  if ds is None:
    ds = registry.load_dataset(cfg.dataset, cfg.data_dir or None, cfg.prep, cfg.synthetic)
  train, test = split_dataset(ds, cfg.split, cfg.train_frac, cfg.split_seed)
  return ds, train, test


def train_and_evaluate(cfg: OfflineConfig, workdir: str, log=print,
                       dataset: Dataset | None = None) -> list[dict]:
  """Trains cfg.epochs epochs (resuming from workdir's latest checkpoint), evaluating on the
  test split after each; returns the metrics rows. dataset: use it instead of loading
  cfg.dataset (tests). Every input is checked before anything is written."""
  cfg.validate()
  ds, train_ds, test_ds = load_splits(cfg, dataset)
  if max(cfg.topk) > ds.num_items:
    raise ConfigError(f"--topk {max(cfg.topk)} is larger than the catalog of dataset "
                      f"{ds.name!r} ({ds.num_items} items)")
  train = build_transitions(train_ds, cfg.history_len)
  test = build_transitions(test_ds, cfg.history_len)
  num_batches = train.size // cfg.batch_size
  if num_batches == 0:
    raise DataError(f"dataset {ds.name!r}: {train.size} train transitions, fewer than one "
                    f"--batch_size ({cfg.batch_size})")
  learner = LEARNERS[cfg.agent]
  net = SupervisedQNet(cfg.net(ds.num_items), q_head=learner.q_head, dropout=cfg.dropout)
  if ds.num_items < 2 and "neg" in learner.reads:
    raise DataError(f"dataset {ds.name!r}: {ds.num_items} item(s); --agent={cfg.agent} samples "
                    "negatives among the items other than the logged one")
  aug_stats = {}
  if cfg.augment:
    aug = load_augmentation(cfg.augment, ds, train, cfg.history_len)
    train, aug_stats = train._replace(aug_action=jnp.asarray(aug.action)), aug.stats
    log(f"--augment {cfg.augment}: {aug_stats['augment_rows']} of {train.size} train "
        f"transitions have an augmented action ({aug_stats['augment_dropped']} labels dropped: "
        f"unparsed or None), from update {cfg.augment_start}")
  init_state, train_epoch = make_train(learner, net, cfg.optimizer(), cfg.hparams(),
                                       cfg.batch_size, num_batches, augment=bool(cfg.augment))
  train_epoch = jax.jit(train_epoch)
  init_key, train_root = jax.random.split(jax.random.PRNGKey(cfg.seed))
  state = jax.jit(init_state)(init_key)
  abstract_state = jax.eval_shape(lambda: state)
  head = 0 if cfg.eval_head == "ce" else 1
  ks = tuple(cfg.topk)

  @jax.jit
  def evaluate(params, histories, truth):  # copy 0 recommends (the authors evaluate QN_1)
    return rank_metrics.evaluate_ranking(lambda h: net.apply(params, h)[head], histories,
                                         truth, ks, cfg.eval_chunk)

  pop = jnp.asarray(rank_metrics.popularity_scores(np.asarray(train.action), ds.num_items))
  popularity = {f"popularity_{k}": v for k, v in driver.scalars(jax.jit(
      lambda h, t: rank_metrics.evaluate_ranking(
          lambda x: jnp.broadcast_to(pop, (x.shape[0], pop.shape[0])), h, t, ks,
          cfg.eval_chunk))(test.history, test.action)).items()}
  log(f"{cfg.method} on {ds.name}: {train.size} train transitions ({train_ds.num_users} users), "
      f"{test.size} test positions ({test_ds.num_users} users), {ds.num_items} items; "
      f"{cfg.epochs} epochs x {num_batches} updates")

  epoch_fn = driver.scan_epoch(train_epoch, train, train_root, num_batches)

  def evaluate_fn(state, epoch):
    del epoch
    return driver.scalars(evaluate(take(state.params, 0), test.history, test.action)) | popularity

  k_show = 10 if 10 in ks else ks[0]

  def progress(row):
    tail = (f"test HR@{k_show} {row[f'HR@{k_show}']:.4f} NDCG@{k_show} "
            f"{row[f'NDCG@{k_show}']:.4f} (popularity {row[f'popularity_HR@{k_show}']:.4f})")
    if "loss" not in row:
      return "", tail
    return f"loss {row['loss']:.4f}, {row['samples_per_s']:,.0f} samples/s", tail

  job = driver.Job(name="offline", workdir=workdir, config=cfg, num_epochs=cfg.epochs,
                   keep_checkpoints=cfg.keep_checkpoints, counter="updates",
                   count=lambda state, epoch: epoch * num_batches,
                   timing=lambda dt: {"samples_per_s": num_batches * cfg.batch_size / dt})
  _, logs = driver.run_epochs(job, state, abstract_state, epoch_fn=epoch_fn,
                              evaluate_fn=evaluate_fn, progress=progress, log=log)
  final = logs["metrics"][-1]
  names = [f"{m}@{k}" for k in ks for m in ("HR", "NDCG")]
  results = {"dataset": ds.name, "fingerprint": fingerprint(ds), "epochs": final["epoch"],
             "test_positions": test.size, "train_transitions": train.size, **aug_stats,
             "methods": {cfg.method: {n: final[n] for n in names},
                         "popularity": {n: final[f"popularity_{n}"] for n in names}}}
  atomic_write_text(os.path.join(workdir, "results.json"), json.dumps(results, indent=2) + "\n")
  return logs["metrics"]
