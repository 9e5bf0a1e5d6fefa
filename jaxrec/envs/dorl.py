"""DORL (Gao et al., "Alleviating Matthew Effect of Offline Reinforcement Learning in Interactive
Recommendation", SIGIR 2023): A2C trained in the fitted user model whose reward is reshaped,

  r(u, a_t) = max(0, pred(u, a_t) - lambda_variance * var(u, a_t)
                     + lambda_entropy * entropy(a_{t-1}, a_t) - MIN_R),

with the ensemble's penalty and the logged data's entropy bonus. Read from the authors' code
(chongminggao/DORL-codes) and its port (chongminggao/EasyRL4Rec):

  - the reward: DORL-codes src/core/worldModel/simulated_env.py `SimulatedEnv._compute_pred_reward`
    (version "v1", no exposure intervention: clip0(penalized) / (1 + 0)); EasyRL4Rec
    environments/Simulated_Env/penalty_ent_exp.py `PenaltyEntExpSimulatedEnv` is the same
    without the variance term and with a final max(0, .).
    MIN_R = pred.min() - lambda_variance * var.max() + lambda_entropy * entropy_min,
    MAX_R = pred.max() - lambda_variance * var.min() + lambda_entropy * entropy_max
    (entropy_min / max: the sum over the entropy windows k of the min / max of the table's
    values with keys of length k; run_Policy_Main.py `prepare_envs`). MAX_R - MIN_R is the
    train env's reward bound the state tracker normalises by (train_max; presets' `cat`).
  - the entropy DEPENDS ON THE ACTION, not only on the state: the step first appends a_t to
    history_action, then reads action_k = history_action[t - step_n_actions + 1 : t + 1]
    (step_n_actions = max(entropy_window) = 2) and sums, for k = 1, 2, the table value of
    tuple(sorted(last k actions)), 1 where the key is absent, plus 1 for each missing action
    (t = 0 has no a_{t-1}: the k = 2 term is 1). So entropy(a_{t-1}, a_t) =
    H1[a_t] + H2[{a_{t-1}, a_t}] with absent keys worth 1.
  - the table (EasyRL4Rec src/core/userModel/user_model_ensemble.py `get_save_entropy_mat`):
    for each logged user, items in time order, each item i_j counts as a "next item" of the
    context tuple(sorted(i_{j-k}..i_{j-1})) for each k in entropy_window with j >= k; a
    context's value is the normalised entropy of its next items, -sum p log2 p / log2(n) over
    its n distinct next items, and 1 where n <= 1. (DORL-codes' older copy divides by
    log2(n + 1) and has no n <= 1 case; we follow the port.) Stored sparsely: H1 [I] and the
    pairs' sorted codes lo * I + hi [P], never a dense [I, I] array.
  - the ensemble: DORL-codes run_worldModel_ensemble.py `--n_models 5` DeepFMs; its
    `get_prediction_and_maxvar(deterministic=True)`: pred = the members' mean prediction,
    var = the max over members of each member's own predicted variance (its DeepFM has a
    Gaussian log-variance head, user_model_pairwise_variance.py).

Where this differs, and why:
  - var here is the ensemble's disagreement: the population variance over the N members'
    predicted ratings (np.var, ddof 0). jaxrec's DeepFM predicts a rating, not a variance;
    adding a variance head is a change to the user model left for later.
  - pred is the env directory's own fitted DeepFM (ensemble member 0, seed --seed; the other
    members: seeds --seed + 1 ..), not the members' mean: lambda 0 then gives the plain peer
    training env bit for bit, and DORL vs the easyrl4rec A2C preset differ only by the shaping.
  - the published Coat DORL row (EasyRL4Rec visual_results/result_script/Coat.sh,
    examples/advance/run_DORL.py) ran with NO shaping: get_env_args (src/core/util/data.py)
    sets entropy_window [] for CoatEnv-v0, so the entropy is 0, and PenaltyEntExpSimulatedEnv
    has no variance term: its train env was the A2C one, its hyperparameters A2C's (lr 0.005,
    ent-coef 0.01). The entropy window (1, 2) here is DORL-codes' KuaiRec / KuaiRand setting.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxrec.data.dataset import Dataset
from jaxrec.envs.base import QuitParams
from jaxrec.envs.matrix import MatrixEnv, MatrixParams
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import atomic_write_text, read_json_object

N_MODELS = 5  # DORL-codes run_worldModel_ensemble.py --n_models default 5
ENTROPY_WINDOW = (1, 2)  # DORL-codes configs / EasyRL4Rec get_env_args: KuaiRec, KuaiRand [1, 2]
LAMBDA_ENTROPY = 3.0  # EasyRL4Rec Coat.sh: run_DORL.py --lambda_entropy 3
LAMBDA_VARIANCE = 0.05  # DORL-codes script/run_main.sh, KuaiEnv "Ours": --lambda_variance 0.05
ABSENT = 1.0  # penalty_ent_exp.py: a context absent from the table, or a missing action, adds 1
MAX_ITEMS = 46340  # pair codes lo * I + hi stay below 2**31 (int32 under JAX's default)
FORMAT = 1  # of dorl/dorl.json; loaders check it
DIRNAME = "dorl"


def normalised_entropy(counts: np.ndarray, context: np.ndarray, num_contexts: int) -> np.ndarray:
  """[C] get_entropy of each context's next-item counts: -sum p log2 p / log2(n), 1 where its
  n distinct next items are <= 1. counts [M] > 0, context [M] in [0, C): one row per (context,
  distinct next item)."""
  total = np.bincount(context, weights=counts, minlength=num_contexts)
  n = np.bincount(context, minlength=num_contexts)
  p = counts / total[context]
  h = np.bincount(context, weights=-p * np.log2(p), minlength=num_contexts)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(n <= 1, 1.0, h / np.log2(np.maximum(n, 2)))


def _table(keys: np.ndarray, nxt: np.ndarray, num_items: int) -> tuple[np.ndarray, np.ndarray]:
  """-> (sorted distinct context codes [C], their normalised entropies [C])."""
  if len(keys) == 0:
    return np.zeros((0,), np.int64), np.zeros((0,), np.float64)
  pair, counts = np.unique(keys.astype(np.int64) * num_items + nxt, return_counts=True)
  ctx_codes, ctx = np.unique(pair // num_items, return_inverse=True)
  return ctx_codes, normalised_entropy(counts.astype(np.float64), ctx, len(ctx_codes))


def entropy_stats(ds: Dataset) -> dict[str, np.ndarray]:
  """The logged data's entropy tables for entropy_window (1, 2) (module docstring):
  single [I] float32 (ABSENT where item i never precedes another), single_seen [I] bool,
  pair_codes [P] int32 sorted (lo * I + hi, lo <= hi), pair_ent [P] float32."""
  n_items = ds.num_items
  if n_items > MAX_ITEMS:
    raise ConfigError(f"--dorl_ensemble: {n_items} items; the pair codes need at most "
                      f"{MAX_ITEMS}")
  items = ds.seq_items.astype(np.int64)
  pos = np.arange(len(items)) - np.repeat(ds.offsets[:-1], ds.lengths)  # index in its sequence
  j1 = np.nonzero(pos >= 1)[0]
  codes1, ent1 = _table(items[j1 - 1], items[j1], n_items)
  j2 = np.nonzero(pos >= 2)[0]
  a, b = items[j2 - 2], items[j2 - 1]
  codes2, ent2 = _table(np.minimum(a, b) * n_items + np.maximum(a, b), items[j2],
                        n_items * n_items)
  single = np.full((n_items,), ABSENT, np.float32)
  single[codes1] = ent1
  seen = np.zeros((n_items,), bool)
  seen[codes1] = True
  return {"single": single, "single_seen": seen, "pair_codes": codes2.astype(np.int32),
          "pair_ent": ent2.astype(np.float32)}


def variance_table(tables: np.ndarray) -> np.ndarray:
  """[U, I] float32: the population variance over the ensemble's members' predicted ratings
  tables [N, U, I]."""
  return np.var(tables.astype(np.float64), axis=0).astype(np.float32)


def entropy_bounds(stats: dict) -> tuple[float, float]:
  """(entropy_min, entropy_max): the sum over the windows of the min / max of the table's
  values (run_Policy_Main.py prepare_envs); a window with no context counts ABSENT."""
  lo = hi = 0.0
  for values in (stats["single"][stats["single_seen"]], stats["pair_ent"]):
    lo += float(values.min()) if len(values) else ABSENT
    hi += float(values.max()) if len(values) else ABSENT
  return lo, hi


@struct.dataclass
class DorlParams:
  """MatrixParams' fields (the plain train table pred - min, the leave rule) + the shaping."""
  table: jax.Array  # [U, I] float32 pred - pred.min() (the plain peer train reward)
  item_vecs: jax.Array  # [I, d]
  quit: QuitParams
  var: jax.Array  # [U, I] float32 ensemble variance
  single: jax.Array  # [I] float32 H1, ABSENT where unseen
  pair_codes: jax.Array  # [P + 1] int32 sorted, last = I * I (a sentinel no pair has)
  pair_ent: jax.Array  # [P + 1] float32, last = ABSENT
  lambda_variance: jax.Array  # float32
  lambda_entropy: jax.Array  # float32
  shift: jax.Array  # float32 MIN_R - pred.min()
  bound: jax.Array  # float32 MAX_R - MIN_R


