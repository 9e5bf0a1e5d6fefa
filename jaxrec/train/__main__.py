"""python -m jaxrec.train --agent=a2c|dqn|pg --env=DIR --num_sessions=N --total_steps=S
    --explore=greedy|epsilon|categorical --seed=K --workdir=DIR

Online training of a baseline agent in the train env of DIR, evaluated in its test env every
epoch (paper Sec. 5.3). Rerunning the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli
from jaxrec.agents.registry import AGENTS, AgentConfig
from jaxrec.agents.types import STRATEGIES
from jaxrec.errors import ConfigError
from jaxrec.train.run import TrainConfig, train_and_evaluate

_T, _A = TrainConfig, AgentConfig
AGENT = flags.DEFINE_string("agent", _T.agent, f"one of {', '.join(AGENTS)}")
ENV = flags.DEFINE_string("env", None, "env directory from experiments.build_envs")
WORKDIR = flags.DEFINE_string("workdir", None, "run directory (created; resumed if it exists)")
NUM_SESSIONS = flags.DEFINE_integer("num_sessions", _T.num_sessions, "parallel sessions")
TOTAL_STEPS = flags.DEFINE_integer("total_steps", _T.total_steps, "env steps in all")
STEPS_PER_EPOCH = flags.DEFINE_integer("steps_per_epoch", _T.steps_per_epoch,
                                       "env steps between test-env evaluations")
EXPLORE = flags.DEFINE_string("explore", _T.explore, f"one of {', '.join(STRATEGIES)}")
EPSILON = flags.DEFINE_float("epsilon", _T.epsilon, "epsilon of --explore=epsilon")
EVAL_SESSIONS = flags.DEFINE_integer("eval_sessions", _T.eval_sessions, "test episodes")
EVAL_EXPLORE = flags.DEFINE_string("eval_explore", "", "test-time strategy (default --explore)")
SEED = flags.DEFINE_integer("seed", _T.seed, "seed of everything random in the run")
DIM = flags.DEFINE_integer("dim", _A.dim, "SASRec encoder width")
LAYERS = flags.DEFINE_integer("num_layers", _A.num_layers, "SASRec blocks")
HEADS = flags.DEFINE_integer("num_heads", _A.num_heads, "attention heads")
LR = flags.DEFINE_float("learning_rate", _A.learning_rate, "Adam learning rate")
GAMMA = flags.DEFINE_float("gamma", _A.gamma, "discount")
UNROLL = flags.DEFINE_integer("unroll_len", _A.unroll_len, "steps per update; 0 = agent default")
ENTROPY = flags.DEFINE_float("entropy_coef", _A.entropy_coef, "entropy bonus (a2c, pg)")
BUFFER = flags.DEFINE_integer("buffer_size", _A.buffer_size, "dqn replay capacity")
BATCH = flags.DEFINE_integer("batch_size", _A.batch_size, "dqn minibatch")
MIN_BUFFER = flags.DEFINE_integer("min_buffer", _A.min_buffer, "dqn: items before updates")
TARGET = flags.DEFINE_integer("target_period", _A.target_period, "dqn target copy period")


def config_from_flags() -> TrainConfig:
  return TrainConfig(
      agent=AGENT.value, env=ENV.value or "", num_sessions=NUM_SESSIONS.value,
      total_steps=TOTAL_STEPS.value, steps_per_epoch=STEPS_PER_EPOCH.value,
      explore=EXPLORE.value, epsilon=EPSILON.value, eval_sessions=EVAL_SESSIONS.value,
      eval_explore=EVAL_EXPLORE.value, seed=SEED.value,
      agent_cfg=AgentConfig(dim=DIM.value, num_layers=LAYERS.value, num_heads=HEADS.value,
                            learning_rate=LR.value, gamma=GAMMA.value, unroll_len=UNROLL.value,
                            entropy_coef=ENTROPY.value, buffer_size=BUFFER.value,
                            batch_size=BATCH.value, min_buffer=MIN_BUFFER.value,
                            target_period=TARGET.value))


def main(argv):
  cli.reject_extra_args(argv)
  if not WORKDIR.value:
    raise ConfigError("--workdir is required")
  train_and_evaluate(config_from_flags(), WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
