"""python -m jaxrec.offline --agent=normal|sqn|sac|snqn|sa2c --backbone=sasrec|gru --dataset=NAME
[--data_dir=PATH] --workdir=RUN [--epochs --batch_size --learning_rate --gamma --neg
--neg_reward --warmup --lr_2 --clip --eval_head ...] [--augment=DIR --w_ah --w_aq
--augment_start]

Offline next-item learning on the dataset's train users, HR@k / NDCG@k over every position of
its test users each epoch, beside a popularity reference (jaxrec/offline/run.py). Rerunning
the same command resumes from the latest checkpoint. The flags are OfflineConfig's options
(jaxrec.config) and the dataset flags (jaxrec.data.flags); a learner-specific flag set for a
learner that does not read it (--neg for sqn, --warmup for snqn, ...) is refused, and so are
--w_ah / --w_aq / --augment_start without --augment (LEA's augmentation: jaxrec/offline/
augment.py writes the request shards, jaxrec/offline/lea.py the losses).
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli, config
from jaxrec.data import flags as data_flags
from jaxrec.errors import ConfigError
from jaxrec.offline.learners import check_applicable
from jaxrec.offline.run import OfflineConfig, train_and_evaluate

AUGMENT_FIELDS = ("w_ah", "w_aq", "augment_start")  # read only with --augment
config.define_flags(OfflineConfig)
WORKDIR = flags.DEFINE_string("workdir", None, "run directory (created; resumed if it exists)")


def config_from_flags() -> OfflineConfig:
  cfg = config.from_flags(OfflineConfig, dataset=data_flags.DATASET.value,
                           data_dir=data_flags.DATA_DIR.value or "",
                           synthetic=data_flags.synthetic_config_from_flags(),
                           prep=data_flags.prep_config_from_flags())
  passed = config.set_on_command_line(OfflineConfig)
  check_applicable(cfg.agent, passed)
  if not cfg.augment:
    config.refuse([flag for path, flag in passed.items() if path in AUGMENT_FIELDS],
                  "without --augment")
  return cfg


def main(argv):
  cli.reject_extra_args(argv)
  if not WORKDIR.value:
    raise ConfigError("--workdir is required")
  train_and_evaluate(config_from_flags(), WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
