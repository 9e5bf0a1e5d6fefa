"""Agent names -> agents, from one flat hyperparameter config (built from flags in one place)."""

from __future__ import annotations

import dataclasses

from jaxrec.errors import ConfigError
from jaxrec.nets.networks import NetConfig

AGENTS = ("a2c", "dqn", "pg")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  dim: int = 64
  num_layers: int = 2
  num_heads: int = 2
  learning_rate: float = 1e-3
  gamma: float = 0.9
  unroll_len: int = 0  # 0 = the agent's default (a2c 1, dqn 1, pg 32)
  entropy_coef: float = 0.0
  buffer_size: int = 100_000  # dqn
  batch_size: int = 256  # dqn
  min_buffer: int = 1_000  # dqn
  target_period: int = 100  # dqn: updates between target-network copies

  def validate(self) -> None:
    for f in ("dim", "num_layers", "num_heads", "buffer_size", "batch_size", "target_period"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    if self.unroll_len < 0 or self.min_buffer < 0:
      raise ConfigError("--unroll_len and --min_buffer must be >= 0")
    if self.dim % self.num_heads:
      raise ConfigError(f"--dim ({self.dim}) must be a multiple of --num_heads ({self.num_heads})")
    if not 0.0 <= self.gamma <= 1.0 or self.learning_rate <= 0:
      raise ConfigError("need 0 <= --gamma <= 1 and --learning_rate > 0")


def make_agent(name: str, cfg: AgentConfig, num_items: int, history_len: int):
  net = NetConfig(num_items=num_items, history_len=history_len, dim=cfg.dim,
                  num_layers=cfg.num_layers, num_heads=cfg.num_heads)
  common = {"net": net, "learning_rate": cfg.learning_rate, "gamma": cfg.gamma}
  if cfg.unroll_len:
    common["unroll_len"] = cfg.unroll_len
  if name == "a2c":
    from jaxrec.agents.a2c import A2C, A2CConfig
    return A2C(A2CConfig(entropy_coef=cfg.entropy_coef, **common))
  if name == "dqn":
    from jaxrec.agents import dqn
    return dqn.DQN(dqn.DQNConfig(buffer_size=cfg.buffer_size, batch_size=cfg.batch_size,
                                 min_buffer=cfg.min_buffer, target_period=cfg.target_period,
                                 **common))
  if name == "pg":
    from jaxrec.agents import pg
    return pg.PG(pg.PGConfig(entropy_coef=cfg.entropy_coef, **common))
  raise ConfigError(f"--agent must be one of {', '.join(AGENTS)}; got {name!r}")
