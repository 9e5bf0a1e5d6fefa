"""The EasyRL4Rec / DORL protocol for matrix data (the paper's Coat setting "follows [36]").

Read from the peer's public code (chongminggao/EasyRL4Rec; docs/protocol.md lists the sources
and what could not be confirmed):
  - evaluation ("true") env: a dense user x item rating matrix (Coat: the completed
    `coat_pseudoGT_ratingM.ascii`); reward = the matrix rating (CoatEnv.step);
  - training env: the same dynamics with the reward replaced by a user model fitted on the
    logged data, shifted so its minimum is 0 (Simulated_Env/base.py: pred - MIN_R);
  - leave rule in both: the user leaves when the new item is within `leave_threshold`
    (strictly) of an item in `sequence_action[t - W:t]` (W = num_leave_compute, Python
    slicing: see envs.base.leave_window), item distance = L2 between the item columns of the
    TRUE matrix (BaseData.get_distance_mat); step 0 never leaves; at most `max_turn` steps;
    the leaving step's reward counts; no low-reward quit. Published Coat settings: W = 7,
    threshold 6.0, max_turn 30 (visual_results/result_script/Coat.sh and the logs' args).
  - users drawn uniformly at random at each reset.
For a matrix other than Coat's the threshold 6.0 has no meaning (another scale and user
count), so by default it is calibrated: the threshold at which a uniformly random policy's mean
FB episode length in the true env equals the peer's near-uniform Coat policy's (PG after its
first epoch, catalog coverage 0.99: Len 14.80). Measured with a random policy only.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.loaders._common import iter_lines, to_float
from jaxrec.envs import calibrate
from jaxrec.envs.base import QuitParams
from jaxrec.envs.matrix import MatrixEnv, MatrixParams
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import sha256_file

COAT_LEAVE_THRESHOLD = 6.0  # Coat.sh --leave_threshold 6
LEAVE_WINDOW = 7  # Coat.sh --num_leave_compute 7
MAX_TURN = 30  # get_env_args default, in the logs' args
RANDOM_LEN = 14.80  # Coat PG epoch 1, FB len_tra (CV 0.99: a near-uniform policy)


def read_true_matrix(path: str) -> np.ndarray:
  """[U, I] float32 ratings from whitespace-separated text (one user per line, the peers'
  .ascii files) or .npy. Bad cells, ragged lines, NaN / inf: one-line DataError naming the
  file and line."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such file (--true_matrix)")
  if path.endswith(".npy"):
    try:
      m = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
      raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if m.ndim != 2 or m.dtype.kind not in "iuf" or 0 in m.shape:
      raise DataError(f"{path}: expected a non-empty 2-D numeric array, got {m.dtype} "
                      f"{m.shape}")
    bad = np.argwhere(~np.isfinite(m))
    if len(bad):
      raise DataError(f"{path}: row {bad[0][0] + 1}, column {bad[0][1] + 1}: "
                      f"{m[tuple(bad[0])]} is not a finite rating")
    return m.astype(np.float32)
  rows, width = [], None
  for n, line in iter_lines(path, "utf-8"):
    cells = line.split()
    if width is not None and len(cells) != width:
      raise DataError(f"{path}:{n}: {len(cells)} values, the first line has {width}")
    width = len(cells)
    rows.append([to_float(path, n, f"column {j + 1} (item {j})", c)
                 for j, c in enumerate(cells)])
  if not rows:
    raise DataError(f"{path}: empty rating matrix")
  return np.asarray(rows, np.float32)


def _key_index(key: str) -> int | None:
  """A user / item key's row / column in a true matrix: its integer (Coat's keys are line
  numbers) or the integer after a letter prefix (the synthetic data's u12 / i7)."""
  m = re.fullmatch(r"[A-Za-z_]*(\d+)", str(key))
  return int(m.group(1)) if m else None


def align(matrix: np.ndarray, ds: Dataset, path: str) -> np.ndarray:
  """The rows / columns of `matrix` for the dataset's users / items, in dataset order."""
  out = []
  for axis, keys, what in ((0, ds.user_keys, "user"), (1, ds.item_keys, "item")):
    idx = [_key_index(k) for k in keys]
    for k, i in zip(keys, idx):
      if i is None or i >= matrix.shape[axis]:
        raise DataError(f"{path}: {what} {k!r} of dataset {ds.name!r} has no "
                        f"{'row' if axis == 0 else 'column'} in the matrix "
                        f"({matrix.shape[0]} x {matrix.shape[1]})")
    out.append(np.asarray(idx))
  return matrix[np.ix_(out[0], out[1])]