def entropy_bonus(params: DorlParams, prev: jax.Array, action: jax.Array) -> jax.Array:
  """H1[a] + H2[{prev, a}] (ABSENT where unknown; prev < 0: no previous action, ABSENT).
  prev: int32 scalar; action: int32 of any shape."""
  n = params.single.shape[0]
  lo, hi = jnp.minimum(prev, action), jnp.maximum(prev, action)
  code = lo * n + hi
  idx = jnp.minimum(jnp.searchsorted(params.pair_codes, code), params.pair_codes.shape[0] - 1)
  pair = jnp.where(params.pair_codes[idx] == code, params.pair_ent[idx], ABSENT)
  pair = jnp.where(prev >= 0, pair, ABSENT)
  return params.single[action] + pair


class DorlMatrixEnv(MatrixEnv):
  """MatrixEnv whose reward is DORL's (module docstring); dynamics, leave rule and observations
  are MatrixEnv's, so the fused training loop runs it unchanged."""

  def _shaped(self, params: DorlParams, state, action):
    prev = state.recent[-1]  # a_{t-1} of this episode, -1 at t = 0 (recent holds actions only)
    r = (params.table[state.user, action] - params.lambda_variance * params.var[state.user, action]
         + params.lambda_entropy * entropy_bonus(params, prev, action) - params.shift)
    return jnp.maximum(r, 0.0)

  def _reward(self, params: DorlParams, state, action):
    return self._shaped(params, state, action)

  def all_rewards(self, params: DorlParams, state):
    return self._shaped(params, state, jnp.arange(self._num_items, dtype=jnp.int32))

  def reward_bounds(self, params: DorlParams):
    return jnp.float32(0.0), params.bound


