"""python -m jaxrec.pretrain --env=DIR --workdir=RUN --labeler=inproc|dir|shards ...

iALP pre-training (paper Alg. 1) on preference labels; see jaxrec/train/pretraining.py.
  inproc  the simulated oracle labeler in the jitted loop (CPU-only runs; not an LLM)
  dir     lockstep through LABELER_DIR (default RUN): request shards to LABELER_DIR/requests,
          label shards from `python -m llm_labeler.label --requests=LABELER_DIR/requests
          --out=LABELER_DIR/labels --env=DIR --backend=... --follow --poll_seconds=0.05`
          running beside it (one shard per lockstep step: poll often)
  shards  from label shards an offline job wrote to LABELER_DIR/{requests,labels}
Then: python -m jaxrec.train --agent=ialp_ap --init_from=RUN --env=DIR --workdir=...
Rerunning the same command resumes from the latest checkpoint. The flags are PretrainConfig's
options (jaxrec.config).
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli, config
from jaxrec.errors import ConfigError
from jaxrec.train import dist_flags
from jaxrec.train.pretraining import ONLINE_ONLY, PretrainConfig, pretrain

config.define_flags(PretrainConfig, skip=PretrainConfig.flag_skip())
WORKDIR = flags.DEFINE_string("workdir", None, "run directory (created; resumed if it exists)")


def config_from_flags() -> PretrainConfig:
  return config.from_flags(PretrainConfig)


def main(argv):
  cli.reject_extra_args(argv)
  given = [f"--{n}" for n in ONLINE_ONLY if flags.FLAGS[n].present]
  if given:
    raise ConfigError(f"{', '.join(given)} set the online critic (jaxrec.train); pre-training "
                      "(Alg. 1) learns from one-step transitions with the paper's Q critic")
  if not WORKDIR.value:
    raise ConfigError("--workdir is required")
  mesh = dist_flags.mesh_from_flags()
  pretrain(config_from_flags(), WORKDIR.value, mesh=mesh)


if __name__ == "__main__":
  cli.run(main)
