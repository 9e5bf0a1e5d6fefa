"""python -m jaxrec.train --agent=NAME --env=DIR --workdir=DIR [--init_from=PRETRAIN_RUN] ...

Online training in the train env of DIR, evaluated in its test env every epoch (paper
Sec. 5.3; epoch 0 = before any update = R@0). Agents: a2c, dqn, pg (from scratch); llm_online
(the actor proposes --num_candidates items, the simulated oracle labeler picks); ialp,
ialp_ft, ialp_ap (need --init_from, a `python -m jaxrec.pretrain` run directory).
Rerunning the same command resumes from the latest checkpoint. `--config=easyrl4rec` runs
EasyRL4Rec's Coat A2C setup, `--config=dorl` its DORL, `--config=easyrl4rec_pg` and
`easyrl4rec_dqn` its PG and DQN (jaxrec.train.presets). The flags are
TrainConfig's options (jaxrec.config); a hyperparameter the chosen agent does not read is
refused.
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli, config
from jaxrec.agents.registry import AgentConfig, check_applicable
from jaxrec.errors import ConfigError
from jaxrec.train import dist_flags, presets
from jaxrec.train.run import TrainConfig, train_and_evaluate

config.define_flags(TrainConfig)
WORKDIR = flags.DEFINE_string("workdir", None, "run directory (created; resumed if it exists)")
CONFIG = flags.DEFINE_enum("config", None, sorted(presets.PRESETS),
                           "a preset (jaxrec.train.presets): easyrl4rec = EasyRL4Rec's Coat A2C "
                           "for equal-work comparisons, dorl = its DORL (A2C in the shaped "
                           "train env), easyrl4rec_pg / easyrl4rec_dqn = its PG / DQN; it "
                           "fixes its flags, other flags apply")


def config_from_flags() -> TrainConfig:
  if CONFIG.value:
    presets.apply(CONFIG.value)
  cfg = config.from_flags(TrainConfig)
  check_applicable(cfg.agent, config.set_on_command_line(AgentConfig))
  return cfg


def main(argv):
  cli.reject_extra_args(argv)
  if not WORKDIR.value:
    raise ConfigError("--workdir is required")
  mesh = dist_flags.mesh_from_flags()
  train_and_evaluate(config_from_flags(), WORKDIR.value, mesh=mesh)


if __name__ == "__main__":
  cli.run(main)
