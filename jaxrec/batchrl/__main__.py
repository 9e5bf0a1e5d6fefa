"""python -m jaxrec.batchrl --agent=bcq|cql|crr|sqn --env=DIR --workdir=RUN [--epochs
--updates_per_epoch --batch_size --learning_rate --gamma --n_step --target_period
--unlikely_threshold --imitation_penalty --head_softmax --num_quantiles --min_q_weight --beta
--ratio_max --which_head --leave_split --eval_mode --eval_sessions --seed ...]

Batch RL from the logged data of a peer-protocol env directory, evaluated in its true env
every epoch (jaxrec/batchrl/run.py). Rerunning the same command resumes from the latest
checkpoint. The flags are BatchConfig's options (jaxrec.config); a learner-specific flag set
for a learner that does not read it (--num_quantiles for bcq, ...) is refused.
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli, config
from jaxrec.batchrl.learners import check_applicable
from jaxrec.batchrl.run import BatchConfig, train_and_evaluate
from jaxrec.errors import ConfigError

config.define_flags(BatchConfig)
WORKDIR = flags.DEFINE_string("workdir", None, "run directory (created; resumed if it exists)")


def config_from_flags() -> BatchConfig:
  cfg = config.from_flags(BatchConfig)
  check_applicable(cfg.agent, config.set_on_command_line(BatchConfig))
  return cfg


def main(argv):
  cli.reject_extra_args(argv)
  if not WORKDIR.value:
    raise ConfigError("--workdir is required")
  train_and_evaluate(config_from_flags(), WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
