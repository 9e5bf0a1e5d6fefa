"""Agent names -> agents, from one hyperparameter config whose options are the flags."""

from __future__ import annotations

import dataclasses
import math

from jaxrec.agents.a2c import (ADVANTAGES, CRITIC_TARGETS, CRITICS, SCHEDULES, check_schedule,
                               default_unroll)
from jaxrec.config import nested, option, refuse
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import CASER_HEIGHTS, REWARD_HANDLES, TRACKERS, NetConfig
from jaxrec.oracle import OracleConfig

AGENTS = ("a2c", "dqn", "pg", "ialp", "ialp_ft", "ialp_ap", "llm_online")
# Agents whose params start from a pre-training run (TrainConfig.init_from).
PRETRAINED = ("ialp", "ialp_ft", "ialp_ap")

# The AgentConfig fields each agent reads (make_agent below); "oracle" is the nested config.
_NET = ("dim", "num_layers", "num_heads", "tracker", "window", "hidden_sizes", "learning_rate",
        "max_grad_norm", "gamma", "unroll_len")
_A2C = _NET + ("entropy_coef", "critic_target", "advantage", "critic", "gae_lambda",
               "value_coef", "normalize_advantages", "schedule", "num_minibatches",
               "update_epochs")
# A reward input only where no pre-training is involved: label shards hold no reward histories.
_REWARDS = ("reward_handle",)
FIELDS = {
    "a2c": _A2C + _REWARDS, "ialp": _A2C, "ialp_ft": _A2C,
    "ialp_ap": _A2C + ("alpha0", "alpha_delay", "alpha_steps", "alpha_shape", "beta_init"),
    "llm_online": _A2C + ("num_candidates", "oracle"),
    "dqn": _NET + ("buffer_size", "batch_size", "min_buffer", "target_period",
                   "updates_per_iteration", "huber_delta") + _REWARDS,
    "pg": _NET + ("entropy_coef", "normalize_returns") + _REWARDS,
}


