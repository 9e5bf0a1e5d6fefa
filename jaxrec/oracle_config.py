"""The simulated oracle labeler's settings (jaxrec.oracle): a light module, no JAX, so the
labeler side can read them from the command line without importing the judge."""

from __future__ import annotations

import dataclasses

from jaxrec.config import option
from jaxrec.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class OracleConfig:
  """The simulated judge's settings; CLIs nest it under the flag prefix "oracle_"."""
  temperature: float = option(0.5, "simulated oracle labeler: softmax temperature over "
                              "candidate rewards, in reward units (0 = always the best)")
  none_threshold: float | None = option(None, "simulated oracle labeler: answer None when "
                                        "every candidate's reward is under this (default: the "
                                        "env's quit min_reward)")
  flip_prob: float = option(0.0, "simulated oracle labeler: probability of a uniformly random "
                            "label of the k + 1 (noise)")
  quit_aware: bool = option(False, "simulated oracle labeler: never choose a candidate that "
                            "the env's similarity quit would end the session on")

  def validate(self) -> None:
    if self.temperature < 0:
      raise ConfigError(f"--oracle_temperature must be >= 0, got {self.temperature}")
    if not 0.0 <= self.flip_prob <= 1.0:
      raise ConfigError(f"--oracle_flip_prob must be in [0, 1], got {self.flip_prob}")
