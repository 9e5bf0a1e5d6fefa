"""Dataset -> (train env, test env): fit one user model per split, calibrate, save with orbax.

It writes an env directory, what every training CLI takes as --env; its layout and loading are
jaxrec.envs.store's.

Scale-free defaults make one config fit every dataset:
  - sequential reward: r = reward_max * sigmoid((s - c) / tau), with c, tau set so the median
    held-out true next item gets `calib_pos` and the median random item gets `calib_neg`;
  - quit on reward: `min_reward` is the `quit_reward_quantile` quantile of random
    recommendations' rewards (a random item makes the user leave with that probability);
  - quit on similarity: `beta` is the `beta_quantile` quantile of random item pairs' distances.
Absolute `min_reward` / `beta` override the quantiles (e.g. BiLLP's reward < 2 on ratings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.config import option
from jaxrec.data.preprocess import split as split_dataset
from jaxrec.envs import calibrate
from jaxrec.envs.base import QuitParams
from jaxrec.envs.matrix import MatrixEnv, MatrixParams
from jaxrec.envs.sequential import SequentialEnv
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import atomic_write_text
from jaxrec.usermodels import matrix as mx
from jaxrec.usermodels import sequential as sq
# The env directory API lives in jaxrec.envs.store; re-exported here for the many callers that
# build and load through this module.
from jaxrec.envs.store import (FORMAT, KINDS, EnvMeta, fingerprint, load_dataset_of,  # noqa: F401
                               load_env, read_meta, save_params)
PROTOCOLS = ("paper", "peer")
QUIT_SPACES = ("own", "train")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  """`python -m experiments.build_envs`' config; its options are the flags (jaxrec.config)."""
  kind: str = option("auto", "simulator kind; auto = matrix for coat, sequential otherwise",
                     choices=("auto", *KINDS), flag="env_kind")
  protocol: str = option("paper", "paper: user models fitted on a train / test split; peer: "
                         "EasyRL4Rec / DORL (fitted model trains, --true_matrix evaluates; "
                         "jaxrec.envs.peer)", choices=PROTOCOLS)
  leave_threshold: float | None = option(None, "peer: leave distance (default: 6.0 on coat, "
                                         "else calibrated to a random policy's length)")
  leave_window: int = option(7, "peer: W of the leave rule (num_leave_compute)")
  # Off: items only, as the peer's published runs (use_userEmbedding false).
  user_token: bool = option(False, "matrix envs: the user's token starts the observed history "
                            "(the paper's 'user as the initial state', Sec. 4.2.1); off: items "
                            "only")
  # heldout: the median random logged-history item earns calib_neg, the quit at
  # quit_reward_quantile (the calibration of earlier releases).
  calibration: str = option("random", "sequential reward scale and low-reward quit: random "
                            "(the paper's random-policy R / Len / Ravg; jaxrec.envs.calibrate) "
                            "or heldout (earlier releases)", choices=calibrate.CALIBRATIONS)
  split: str = option("user", "user: 80/20 by user (core paper); chrono: 50/50 by time (BiLLP)",
                      choices=("user", "chrono"))
  # own: a policy that survives in the train env then quits within ~3 steps in the test env
  # (docs/protocol.md).
  quit_space: str = option("train", "the test env's similarity quit (item vectors and beta): "
                           "train (the train env's: one item geometry for both envs, as the "
                           "peer protocol's one distance matrix) or own (its user model's, "
                           "BiLLP Eq. 19)", choices=QUIT_SPACES)
  train_frac: float | None = option(None, "train share (default 0.8 user, 0.5 chrono)")
  history_len: int = option(10, "L: items a state holds")
  quit_window: int = option(4, "W of the similarity quit")
  max_len: int = option(30, "episode truncation length")
  quit_reward_quantile: float = option(0.2, "min_reward = this quantile of random "
                                       "recommendations' rewards")
  min_reward: float | None = option(None, "absolute min_reward (overrides quantile)")
  beta_quantile: float = option(0.01, "beta = this quantile of random item pairs' distances")
  beta: float | None = option(None, "absolute beta (overrides quantile)")
  reward_max: float = 5.0
  calib_pos: float = 4.0
  calib_neg: float = 1.0
  seq_dim: int = option(32, "SASRec user model width")
  seq_layers: int = option(2, "SASRec user model blocks")
  seq_steps: int = option(500, "SASRec fit steps (x100 rounded)")
  mf_dim: int = option(16, "DeepFM embedding width")
  mf_steps: int = option(2000, "DeepFM fit steps (x200 rounded)")
  mf_negatives: int | None = option(None, "DeepFM: sampled unrated pairs per rating, fitted to "
                                    "1 (default 5 under --protocol=peer, the peer's neg_K "
                                    "'pointneg' loss; else 0)")
  seed: int = option(0, "split and fit seed")
  # Off by default: env.json's build record then has no such key, so default builds are the
  # same bytes as before the option existed.
  dorl_ensemble: int = option(0, "peer: also fit this many DeepFMs (seeds --seed, --seed + 1, "
                              "..; the first is the train env's) and store DORL's ensemble "
                              "variance and logged-data entropy tables (jaxrec.envs.dorl; the "
                              "authors fit 5); 0: off")

  def resolved_mf_negatives(self) -> int:
    if self.mf_negatives is not None:
      return self.mf_negatives
    return 5 if self.protocol == "peer" else 0  # EasyRL4Rec usermodel_utils: neg_K 5

  def resolved_kind(self, ds: Dataset) -> str:
    if self.protocol == "peer":
      if self.kind not in ("auto", "matrix"):
        raise ConfigError(f"--protocol=peer builds matrix envs; got --env_kind={self.kind}")
      return "matrix"
    if self.kind == "auto":
      return "matrix" if ds.name == "coat" else "sequential"
    if self.kind not in KINDS:
      raise ConfigError(f"--env_kind must be one of auto, {', '.join(KINDS)}; got {self.kind!r}")
    return self.kind

  def validate(self) -> None:
    if self.calibration not in calibrate.CALIBRATIONS:
      raise ConfigError(f"--calibration must be one of {', '.join(calibrate.CALIBRATIONS)}; "
                        f"got {self.calibration!r}")
    if self.quit_space not in QUIT_SPACES:
      raise ConfigError(f"--quit_space must be one of {', '.join(QUIT_SPACES)}; got "
                        f"{self.quit_space!r}")
    if self.protocol not in PROTOCOLS:
      raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}; got "
                        f"{self.protocol!r}")
    if self.mf_negatives is not None and self.mf_negatives < 0:
      raise ConfigError(f"--mf_negatives must be >= 0, got {self.mf_negatives}")
    if self.leave_threshold is not None and not self.leave_threshold >= 0:
      raise ConfigError(f"--leave_threshold must be >= 0, got {self.leave_threshold}")
    for f in ("leave_window", "history_len", "quit_window", "max_len", "seq_dim", "seq_layers", "seq_steps",
              "mf_dim", "mf_steps"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    for f in ("quit_reward_quantile", "beta_quantile"):
      if not 0.0 <= getattr(self, f) < 1.0:
        raise ConfigError(f"--{f} must be in [0, 1), got {getattr(self, f)}")
    if self.dorl_ensemble < 0 or self.dorl_ensemble == 1:
      raise ConfigError(f"--dorl_ensemble must be 0 (off) or at least 2 models, got "
                        f"{self.dorl_ensemble}")
    if self.dorl_ensemble and self.protocol != "peer":
      raise ConfigError("--dorl_ensemble applies to --protocol=peer (DORL trains in the peer "
                        "protocol's fitted user model)")
    if not 0.0 < self.calib_neg < self.calib_pos < self.reward_max:
      raise ConfigError("need 0 < calib_neg < calib_pos < reward_max")


def _quit(cfg: BuildConfig, rewards: np.ndarray, model_params, rng,
          quit_space=None) -> tuple[QuitParams, np.ndarray]:
  """-> (the quit rule, the [I, d] item vectors of its similarity quit). The vectors are the
  fitted model's item embeddings and beta the cfg.beta_quantile of their pair distances (or
  cfg.beta), unless `quit_space` = (item vectors, beta) of another env is given: then those, as
  they are."""
  min_reward = (cfg.min_reward if cfg.min_reward is not None
                else float(np.quantile(rewards, cfg.quit_reward_quantile)))
  if quit_space is not None:
    item_vecs, beta = quit_space
  elif cfg.beta is not None:
    item_vecs = np.asarray(model_params["params"]["item_emb"]["embedding"])
    beta = cfg.beta
  else:
    item_vecs = np.asarray(model_params["params"]["item_emb"]["embedding"])
    a, b = rng.integers(0, len(item_vecs), size=(2, 20000))
    a, b = a[a != b], b[a != b]
    beta = float(np.quantile(np.linalg.norm(item_vecs[a] - item_vecs[b], axis=1),
                             cfg.beta_quantile))
  return QuitParams(beta=jnp.float32(beta), min_reward=jnp.float32(min_reward),
                    max_len=jnp.int32(cfg.max_len)), item_vecs


def build_sequential(ds: Dataset, cfg: BuildConfig, log=print, quit_space=None):
  """Fits the SASRec scorer on `ds` and returns (env, params, report dict, static dict);
  quit_space: None, or (item vectors [I, d], beta) of another env's similarity quit, taken
  as they are (the calibration then fits only the reward mapping and low-reward quit)."""
  mcfg = sq.SeqConfig(num_items=ds.num_items, dim=cfg.seq_dim, num_layers=cfg.seq_layers,
                      window=cfg.history_len, num_steps=cfg.seq_steps, seed=cfg.seed)
  model_params, fit = sq.fit(ds, mcfg, log=log)
  env = SequentialEnv(mcfg, cfg.history_len, cfg.quit_window)
  rng = np.random.default_rng(cfg.seed)
  # Calibration on the held-out next items (positives) and random items (negatives).
  hist, held = sq.training_arrays(ds, cfg.history_len)
  h = sq.final_states(mcfg, model_params, hist)
  score = jax.jit(lambda h, a: sq.item_scores(model_params, h, a))
  s_held = np.asarray(score(h, jnp.asarray(held)))
  s_pos = np.median(s_held)
  rand = rng.integers(0, ds.num_items, size=len(held))
  s_rand = np.asarray(score(h, jnp.asarray(rand)))
  s_neg = np.median(s_rand)
  if not s_pos > s_neg:
    raise DataError(f"dataset {ds.name!r}: the fitted user model scores held-out items no higher "
                    f"than random ones (median {s_pos:.3f} <= {s_neg:.3f}); cannot calibrate")
  logit = lambda p: np.log(p / (1 - p))
  lo, hi = logit(cfg.calib_neg / cfg.reward_max), logit(cfg.calib_pos / cfg.reward_max)
  scale = (s_pos - s_neg) / (hi - lo)
  center = s_neg - lo * scale
  rewards = cfg.reward_max / (1 + np.exp(-(s_rand - center) / scale))
  quit, item_vecs = _quit(cfg, rewards, model_params, rng, quit_space)
  params = env.make_params(model_params, center, scale, cfg.reward_max, quit, ds.seq_items,
                           item_vecs)
  calib = {"calibration": cfg.calibration}
  if cfg.calibration == "random":
    scores, closest = calibrate.random_trajectories(env, params, jax.random.PRNGKey(cfg.seed),
                                                    4096, cfg.max_len)
    if quit_space is None:
      solve = lambda s: calibrate.calibrate_random_beta(scores, closest, s, cfg.reward_max,
                                                        cfg.calib_pos)
    else:  # the other env's similarity quit as it is: steps 1-3 of the rule only
      beta = float(quit.beta)
      solve = lambda s: calibrate.calibrate_random(scores, closest < beta, s, cfg.reward_max,
                                                   cfg.calib_pos) | {"beta": beta}
    c = calibrate.calibrate_random_anchor(solve, s_held, cfg.reward_max)
    params = calibrate.with_calibration(params, c["center"], c["scale"], c["min_reward"],
                                        c["beta"])
    center, scale, quit = c["center"], c["scale"], params.quit
    met = calibrate.within_paper_ranges(c["random_r"], c["random_len"], c["random_ravg"])
    if not met:
      log(f"calibration: the random policy's R {c['random_r']:.2f} Len {c['random_len']:.2f} "
          f"Ravg {c['random_ravg']:.2f} miss the paper's LFM ranges at every anchor (a weak user "
          "model: random items often outscore held-out ones); see calibration_met in env.json")
    elif c["anchor_quantile"] != calibrate.ANCHOR_QUANTILES[0]:
      log(f"calibration: random items outscore the median held-out item too often to meet the "
          f"paper's ranges; the held-out {c['anchor_quantile']:.2f} quantile earns "
          f"{cfg.calib_pos:g}, the median {c['heldout_median_reward']:.2f}")
    calib |= {"calibration_met": met} | {
        k: c[k] for k in ("random_r", "random_len", "random_ravg", "anchor_quantile",
                          "heldout_median_reward")} | {
        "target_r": calibrate.RANDOM_R, "target_len": calibrate.RANDOM_LEN,
        "target_ravg": calibrate.RANDOM_RAVG}
  report = calib | {"model": "sasrec", "hr10": fit.hr10, "ndcg10": fit.ndcg10,
            "popularity_hr10": fit.pop_hr10, "popularity_ndcg10": fit.pop_ndcg10,
            "num_eval_users": fit.num_eval_users, "final_loss": fit.final_loss,
            "center": float(center), "scale": float(scale),
            "min_reward": float(quit.min_reward), "beta": float(quit.beta)}
  static = {"kind": "sequential", "history_len": cfg.history_len,
            "quit_window": cfg.quit_window, "model": dataclasses.asdict(mcfg)}
  return env, params, report, static


def build_matrix(ds: Dataset, cfg: BuildConfig, log=print, quit_space=None):
  """Fits the DeepFM on `ds`: (env, params, report, static); quit_space as build_sequential's
  (its vectors and beta replace the fitted ones)."""
  mcfg = mx.MatrixConfig(num_users=ds.num_users, num_items=ds.num_items,
                         num_item_features=ds.item_features.shape[1],
                         num_user_features=ds.user_features.shape[1],
                         dim=cfg.mf_dim, num_steps=cfg.mf_steps, seed=cfg.seed,
                         explicit_negatives=cfg.resolved_mf_negatives(),
                         **dict(zip(("rating_min", "rating_max"), mx.rating_scale(ds))))
  model_params, fit = mx.fit(ds, mcfg, log=log)
  table = mx.reward_table(mcfg, model_params, ds)
  rng = np.random.default_rng(cfg.seed)
  quit, item_vecs = _quit(cfg, table.ravel(), model_params, rng, quit_space)
  env = MatrixEnv(ds.num_items, cfg.history_len, cfg.quit_window,
                  num_users=ds.num_users if cfg.user_token else 0)
  params = MatrixParams(table=jnp.asarray(table), item_vecs=jnp.asarray(item_vecs), quit=quit)
  report = {"model": "deepfm", "rmse": fit.rmse, "item_mean_rmse": fit.baseline_rmse,
            "num_heldout": fit.num_heldout, "implicit": fit.implicit,
            "min_reward": float(quit.min_reward), "beta": float(quit.beta)}
  static = {"kind": "matrix", "history_len": cfg.history_len, "quit_window": cfg.quit_window,
            "num_items": ds.num_items, "num_users": env.num_users}
  return env, params, report, static


def build_peer(ds: Dataset, cfg: BuildConfig, true: np.ndarray, log=print):
  """The peer protocol's pair (jaxrec.envs.peer): the DeepFM fitted on all logged data trains,
  the aligned ground-truth matrix `true` [U, I] evaluates. -> ({side: (params, static,
  report)}, protocol report)."""
  from jaxrec.envs import peer
  if true.shape != (ds.num_users, ds.num_items):
    raise DataError(f"ground-truth matrix is {true.shape[0]} x {true.shape[1]}, dataset "
                    f"{ds.name!r} has {ds.num_users} users x {ds.num_items} items")
  log(f"fitting the training user model (DeepFM) on all {ds.num_interactions} logged "
      "interactions")
  _, fitted, report, _ = build_matrix(ds, cfg, log)
  report = {k: v for k, v in report.items() if k not in ("min_reward", "beta")}  # unused
  if cfg.leave_threshold is not None:
    threshold, rule = cfg.leave_threshold, "--leave_threshold"
  elif ds.name == "coat":
    threshold, rule = peer.COAT_LEAVE_THRESHOLD, "Coat.sh --leave_threshold 6"
  else:
    threshold, _ = peer.calibrate_threshold(true, cfg.seed, window=cfg.leave_window,
                                            max_turn=cfg.max_len)
    rule = f"random-policy FB length {peer.RANDOM_LEN} in the true env"
  lens = peer.random_lengths(true, np.asarray([threshold]),
                             jax.random.PRNGKey(cfg.seed + 1), window=cfg.leave_window,
                             max_turn=cfg.max_len)
  (env, train), (_, test) = peer.peer_envs(true, np.asarray(fitted.table), threshold,
                                           cfg.history_len, cfg.leave_window, cfg.max_len,
                                           cfg.user_token)
  static = {"kind": "matrix", "history_len": cfg.history_len, "quit_window": cfg.leave_window,
            "num_items": ds.num_items, "window_rule": "peer", "num_users": env.num_users}
  quit = {"leave_threshold": threshold, "leave_window": cfg.leave_window,
          "max_turn": cfg.max_len}
  sides = {"train": (train, static, report | quit | {"reward": "DeepFM prediction - min"}),
           "test": (test, static, {"model": "ground truth", "reward": "true rating"} | quit)}
  proto = {"leave_threshold": threshold, "threshold_rule": rule,
           "random_policy_len": float(lens[0]), "true_mean_rating": float(true.mean())}
  return sides, proto, fitted.table


def build_dorl(ds: Dataset, cfg: BuildConfig, first: np.ndarray, first_rmse: float,
               directory: str, log=print) -> dict:
  """Fits the DORL ensemble's other members (seeds cfg.seed + 1, ..; `first` [U, I] is member
  0's predicted table, the train env's, `first_rmse` its held-out RMSE) and writes `directory`
  (jaxrec.envs.dorl.save). -> the record for env.json."""
  from jaxrec.envs import dorl
  tables, rmse = [np.asarray(first, np.float32)], [first_rmse]
  for i in range(1, cfg.dorl_ensemble):
    log(f"fitting DORL ensemble member {i + 1}/{cfg.dorl_ensemble} (seed {cfg.seed + i})")
    _, params, report, _ = build_matrix(ds, dataclasses.replace(cfg, seed=cfg.seed + i),
                                        lambda s: None)
    tables.append(np.asarray(params.table, np.float32))
    rmse.append(report["rmse"])
  var = dorl.variance_table(np.stack(tables))
  stats = dorl.entropy_stats(ds)
  lo, hi = dorl.entropy_bounds(stats)
  meta = {"models": cfg.dorl_ensemble, "seeds": [cfg.seed + i for i in range(cfg.dorl_ensemble)],
          "member_rmse": rmse, "entropy_window": list(dorl.ENTROPY_WINDOW),
          "entropy_min": lo, "entropy_max": hi, "var_mean": float(var.mean()),
          "var_max": float(var.max()), "contexts": {
              "single": int(stats["single_seen"].sum()), "pair": int(len(stats["pair_codes"]))}}
  dorl.save(directory, var, stats, meta)
  return meta


def build_envs(ds: Dataset, cfg: BuildConfig, out: str, log=print,
               true_matrix: np.ndarray | None = None,
               true_source: dict | None = None) -> EnvMeta:
  """Splits `ds`, fits a user model per side and writes the env directory `out` atomically.
  protocol peer: `true_matrix` [U, I] (aligned to the dataset) is the evaluation env."""
  cfg.validate()
  kind = cfg.resolved_kind(ds)
  if os.path.exists(out):
    raise DataError(f"{out}: already exists; remove it or pick another --out")
  if cfg.user_token and kind != "matrix":
    raise ConfigError("--user_token applies to matrix envs (a sequential session starts from an "
                      "item, not a user)")
  if cfg.user_token and cfg.history_len < 2:
    raise ConfigError("--user_token needs --history_len >= 2 (the token and an item)")
  if cfg.protocol == "peer" and true_matrix is None:
    raise ConfigError("--protocol=peer needs --true_matrix (or the synthetic dataset, whose "
                      "generator has one)")
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-env-", dir=parent)
  try:
    reports, extra = {}, {}
    if cfg.protocol == "peer":
      sides, proto, first = build_peer(ds, cfg, true_matrix, log)
      for name, (params, static, report) in sides.items():
        save_params(os.path.join(tmp, name), params, static | {"report": report})
        reports[name] = report | {"users": ds.num_users, "interactions": ds.num_interactions}
      extra = {"protocol": "peer", "peer": proto | {"true_matrix": true_source or {}}}
      if cfg.dorl_ensemble:
        extra["dorl"] = build_dorl(ds, cfg, first, reports["train"]["rmse"],
                                   os.path.join(tmp, "dorl"), log)
    else:
      train, test = split_dataset(ds, cfg.split, cfg.train_frac, cfg.seed)
      builder = build_sequential if kind == "sequential" else build_matrix
      shared = None
      for name, part in (("train", train), ("test", test)):
        log(f"fitting the {name} user model ({kind}) on {part.num_users} users, "
            f"{part.num_interactions} interactions")
        _, params, report, static = builder(part, cfg, log, shared)
        if cfg.quit_space == "train":  # the test env's similarity quit = the train env's
          shared = (np.asarray(params.item_vecs), float(params.quit.beta))
        save_params(os.path.join(tmp, name), params, static | {"report": report})
        reports[name] = report | {"users": part.num_users,
                                  "interactions": part.num_interactions}
      extra = {"protocol": "paper"}
    ds.save(os.path.join(tmp, "dataset.npz"))
    build = dataclasses.asdict(cfg)
    if not cfg.dorl_ensemble:
      del build["dorl_ensemble"]  # see BuildConfig.dorl_ensemble
    meta = {"format": FORMAT, "dataset": ds.name, "fingerprint": fingerprint(ds), "kind": kind,
            "build": build, "reports": reports} | extra
    atomic_write_text(os.path.join(tmp, "env.json"), json.dumps(meta, indent=2) + "\n")
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return EnvMeta.of(meta)