def check_applicable(agent: str, passed: dict[str, str]) -> None:
  """passed: {AgentConfig field path: flag name} set on the command line (config.
  set_on_command_line); a flag the agent does not read is a one-line ConfigError."""
  if agent in FIELDS:
    refuse([flag for path, flag in passed.items() if path.split(".")[0] not in FIELDS[agent]],
           f"to --agent={agent}")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """Every agent's hyperparameters, one option (flag) each; `FIELDS` says which an agent
  reads, and `check_applicable` refuses the others when they are passed on the command line."""
  dim: int = option(64, "SASRec encoder width")
  num_layers: int = option(2, "SASRec blocks (0: the state is the last item's embedding)")
  num_heads: int = option(2, "attention heads")
  tracker: str = option("sasrec", "state tracker: SASRec (the paper's), the mean of the last "
                        "--window item embeddings (EasyRL4Rec's avg), a GRU, Caser or NextItNet "
                        "over them (the peer's trackers)", choices=TRACKERS)
  window: int | None = option(None, "newest history items the tracker reads (default: the "
                              "whole history)")
  hidden_sizes: tuple[int, ...] = option((), "MLP widths between the tracker and the heads "
                                         "(tianshou's Net; EasyRL4Rec: 64,64)")
  reward_handle: str = option("none", "a2c, dqn, pg: the rewards of the history's items as a "
                              "network input too (cat: EasyRL4Rec's --reward_handle cat, "
                              "normalised by the env's reward bounds)", choices=REWARD_HANDLES)
  learning_rate: float = option(1e-3, "Adam learning rate")
  max_grad_norm: float = option(10.0, "clip gradients to this global norm (0 = no clipping)")
  gamma: float = option(0.9, "discount")
  unroll_len: int = option(0, "env steps per update; 0 = the agent's default (a2c family 10, "
                           "--critic=q 1, dqn 1, pg 32)")
  entropy_coef: float = option(0.01, "entropy bonus (a2c family, pg); 0.01 is EasyRL4Rec's "
                               "Coat A2C (--ent-coef 0.01)")
  critic_target: str = option("max", "a2c family, --critic=q: the bootstrap, max_a' Q(s', a') "
                              "(paper Eq. 8) or its expectation under the policy",
                              choices=CRITIC_TARGETS)
  advantage: str = option("td", "a2c family, --critic=q: the actor's weight, the TD error "
                          "(paper Eq. 9) or Q(s, a) minus its mean under the policy (baseline: "
                          "not the paper's; learns from a fixed buffer, where Eq. 9's vanishes)",
                          choices=ADVANTAGES)
  critic: str = option("v", "a2c family: a state value with lambda-returns over the unroll "
                       "(tianshou's A2C, the peer's; iALP's Q head is replaced by a fresh value "
                       "head) or Q(s, .) over all items with a one-step target (paper Eq. 7-9)",
                       choices=CRITICS)
  gae_lambda: float = option(1.0, "--critic=v: lambda of the advantages (1 = Monte-Carlo)")
  value_coef: float = option(0.5, "--critic=v: weight of the value loss")
  normalize_advantages: bool = option(False, "--critic=v: standardise advantages over each "
                                      "unroll")
  schedule: str = option("step", "a2c family: one gradient step per rollout (step), or "
                         "minibatch epochs over it (collect: tianshou's, PureJaxRL's; "
                         "--critic=v)", choices=SCHEDULES)
  num_minibatches: int = option(1, "--schedule=collect: minibatches per pass over the "
                                "rollout (must divide --num_sessions x unroll)")
  update_epochs: int = option(1, "--schedule=collect: passes over each rollout")
  buffer_size: int = option(100_000, "dqn replay capacity")
  batch_size: int = option(256, "dqn minibatch")
  min_buffer: int = option(1_000, "dqn: items before updates")
  target_period: int = option(100, "dqn: updates between target-network copies")
  updates_per_iteration: int = option(1, "dqn: gradient steps per iteration")
  huber_delta: float = option(1.0, "dqn: Huber threshold of the TD loss (0 = squared loss)")
  normalize_returns: bool = option(True, "pg: standardise reward-to-go over each unroll")
  alpha0: float = option(0.1, "ialp_ap: initial weight of pi_beta")
  alpha_delay: int = option(0, "ialp_ap: env steps before alpha starts to rise")
  alpha_steps: int = option(0, "ialp_ap: env steps from alpha0 to 1 (0 = half of "
                            "--total_steps)")
  alpha_shape: str = option("linear", "ialp_ap: linear | cosine | step")
  beta_init: str = option("random", "ialp_ap: pi_beta starts random (paper Sec. 5.4) or as a "
                          "copy of iALP (theta, Alg. 2 line 3)")
  num_candidates: int = option(10, "k: items the actor proposes to the labeler")
  # llm_online's in-process labeler: the simulated oracle (jaxrec.oracle), not an LLM.
  oracle: OracleConfig = nested(OracleConfig(), "oracle_")

  def validate(self) -> None:
    for f in ("dim", "num_heads", "buffer_size", "batch_size", "target_period",
              "updates_per_iteration", "num_candidates"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    for f in ("num_layers", "unroll_len", "min_buffer", "max_grad_norm"):
      if getattr(self, f) < 0:
        raise ConfigError(f"--{f} must be >= 0, got {getattr(self, f)}")
    if self.huber_delta < 0:
      raise ConfigError(f"--huber_delta must be >= 0 (0 = squared loss), got {self.huber_delta}")
    if self.critic_target not in CRITIC_TARGETS:
      raise ConfigError(f"--critic_target must be {' or '.join(CRITIC_TARGETS)}; got "
                        f"{self.critic_target!r}")
    if self.advantage not in ADVANTAGES:
      raise ConfigError(f"--advantage must be {' or '.join(ADVANTAGES)}; got {self.advantage!r}")
    if self.critic not in CRITICS:
      raise ConfigError(f"--critic must be {' or '.join(CRITICS)}; got {self.critic!r}")
    if not 0.0 <= self.gae_lambda <= 1.0 or self.value_coef < 0:
      raise ConfigError("need 0 <= --gae_lambda <= 1 and --value_coef >= 0")
    if self.tracker not in TRACKERS:
      raise ConfigError(f"--tracker must be one of {', '.join(TRACKERS)}; got {self.tracker!r}")
    if self.reward_handle not in REWARD_HANDLES:
      raise ConfigError(f"--reward_handle must be one of {', '.join(REWARD_HANDLES)}; got "
                        f"{self.reward_handle!r}")
    if self.window is not None and self.window <= 0:
      raise ConfigError(f"--window must be positive, got {self.window}")
    if self.tracker == "caser" and self.window is not None and self.window < max(CASER_HEIGHTS):
      raise ConfigError(f"--tracker=caser needs --window >= {max(CASER_HEIGHTS)} (its tallest "
                        f"filter), got {self.window}")
    if any(h <= 0 for h in self.hidden_sizes):
      raise ConfigError(f"--hidden_sizes must be positive widths, got {self.hidden_sizes}")
    check_schedule(self.schedule, self.critic, self.num_minibatches, self.update_epochs)
    if self.dim % self.num_heads:
      raise ConfigError(f"--dim ({self.dim}) must be a multiple of --num_heads ({self.num_heads})")
    if not 0.0 <= self.gamma <= 1.0 or self.learning_rate <= 0:
      raise ConfigError("need 0 <= --gamma <= 1 and --learning_rate > 0")
    self.oracle.validate()

  def net(self, num_items: int, history_len: int, num_tokens: int = 0) -> NetConfig:
    """num_tokens: the env's (RecEnv.num_tokens) where it exceeds num_items, else 0."""
    return NetConfig(num_items=num_items, history_len=history_len, dim=self.dim,
                     num_layers=self.num_layers, num_heads=self.num_heads,
                     num_tokens=num_tokens if num_tokens > num_items else 0,
                     tracker=self.tracker, window=self.window or 0, hidden=self.hidden_sizes,
                     reward_handle=self.reward_handle)


def make_agent(name: str, cfg: AgentConfig, num_items: int, history_len: int, *,
               num_sessions: int = 1, env=None, env_params=None, pretrained=None,
               num_tokens: int = 0):
  """Builds an agent.

  Args:
    name: one of AGENTS.
    cfg: the flat hyperparameters.
    num_items, history_len: the env's action space and observation length.
    num_sessions: sessions per update (converts ialp_ap's alpha schedule from env steps to
      updates; `alpha_steps` 0 must be resolved by the caller, see jaxrec.train.run).
    env, env_params: the train env, for llm_online's oracle.
    num_tokens: the env's observation ids (RecEnv.num_tokens; user tokens), 0 = num_items.
    pretrained: ActorCritic params of an iALP run for ialp / ialp_ft / ialp_ap. None gives a
      random init of the same shapes (for restoring checkpoints: `jax.eval_shape` needs only
      shapes); `jaxrec.train.run` refuses to train these agents without --init_from.
  """
  common = {"net": cfg.net(num_items, history_len, num_tokens), "learning_rate": cfg.learning_rate,
            "gamma": cfg.gamma, "max_grad_norm": cfg.max_grad_norm}
  if cfg.unroll_len:
    common["unroll_len"] = cfg.unroll_len
  if name in FIELDS and "advantage" in FIELDS[name] and cfg.advantage != "td" and (
      cfg.critic != "q"):
    raise ConfigError(f"--advantage={cfg.advantage} applies to --critic=q (the value critic's "
                      "advantages are its lambda-returns)")
  a2c_kw = {"entropy_coef": cfg.entropy_coef, "critic_target": cfg.critic_target,
            "advantage": cfg.advantage,
            "critic": cfg.critic, "gae_lambda": cfg.gae_lambda, "value_coef": cfg.value_coef,
            "normalize_advantages": cfg.normalize_advantages, "schedule": cfg.schedule,
            "num_minibatches": cfg.num_minibatches, "update_epochs": cfg.update_epochs}
  if name in ("a2c", "ialp", "ialp_ft"):
    from jaxrec.agents import adaptive
    from jaxrec.agents.a2c import A2C, A2CConfig
    a2c_cfg = A2CConfig(**a2c_kw, **common)
    if name == "a2c":
      return A2C(a2c_cfg)
    return (adaptive.Frozen if name == "ialp" else adaptive.FineTune)(a2c_cfg, pretrained)
  if name == "ialp_ap":
    from jaxrec.agents import adaptive
    steps_per_update = num_sessions * common.get("unroll_len", default_unroll(cfg.critic))
    to_updates = lambda steps: math.ceil(steps / steps_per_update)
    schedule = adaptive.AlphaSchedule(alpha0=cfg.alpha0, delay=to_updates(cfg.alpha_delay),
                                      length=to_updates(cfg.alpha_steps),
                                      shape=cfg.alpha_shape)
    return adaptive.AdaptivePolicy(adaptive.AdaptiveConfig(
        alpha=schedule, beta_init=cfg.beta_init, **a2c_kw, **common), pretrained)
  if name == "llm_online":
    from jaxrec.agents.llm_online import LLMOnline, LLMOnlineConfig
    if env is None or env_params is None:
      raise ValueError("llm_online needs the train env: make_agent(..., env=, env_params=)")
    return LLMOnline(LLMOnlineConfig(num_candidates=cfg.num_candidates, oracle=cfg.oracle,
                                     **a2c_kw, **common), env, env_params)
  if name == "dqn":
    from jaxrec.agents import dqn
    return dqn.DQN(dqn.DQNConfig(buffer_size=cfg.buffer_size, batch_size=cfg.batch_size,
                                 min_buffer=cfg.min_buffer, target_period=cfg.target_period,
                                 updates_per_iteration=cfg.updates_per_iteration,
                                 huber_delta=cfg.huber_delta or None, **common))
  if name == "pg":
    from jaxrec.agents import pg
    return pg.PG(pg.PGConfig(entropy_coef=cfg.entropy_coef,
                             normalize_returns=cfg.normalize_returns, **common))
  raise ConfigError(f"--agent must be one of {', '.join(AGENTS)}; got {name!r}")