def shaped_params(base: MatrixParams, var: np.ndarray, stats: dict, lambda_variance: float,
                  lambda_entropy: float) -> DorlParams:
  """The DORL train params over the plain peer train params `base` (table = pred - min)."""
  lv, le = jnp.float32(lambda_variance), jnp.float32(lambda_entropy)
  var = jnp.asarray(var, jnp.float32)
  ent_lo, ent_hi = (jnp.float32(x) for x in entropy_bounds(stats))
  shift = -lv * var.max() + le * ent_lo  # MIN_R - pred.min()
  bound = base.table.max() - lv * var.min() + le * ent_hi - shift  # MAX_R - MIN_R
  n = base.table.shape[1]
  return DorlParams(
      table=base.table, item_vecs=base.item_vecs, quit=base.quit, var=var,
      single=jnp.asarray(stats["single"], jnp.float32),
      pair_codes=jnp.asarray(np.append(stats["pair_codes"], np.int32(n * n)), jnp.int32),
      pair_ent=jnp.asarray(np.append(stats["pair_ent"], np.float32(ABSENT)), jnp.float32),
      lambda_variance=lv, lambda_entropy=le, shift=shift, bound=bound)


# --- the env directory's dorl/ -----------------------------------------------------------------

def save(directory: str, var: np.ndarray, stats: dict, meta: dict) -> None:
  """dorl/dorl.npz (var + the entropy tables; no pickle) and dorl/dorl.json (FORMAT, facts)."""
  os.makedirs(directory, exist_ok=True)
  np.savez(os.path.join(directory, "dorl.npz"), var=var.astype(np.float32), **stats)
  atomic_write_text(os.path.join(directory, "dorl.json"),
                    json.dumps({"format": FORMAT} | meta, indent=2) + "\n")


