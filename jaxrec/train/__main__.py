"""python -m jaxrec.train --agent=NAME --env=DIR --workdir=DIR [--init_from=PRETRAIN_RUN] ...

Online training in the train env of DIR, evaluated in its test env every epoch (paper
Sec. 5.3; epoch 0 = before any update = R@0). Agents: a2c, dqn, pg (from scratch); llm_online
(the actor proposes --num_candidates items, the simulated oracle labeler picks); ialp,
ialp_ft, ialp_ap (need --init_from, a `python -m jaxrec.pretrain` run directory).
Rerunning the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli
from jaxrec.agents.registry import AGENTS, AgentConfig
from jaxrec.agents.types import STRATEGIES
from jaxrec.errors import ConfigError
from jaxrec.train import dist_flags
from jaxrec.train import flags as common
from jaxrec.train.run import TrainConfig, train_and_evaluate

_T, _A = TrainConfig, AgentConfig
AGENT = flags.DEFINE_string("agent", _T.agent, f"one of {', '.join(AGENTS)}")
INIT_FROM = flags.DEFINE_string("init_from", "", "pre-training run directory "
                                "(python -m jaxrec.pretrain) for ialp, ialp_ft, ialp_ap")
NUM_SESSIONS = flags.DEFINE_integer("num_sessions", _T.num_sessions, "parallel sessions")
TOTAL_STEPS = flags.DEFINE_integer("total_steps", _T.total_steps, "env steps in all")
STEPS_PER_EPOCH = flags.DEFINE_integer("steps_per_epoch", _T.steps_per_epoch,
                                       "env steps between test-env evaluations")
EXPLORE = flags.DEFINE_string("explore", _T.explore, f"one of {', '.join(STRATEGIES)}")
EVAL_SESSIONS = flags.DEFINE_integer("eval_sessions", _T.eval_sessions,
                                     "test-env episodes per evaluation")
EVAL_EXPLORE = flags.DEFINE_string("eval_explore", "", "test-time strategy (default --explore)")
EVAL_MODE = flags.DEFINE_string("eval_mode", _T.eval_mode,
                                "evaluation modes, comma-separated: FB, NX_0, NX_<k> (the peer "
                                "protocol's; the first one's metrics are R, Len, ..., the "
                                "others' are prefixed, e.g. NX_0_R)")
UNROLL = flags.DEFINE_integer("unroll_len", _A.unroll_len, "steps per update; 0 = agent default")
BUFFER = flags.DEFINE_integer("buffer_size", _A.buffer_size, "dqn replay capacity")
BATCH = flags.DEFINE_integer("batch_size", _A.batch_size, "dqn minibatch")
MIN_BUFFER = flags.DEFINE_integer("min_buffer", _A.min_buffer, "dqn: items before updates")
TARGET = flags.DEFINE_integer("target_period", _A.target_period, "dqn target copy period")
UPDATES = flags.DEFINE_integer("updates_per_iteration", _A.updates_per_iteration,
                               "dqn: gradient steps per iteration")
HUBER = flags.DEFINE_float("huber_delta", _A.huber_delta,
                           "dqn: Huber threshold of the TD loss (0 = squared loss)")
NORMALIZE = flags.DEFINE_bool("normalize_returns", _A.normalize_returns,
                              "pg: standardise reward-to-go over each unroll")
ALPHA0 = flags.DEFINE_float("alpha0", _A.alpha0, "ialp_ap: initial weight of pi_beta")
ALPHA_DELAY = flags.DEFINE_integer("alpha_delay", _A.alpha_delay,
                                   "ialp_ap: env steps before alpha starts to rise")
ALPHA_STEPS = flags.DEFINE_integer("alpha_steps", _A.alpha_steps, "ialp_ap: env steps from "
                                   "alpha0 to 1 (0 = half of --total_steps)")
ALPHA_SHAPE = flags.DEFINE_string("alpha_shape", _A.alpha_shape,
                                  "ialp_ap: linear | cosine | step")
BETA_INIT = flags.DEFINE_string("beta_init", _A.beta_init, "ialp_ap: pi_beta starts random "
                                "(paper Sec. 5.4) or as a copy of iALP (theta, Alg. 2 line 3)")


def config_from_flags() -> TrainConfig:
  return TrainConfig(
      agent=AGENT.value, env=common.ENV.value or "", num_sessions=NUM_SESSIONS.value,
      total_steps=TOTAL_STEPS.value, steps_per_epoch=STEPS_PER_EPOCH.value,
      explore=EXPLORE.value, epsilon=common.EPSILON.value,
      eval_sessions=EVAL_SESSIONS.value, eval_explore=EVAL_EXPLORE.value,
      eval_mode=EVAL_MODE.value, seed=common.SEED.value, init_from=INIT_FROM.value,
      agent_cfg=common.agent_config(
          unroll_len=UNROLL.value, buffer_size=BUFFER.value, batch_size=BATCH.value,
          min_buffer=MIN_BUFFER.value, target_period=TARGET.value,
          updates_per_iteration=UPDATES.value, huber_delta=HUBER.value,
          normalize_returns=NORMALIZE.value, alpha0=ALPHA0.value, alpha_delay=ALPHA_DELAY.value,
          alpha_steps=ALPHA_STEPS.value, alpha_shape=ALPHA_SHAPE.value,
          beta_init=BETA_INIT.value))


def main(argv):
  cli.reject_extra_args(argv)
  if not common.WORKDIR.value:
    raise ConfigError("--workdir is required")
  mesh = dist_flags.mesh_from_flags()
  train_and_evaluate(config_from_flags(), common.WORKDIR.value, mesh=mesh)


if __name__ == "__main__":
  cli.run(main)
