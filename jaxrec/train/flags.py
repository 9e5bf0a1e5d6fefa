"""absl flags shared by `python -m jaxrec.train` and `python -m jaxrec.pretrain`: the network,
the A2C optimiser, evaluation and the simulated oracle labeler. Importing this module defines
them, so only the CLI modules import it."""

from __future__ import annotations

from absl import flags

from jaxrec.agents.registry import AgentConfig
from jaxrec.oracle import OracleConfig

_A, _O = AgentConfig, OracleConfig
ENV = flags.DEFINE_string("env", None, "env directory from experiments.build_envs")
WORKDIR = flags.DEFINE_string("workdir", None, "run directory (created; resumed if it exists)")
SEED = flags.DEFINE_integer("seed", 0, "seed of everything random in the run")
DIM = flags.DEFINE_integer("dim", _A.dim, "SASRec encoder width")
LAYERS = flags.DEFINE_integer("num_layers", _A.num_layers,
                              "SASRec blocks (0: the state is the last item's embedding)")
HEADS = flags.DEFINE_integer("num_heads", _A.num_heads, "attention heads")
LR = flags.DEFINE_float("learning_rate", _A.learning_rate, "Adam learning rate")
GAMMA = flags.DEFINE_float("gamma", _A.gamma, "discount")
ENTROPY = flags.DEFINE_float("entropy_coef", _A.entropy_coef, "entropy bonus (a2c-family, pg)")
CRITIC_TARGET = flags.DEFINE_enum("critic_target", _A.critic_target, ["max", "expected"],
                                  "a2c family: the critic's bootstrap, max_a' Q(s', a') (paper "
                                  "Eq. 8) or its expectation under the policy")
CRITIC = flags.DEFINE_enum("critic", _A.critic, ["q", "v"],
                           "a2c family (a2c, ialp*): Q(s, .) over all items with a one-step "
                           "target (paper Eq. 7-9) or a state value with lambda-returns over "
                           "the unroll (tianshou's A2C, the peer's; --unroll_len defaults to "
                           "32; iALP's Q head is replaced by a fresh value head)")
GAE_LAMBDA = flags.DEFINE_float("gae_lambda", _A.gae_lambda,
                                "--critic=v: lambda of the advantages (1 = Monte-Carlo)")
VALUE_COEF = flags.DEFINE_float("value_coef", _A.value_coef,
                                "--critic=v: weight of the value loss")
NORM_ADV = flags.DEFINE_bool("normalize_advantages", _A.normalize_advantages,
                             "--critic=v: standardise advantages over each unroll")
EPSILON = flags.DEFINE_float("epsilon", 0.1, "epsilon of the epsilon strategy")
NUM_CANDIDATES = flags.DEFINE_integer("num_candidates", _A.num_candidates,
                                      "k: items the actor proposes to the labeler")
ORACLE_T = flags.DEFINE_float("oracle_temperature", _O.temperature,
                              "simulated oracle labeler: softmax temperature over candidate "
                              "rewards (0 = always the best)")
ORACLE_NONE = flags.DEFINE_float("oracle_none_threshold", None,
                                 "simulated oracle labeler: answer None when every candidate's "
                                 "reward is under this (default: the env's quit min_reward)")
ORACLE_FLIP = flags.DEFINE_float("oracle_flip_prob", _O.flip_prob,
                                 "simulated oracle labeler: probability of a uniformly random "
                                 "label (noise)")
ORACLE_QUIT = flags.DEFINE_bool("oracle_quit_aware", _O.quit_aware,
                                "simulated oracle labeler: never choose a candidate that the "
                                "env's similarity quit would end the session on")


def agent_config(**extra) -> AgentConfig:
  """The AgentConfig of the shared flags plus `extra` fields (the train CLI's own flags)."""
  return AgentConfig(dim=DIM.value, num_layers=LAYERS.value, num_heads=HEADS.value,
                     learning_rate=LR.value, gamma=GAMMA.value, entropy_coef=ENTROPY.value,
                     critic_target=CRITIC_TARGET.value, critic=CRITIC.value,
                     gae_lambda=GAE_LAMBDA.value, value_coef=VALUE_COEF.value,
                     normalize_advantages=NORM_ADV.value,
                     num_candidates=NUM_CANDIDATES.value, oracle_temperature=ORACLE_T.value,
                     oracle_none_threshold=ORACLE_NONE.value, oracle_flip_prob=ORACLE_FLIP.value,
                     oracle_quit_aware=ORACLE_QUIT.value,
                     **extra)