def _missing(env_dir: str, what: str) -> DataError:
  return DataError(f"{env_dir}: {what}; DORL needs an env directory built with "
                   "python -m experiments.build_envs --protocol=peer --dorl_ensemble=N")


def load_stats(env_dir: str, num_users: int, num_items: int) -> tuple[np.ndarray, dict, dict]:
  """-> (var [U, I], entropy stats, dorl.json) of an env directory, checked."""
  d = os.path.join(env_dir, DIRNAME)
  meta_path, npz_path = os.path.join(d, "dorl.json"), os.path.join(d, "dorl.npz")
  if not os.path.isfile(meta_path) or not os.path.isfile(npz_path):
    raise _missing(env_dir, "no DORL statistics (dorl/dorl.json, dorl/dorl.npz)")
  meta = read_json_object(meta_path)
  if meta.get("format") != FORMAT:
    raise DataError(f"{meta_path}: DORL format {meta.get('format')!r}, expected {FORMAT}; "
                    "rebuild the env directory")
  try:
    with np.load(npz_path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (ValueError, OSError, EOFError) as e:
    raise DataError(f"{npz_path}: not a readable .npz ({e})") from None
  want = {"var": ((num_users, num_items), "f"), "single": ((num_items,), "f"),
          "single_seen": ((num_items,), "b")}
  for k, (shape, kind) in want.items():
    a = arrays.get(k)
    if a is None or a.shape != shape or a.dtype.kind != kind:
      raise DataError(f"{npz_path}: {k} is {None if a is None else (a.dtype, a.shape)}, "
                      f"expected {kind} {shape}")
  codes, ent = arrays.get("pair_codes"), arrays.get("pair_ent")
  if (codes is None or ent is None or codes.ndim != 1 or codes.shape != ent.shape
      or codes.dtype.kind not in "iu" or np.any(np.diff(codes) <= 0)
      or (len(codes) and not 0 <= codes.min() <= codes.max() < num_items * num_items)):
    raise DataError(f"{npz_path}: pair_codes / pair_ent: expected sorted distinct codes in "
                    f"[0, {num_items * num_items}) and one value each")
  stats = {k: arrays[k] for k in ("single", "single_seen", "pair_codes", "pair_ent")}
  return arrays["var"], stats, meta


def load_train_env(env_dir: str, lambda_variance: float, lambda_entropy: float):
  """-> (DorlMatrixEnv, DorlParams, EnvMeta): the DORL train env of a peer env directory."""
  from jaxrec.envs.store import load_env
  env, base, meta = load_env(env_dir, "train")
  if meta.protocol != "peer" or not isinstance(env, MatrixEnv):
    raise _missing(env_dir, f"a {meta.protocol} {meta.kind} env")
  var, stats, _ = load_stats(env_dir, *base.table.shape)
  dorl_env = DorlMatrixEnv(env.num_actions, env.history_len, env.quit_window, env.window_rule,
                           env.num_users)
  return dorl_env, shaped_params(base, var, stats, lambda_variance, lambda_entropy), meta
