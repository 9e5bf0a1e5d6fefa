"""python -m experiments.build_envs --dataset=NAME [--data_dir=PATH] --out=DIR

Loads and preprocesses the dataset, splits it (by user 80/20, or chronologically 50/50), fits a
user model on each side (SASRec scorer or DeepFM) and writes the env directory that the training
CLIs take as --env. See jaxrec/envs/build.py for the layout and the calibration.
"""

from __future__ import annotations

import json

from absl import flags

from jaxrec import cli, config
from jaxrec.data import flags as data_flags
from jaxrec.envs import build, peer
from jaxrec.errors import ConfigError

config.define_flags(build.BuildConfig)
OUT = flags.DEFINE_string("out", None, "output env directory (must not exist)")
TRUE_MATRIX = flags.DEFINE_string("true_matrix", None,
                                  "peer: dense user x item ratings, whitespace text (one user "
                                  "a line) or .npy; synthetic: default the generator's truth; "
                                  "kuairec: small_matrix.csv in --data_dir")


def config_from_flags() -> build.BuildConfig:
  return config.from_flags(build.BuildConfig)


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
                                        data_flags.synthetic_config_from_flags(),
                                        data_dir=data_flags.DATA_DIR.value)
  meta = build.build_envs(ds, cfg, OUT.value, true_matrix=true, true_source=source)
  print(json.dumps(meta.reports | ({"peer": meta.peer} if meta.peer is not None else {}),
                   indent=2))
  print(f"wrote {OUT.value} ({meta.kind} env, dataset {meta.dataset})")


if __name__ == "__main__":
  cli.run(main)
