"""python -m experiments.build_envs --dataset=NAME [--data_dir=PATH] --out=DIR

Loads and preprocesses the dataset, splits it (by user 80/20, or chronologically 50/50), fits a
user model on each side (SASRec scorer or DeepFM) and writes the env directory that the training
CLIs take as --env. See jaxrec/envs/build.py for the layout and the calibration.
"""

from __future__ import annotations

import json

from absl import flags

from jaxrec import cli
from jaxrec.data import flags as data_flags
from jaxrec.envs import build, calibrate, peer
from jaxrec.errors import ConfigError

_D = build.BuildConfig
OUT = flags.DEFINE_string("out", None, "output env directory (must not exist)")
KIND = flags.DEFINE_enum("env_kind", _D.kind, ["auto", *build.KINDS],
                         "simulator kind; auto = matrix for coat, sequential otherwise")
SPLIT = flags.DEFINE_enum("split", _D.split, ["user", "chrono"],
                          "user: 80/20 by user (core paper); chrono: 50/50 by time (BiLLP)")
QUIT_SPACE = flags.DEFINE_enum("quit_space", _D.quit_space, ["own", "train"],
                               "the test env's similarity quit (item vectors and beta): train "
                               "(the train env's: one item geometry for both envs, as the peer "
                               "protocol's one distance matrix) or own (its user model's, BiLLP "
                               "Eq. 19)")
TRAIN_FRAC = flags.DEFINE_float("train_frac", None, "train share (default 0.8 user, 0.5 chrono)")
HISTORY_LEN = flags.DEFINE_integer("history_len", _D.history_len, "L: items a state holds")
QUIT_WINDOW = flags.DEFINE_integer("quit_window", _D.quit_window, "W of the similarity quit")
MAX_LEN = flags.DEFINE_integer("max_len", _D.max_len, "episode truncation length")
QUIT_Q = flags.DEFINE_float("quit_reward_quantile", _D.quit_reward_quantile,
                            "min_reward = this quantile of random recommendations' rewards")
MIN_REWARD = flags.DEFINE_float("min_reward", None, "absolute min_reward (overrides quantile)")
BETA_Q = flags.DEFINE_float("beta_quantile", _D.beta_quantile,
                            "beta = this quantile of random item pairs' distances")
BETA = flags.DEFINE_float("beta", None, "absolute beta (overrides quantile)")
SEQ_DIM = flags.DEFINE_integer("seq_dim", _D.seq_dim, "SASRec user model width")
SEQ_LAYERS = flags.DEFINE_integer("seq_layers", _D.seq_layers, "SASRec user model blocks")
SEQ_STEPS = flags.DEFINE_integer("seq_steps", _D.seq_steps, "SASRec fit steps (x100 rounded)")
MF_DIM = flags.DEFINE_integer("mf_dim", _D.mf_dim, "DeepFM embedding width")
MF_STEPS = flags.DEFINE_integer("mf_steps", _D.mf_steps, "DeepFM fit steps (x200 rounded)")
SEED = flags.DEFINE_integer("seed", _D.seed, "split and fit seed")
PROTOCOL = flags.DEFINE_enum("protocol", _D.protocol, list(build.PROTOCOLS),
                             "paper: user models fitted on a train / test split; peer: "
                             "EasyRL4Rec / DORL (fitted model trains, --true_matrix evaluates)")
TRUE_MATRIX = flags.DEFINE_string("true_matrix", None,
                                  "peer: dense user x item ratings, whitespace text (one user "
                                  "a line) or .npy; synthetic: default the generator's truth")
LEAVE_THRESHOLD = flags.DEFINE_float("leave_threshold", None,
                                     "peer: leave distance (default: 6.0 on coat, else "
                                     "calibrated to a random policy's length)")
CALIBRATION = flags.DEFINE_enum("calibration", _D.calibration, list(calibrate.CALIBRATIONS),
                                "sequential reward scale and low-reward quit: random (the "
                                "paper's random-policy R / Len / Ravg; jaxrec.envs.calibrate) "
                                "or heldout (earlier releases)")
MF_NEGATIVES = flags.DEFINE_integer("mf_negatives", None,
                                   "DeepFM: sampled unrated pairs per rating, fitted to 1 (default "
                                   "5 under --protocol=peer, the peer's neg_K; else 0)")
USER_TOKEN = flags.DEFINE_bool("user_token", _D.user_token,
                               "matrix envs: the user's token starts the observed history "
                               "(the paper's 'user as the initial state'); off: items only")
LEAVE_WINDOW = flags.DEFINE_integer("leave_window", _D.leave_window,
                                    "peer: W of the leave rule (num_leave_compute)")


def config_from_flags() -> build.BuildConfig:
  return build.BuildConfig(
      kind=KIND.value, split=SPLIT.value, quit_space=QUIT_SPACE.value, train_frac=TRAIN_FRAC.value,
      history_len=HISTORY_LEN.value, quit_window=QUIT_WINDOW.value, max_len=MAX_LEN.value,
      quit_reward_quantile=QUIT_Q.value, min_reward=MIN_REWARD.value,
      beta_quantile=BETA_Q.value, beta=BETA.value, seq_dim=SEQ_DIM.value,
      seq_layers=SEQ_LAYERS.value, seq_steps=SEQ_STEPS.value, mf_dim=MF_DIM.value,
      mf_steps=MF_STEPS.value, seed=SEED.value, protocol=PROTOCOL.value,
      leave_threshold=LEAVE_THRESHOLD.value, leave_window=LEAVE_WINDOW.value,
      calibration=CALIBRATION.value, user_token=USER_TOKEN.value,
      mf_negatives=MF_NEGATIVES.value)


def main(argv):
  cli.reject_extra_args(argv)
  if not OUT.value:
    raise ConfigError("--out is required (the env directory to create)")
  cfg = config_from_flags()
  cfg.validate()
  if TRUE_MATRIX.value and cfg.protocol != "peer":
    raise ConfigError("--true_matrix applies to --protocol=peer")
  ds = data_flags.dataset_from_flags()
  cfg.resolved_kind(ds)
  true, source = None, None
  if cfg.protocol == "peer":
    true, source = peer.true_matrix_for(ds, TRUE_MATRIX.value,
                                        data_flags.synthetic_config_from_flags())
  meta = build.build_envs(ds, cfg, OUT.value, true_matrix=true, true_source=source)
  print(json.dumps(meta.reports | ({"peer": meta.peer} if meta.peer is not None else {}),
                   indent=2))
  print(f"wrote {OUT.value} ({meta.kind} env, dataset {meta.dataset})")


if __name__ == "__main__":
  cli.run(main)