def random_lengths(true: np.ndarray, thresholds: np.ndarray, key: jax.Array,
                   num_sessions: int = 4096, window: int = LEAVE_WINDOW,
                   max_turn: int = MAX_TURN) -> np.ndarray:
  """Mean FB episode length of a uniformly random policy in the true env of `true` [U, I]
  under each leave threshold.

  The random policy's items do not depend on when it leaves, so one batch of random
  trajectories (calibrate.random_trajectories: per step, the distance to the closest item of
  the peer's leave window) serves every threshold: an episode ends at the first step under it."""
  _, (env, params) = peer_envs(true, true, 0.0, history_len=2, window=window,
                               max_turn=max_turn)
  _, dmin = calibrate.random_trajectories(env, params, key, num_sessions, max_turn,
                                          with_scores=False)
  lengths = []
  for b in thresholds:
    leave = dmin < b
    leave[:, -1] = True  # max_turn
    lengths.append(float((np.argmax(leave, axis=1) + 1).mean()))
  return np.asarray(lengths)


def calibrate_threshold(true: np.ndarray, seed: int, target_len: float = RANDOM_LEN,
                        window: int = LEAVE_WINDOW, max_turn: int = MAX_TURN) -> tuple[float, float]:
  """-> (threshold, the random policy's mean length there): the rule of the module docstring,
  over a grid of quantiles of item-pair distances (items: the columns of `true` [U, I])."""
  item_vecs = true.T
  rng = np.random.default_rng(seed)
  a, b = rng.integers(0, len(item_vecs), size=(2, 20000))
  pair = np.linalg.norm(item_vecs[a] - item_vecs[b], axis=1)
  grid = np.quantile(pair, np.linspace(0.0, 0.2, 401))
  grid[0] = 0.0
  lens = random_lengths(true, grid, jax.random.PRNGKey(seed), window=window, max_turn=max_turn)
  i = int(np.argmin(np.abs(lens - target_len)))
  return float(grid[i]), float(lens[i])


def peer_quit(threshold: float, max_turn: int = MAX_TURN) -> QuitParams:
  return QuitParams(beta=jnp.float32(threshold), min_reward=jnp.float32(-np.inf),
                    max_len=jnp.int32(max_turn))


def peer_envs(true: np.ndarray, predicted: np.ndarray, threshold: float, history_len: int,
              window: int = LEAVE_WINDOW, max_turn: int = MAX_TURN, user_token: bool = False):
  """-> ((env, train params), (env, test params)): train reward = predicted - its min, test
  reward = the true matrix; both leave by L2 distance between true-matrix columns.
  user_token: the user's token in the observed history (MatrixEnv)."""
  env = MatrixEnv(true.shape[1], history_len, window, window_rule="peer",
                  num_users=true.shape[0] if user_token else 0)
  vecs = jnp.asarray(true.T)
  quit = peer_quit(threshold, max_turn)
  train = MatrixParams(table=jnp.asarray(predicted - predicted.min()), item_vecs=vecs, quit=quit)
  test = MatrixParams(table=jnp.asarray(true), item_vecs=vecs, quit=quit)
  return (env, train), (env, test)


def true_matrix_for(ds: Dataset, path: str | None, synthetic_cfg=None,
                    data_dir: str | None = None) -> tuple[np.ndarray, dict]:
  """-> (the ground-truth matrix aligned to `ds` [U, I], its source record): read from `path`;
  else the dataset's own: the synthetic generator's expected ratings (synthetic_cfg), KuaiRec's
  small_matrix.csv in data_dir (loaders.kuairec.true_matrix: the peer's clip at 5, id mapping)."""
  if path:
    m = read_true_matrix(path)
    return align(m, ds, path), {"path": os.path.abspath(path), "sha256": sha256_file(path),
                                "shape": list(m.shape)}
  if ds.name in ("kuairec", "kuairec_big") and data_dir:  # kuairec_big: refused by user id
    from jaxrec.data.loaders import kuairec
    true = kuairec.true_matrix(data_dir, ds.user_keys, ds.item_keys)
    small = os.path.join(data_dir, kuairec.SMALL)
    return true, {"path": os.path.abspath(small), "sha256": sha256_file(small),
                  "shape": list(true.shape),
                  "source": "KuaiRec small_matrix.csv watch_ratio clipped at 5 (KuaiData.load_mat)"}
  if ds.name != "synthetic":
    raise ConfigError(f"--protocol=peer on dataset {ds.name!r} needs --true_matrix=FILE (a "
                      "dense user x item rating matrix, e.g. Coat's "
                      "coat_pseudoGT_ratingM.ascii)")
  from jaxrec.data import synthetic
  truth = synthetic.generate_with_truth(synthetic_cfg or synthetic.SyntheticConfig())[1]
  return align(truth.ratings, ds, "synthetic ground truth"), {
      "path": "", "source": "synthetic generator (SyntheticTruth.ratings)",
      "shape": list(truth.ratings.shape)}
