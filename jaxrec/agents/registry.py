"""Agent names -> agents, from one flat hyperparameter config (built from flags in one place)."""

from __future__ import annotations

import dataclasses
import math

from jaxrec.agents.a2c import CRITIC_TARGETS, CRITICS, default_unroll
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import NetConfig
from jaxrec.oracle import OracleConfig

AGENTS = ("a2c", "dqn", "pg", "ialp", "ialp_ft", "ialp_ap", "llm_online")
# Agents whose params start from a pre-training run (TrainConfig.init_from).
PRETRAINED = ("ialp", "ialp_ft", "ialp_ap")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  dim: int = 64
  num_layers: int = 2  # SASRec blocks; 0 = none (the state is the last item's embedding)
  num_heads: int = 2
  learning_rate: float = 1e-3
  gamma: float = 0.9
  unroll_len: int = 0  # 0 = the agent's default (a2c family 10, --critic=q 1, dqn 1, pg 32)
  entropy_coef: float = 0.01  # a2c family, pg: EasyRL4Rec's Coat A2C (--ent-coef 0.01)
  critic_target: str = "max"  # a2c family: max (paper Eq. 8) | expected
  critic: str = "v"  # a2c family: v (state value + lambda-returns) | q (paper Eq. 7)
  gae_lambda: float = 1.0  # --critic=v
  value_coef: float = 0.5  # --critic=v
  normalize_advantages: bool = False  # --critic=v
  buffer_size: int = 100_000  # dqn
  batch_size: int = 256  # dqn
  min_buffer: int = 1_000  # dqn
  target_period: int = 100  # dqn: updates between target-network copies
  updates_per_iteration: int = 1  # dqn: gradient steps per iteration
  huber_delta: float = 1.0  # dqn: Huber threshold of the TD loss; 0 = squared loss
  normalize_returns: bool = True  # pg: standardise reward-to-go over each unroll
  alpha0: float = 0.1  # ialp_ap: mixture weight of pi_beta at the start
  alpha_delay: int = 0  # ialp_ap: env steps before alpha starts to rise
  alpha_steps: int = 0  # ialp_ap: env steps from alpha0 to 1 (0 = half of --total_steps)
  alpha_shape: str = "linear"  # ialp_ap: linear | cosine | step
  beta_init: str = "random"  # ialp_ap: random (paper Sec. 5.4) | theta (Alg. 2 line 3)
  num_candidates: int = 10  # llm_online: k items the actor proposes to the labeler
  # llm_online's in-process labeler: the simulated oracle (jaxrec.oracle), not an LLM.
  oracle_temperature: float = OracleConfig.temperature
  oracle_none_threshold: float | None = OracleConfig.none_threshold
  oracle_flip_prob: float = OracleConfig.flip_prob
  oracle_quit_aware: bool = OracleConfig.quit_aware

  def validate(self) -> None:
    for f in ("dim", "num_heads", "buffer_size", "batch_size", "target_period",
              "updates_per_iteration", "num_candidates"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    for f in ("num_layers", "unroll_len", "min_buffer"):
      if getattr(self, f) < 0:
        raise ConfigError(f"--{f} must be >= 0, got {getattr(self, f)}")
    if self.huber_delta < 0:
      raise ConfigError(f"--huber_delta must be >= 0 (0 = squared loss), got {self.huber_delta}")
    if self.critic_target not in CRITIC_TARGETS:
      raise ConfigError(f"--critic_target must be {' or '.join(CRITIC_TARGETS)}; got "
                        f"{self.critic_target!r}")
    if self.critic not in CRITICS:
      raise ConfigError(f"--critic must be {' or '.join(CRITICS)}; got {self.critic!r}")
    if not 0.0 <= self.gae_lambda <= 1.0 or self.value_coef < 0:
      raise ConfigError("need 0 <= --gae_lambda <= 1 and --value_coef >= 0")
    if self.dim % self.num_heads:
      raise ConfigError(f"--dim ({self.dim}) must be a multiple of --num_heads ({self.num_heads})")
    if not 0.0 <= self.gamma <= 1.0 or self.learning_rate <= 0:
      raise ConfigError("need 0 <= --gamma <= 1 and --learning_rate > 0")
    self.oracle().validate()

  def oracle(self) -> OracleConfig:
    return OracleConfig(temperature=self.oracle_temperature,
                        none_threshold=self.oracle_none_threshold,
                        flip_prob=self.oracle_flip_prob, quit_aware=self.oracle_quit_aware)

  def net(self, num_items: int, history_len: int, num_tokens: int = 0) -> NetConfig:
    """num_tokens: the env's (RecEnv.num_tokens) where it exceeds num_items, else 0."""
    return NetConfig(num_items=num_items, history_len=history_len, dim=self.dim,
                     num_layers=self.num_layers, num_heads=self.num_heads,
                     num_tokens=num_tokens if num_tokens > num_items else 0)


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
            "gamma": cfg.gamma}
  if cfg.unroll_len:
    common["unroll_len"] = cfg.unroll_len
  a2c_kw = {"entropy_coef": cfg.entropy_coef, "critic_target": cfg.critic_target,
            "critic": cfg.critic, "gae_lambda": cfg.gae_lambda, "value_coef": cfg.value_coef,
            "normalize_advantages": cfg.normalize_advantages}
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
    return LLMOnline(LLMOnlineConfig(num_candidates=cfg.num_candidates, oracle=cfg.oracle(),
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
