"""Labeled prompts from logged interactions: what LoRA tuning trains on and label quality scores.

An example is a user's history window (the `history_len` items before a position, -1 padded,
right-aligned as in request shards), k candidates and the index of the correct label: the true
next item sits at a uniformly random letter among k - 1 sampled negatives, or, for a share
`none_frac` of the rows, the k candidates are all negatives and the target is k ("None", the
paper's None option). Tuning reads the env's *train* split, label quality its *test* split;
both splits are rebuilt from the env directory's dataset and build config exactly as
`experiments.build_envs` cut them (by user, or chronologically), so the two never share an
interaction. Pure NumPy, deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from jaxrec.errors import ConfigError, DataError

NEGATIVES = ("random", "popular")


class Examples(NamedTuple):
  """history [N, L] int32 (-1 padding), candidates [N, k] int32, target [N] int32 in 0..k
  (k = None), true_item [N] int32 (the logged next item, whether shown or not), user [N]."""
  history: np.ndarray
  candidates: np.ndarray
  target: np.ndarray
  true_item: np.ndarray
  user: np.ndarray


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
  num: int = 1000
  k: int = 10
  history_len: int = 10
  none_frac: float = 0.0
  negatives: str = "random"
  seed: int = 0

  def validate(self) -> None:
    if self.num < 1 or self.history_len < 1:
      raise ConfigError(f"--num and --history must be positive, got {self.num}, "
                        f"{self.history_len}")
    if not 2 <= self.k <= 25:
      raise ConfigError(f"--k must be in 2..25, got {self.k}")
    if not 0.0 <= self.none_frac < 1.0:
      raise ConfigError(f"--none_frac must be in [0, 1), got {self.none_frac}")
    if self.negatives not in NEGATIVES:
      raise ConfigError(f"--negatives must be one of {', '.join(NEGATIVES)}, got "
                        f"{self.negatives!r}")


def split_of_env(env_dir: str, which: str):
  """(dataset side `which` of the env directory's split, the whole dataset): the same users
  or interactions the env's `which` user model was fitted on."""
  if which not in ("train", "test"):
    raise ConfigError(f"which must be train or test, got {which!r}")
  train, test, ds = splits_of_env(env_dir)
  return (train if which == "train" else test), ds


def splits_of_env(env_dir: str):
  """(train side, test side, the whole dataset) of the env directory's split, each side
  checked against the interaction count the build recorded."""
  from jaxrec.data.preprocess import split
  from jaxrec.envs import build
  meta = build.read_meta(env_dir)
  ds = build.load_dataset_of(env_dir)
  if meta.protocol != "paper":
    raise DataError(f"{env_dir}: a --protocol={meta.protocol} env has no train/test split of "
                    "interactions; build one with --protocol=paper")
  b = meta.build
  sides = split(ds, b.get("split", "user"), b.get("train_frac"), int(b.get("seed", 0)))
  for which, side in zip(("train", "test"), sides):
    want = meta.reports.get(which, {}).get("interactions")
    if want is not None and int(want) != side.num_interactions:
      raise DataError(f"{env_dir}: its {which} split had {want} interactions, rebuilding it "
                      f"gives {side.num_interactions} (built by another version?)")
  check_item_text(ds, env_dir)
  return (*sides, ds)


def check_item_text(ds, where: str) -> None:
  text = np.asarray(ds.item_text)
  if text.ndim != 2 or text.shape[1] == 0 or not np.char.str_len(text.astype(str)).any(axis=1).all():
    raise DataError(f"{where}: the dataset has items without text attributes; prompts need "
                    "item text (title, genre, ...)")


def sample_positions(side, num: int, history_len: int, seed: int):
  """(history [num, L], next item [num], user [num]) at distinct random positions >= 1."""
  users_of = side.user_of_interaction()
  pos = np.arange(side.num_interactions) - side.offsets[users_of]
  eligible = np.nonzero(pos >= 1)[0]
  if num > len(eligible):
    raise ConfigError(f"--num={num} exceeds the {len(eligible)} interactions with a history in "
                      f"the split ({side.name})")
  j = np.sort(np.random.default_rng([seed, 1]).choice(eligible, num, replace=False))
  u = users_of[j]
  idx = j[:, None] - history_len + np.arange(history_len)[None, :]
  history = np.where(idx >= side.offsets[u][:, None], side.seq_items[np.maximum(idx, 0)], -1)
  return history.astype(np.int32), side.seq_items[j].astype(np.int32), u.astype(np.int32)


def negatives(rng: np.random.Generator, exclude: np.ndarray, num_items: int, n: int,
              weights: np.ndarray | None) -> np.ndarray:
  """[N, n] distinct items per row, none equal to exclude [N] (Gumbel top-n of log weights)."""
  logw = np.zeros(num_items) if weights is None else np.log(weights)
  g = logw[None, :] + rng.gumbel(size=(len(exclude), num_items))
  g[np.arange(len(exclude)), exclude] = -np.inf
  return np.argsort(-g, axis=1)[:, :n].astype(np.int32)


def make_examples(side, num_items: int, popularity: np.ndarray, cfg: ExampleConfig) -> Examples:
  """`cfg.num` examples from the dataset side (see the module docstring). popularity [I]
  weights the `popular` negatives (counts; +1 so every item can be drawn)."""
  cfg.validate()
  if num_items < cfg.k + 1:
    raise ConfigError(f"--k={cfg.k} needs at least k + 1 items, the catalog has {num_items}")
  history, true_item, user = sample_positions(side, cfg.num, cfg.history_len, cfg.seed)
  rng = np.random.default_rng([cfg.seed, 2])
  weights = None if cfg.negatives == "random" else popularity.astype(np.float64) + 1.0
  cands = negatives(rng, true_item, num_items, cfg.k, weights)
  is_none = rng.random(cfg.num) < cfg.none_frac
  slot = rng.integers(0, cfg.k, cfg.num)  # the true item's letter: uniform over the k
  rows = np.nonzero(~is_none)[0]
  cands[rows, slot[rows]] = true_item[rows]
  target = np.where(is_none, cfg.k, slot).astype(np.int32)
  return Examples(history, cands, target, true_item, user)
